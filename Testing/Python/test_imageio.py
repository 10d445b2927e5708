"""Image input: every format, 3-D/4-D DWI, DICOM b-value splitting, ADC fit, and bad files."""
import numpy as np
import pytest
import SimpleITK as sitk

from liverstiffness.errors import InputError
from liverstiffness.imageio import read_dwi, read_mask, read_volume


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha", ".nii"])
def test_each_format_round_trips_with_geometry(one_case, tmp_path, ext):
    src = sitk.ReadImage(str(one_case.t2w))
    src.SetDirection((0.9950042, -0.0998334, 0, 0.0998334, 0.9950042, 0, 0, 0, 1))  # oblique axial
    path = tmp_path / f"t2w{ext}"
    sitk.WriteImage(src, str(path))
    img = read_volume(path, "t2w")
    assert img.GetSize() == src.GetSize()
    assert np.allclose(img.GetSpacing(), src.GetSpacing(), atol=1e-5)
    assert np.allclose(img.GetOrigin(), src.GetOrigin(), atol=1e-3)
    assert np.allclose(img.GetDirection(), src.GetDirection(), atol=1e-5)
    assert np.allclose(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(src), rtol=1e-5)


def test_dicom_series_folder_is_read_as_one_volume(real_data):
    img = read_volume(real_data / "prostatex_0000_dicom" / "4.000000-t2tsetra-00702", "t2w")
    assert img.GetSize() == (384, 384, 19)
    assert img.GetSpacing()[2] > 2.5


def test_4d_dwi_with_b_values_gives_adc_close_to_truth(tmp_path):
    ref = sitk.Image([20, 20, 6], sitk.sitkFloat32)
    ref.SetSpacing((2.0, 2.0, 5.0))
    adc_true = np.full((6, 20, 20), 1.4e-3)
    adc_true[:, :, 10:] = 0.9e-3
    s0 = 1000.0 + np.arange(20.0)[None, None, :]          # an image varies (a constant one is refused)
    vols = []
    for b in (0.0, 50.0, 800.0):
        v = sitk.GetImageFromArray((s0 * np.exp(-b * adc_true)).astype(np.float32))
        v.CopyInformation(ref)
        vols.append(v)
    path = tmp_path / "dwi.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([vols[2], vols[0], vols[1]]), str(path))  # stored out of order
    dwi = read_dwi(path, (800, 0, 50))
    assert dwi.b_values == (0.0, 50.0, 800.0)
    adc = sitk.GetArrayFromImage(dwi.adc)
    assert np.allclose(adc[:, :, :10], 1.4, atol=1e-3) and np.allclose(adc[:, :, 10:], 0.9, atol=1e-3)
    one = read_dwi(tmp_path / "dwi.nii.gz", (800, 0, 50), fit_adc=False)
    assert one.adc is None


def test_single_b_3d_dwi_has_no_adc(one_case, tmp_path):
    img = sitk.ReadImage(str(one_case.dwi))[:, :, :, 1]
    sitk.WriteImage(img, str(tmp_path / "b800.nrrd"))
    dwi = read_dwi(tmp_path / "b800.nrrd", 800)
    assert dwi.adc is None and dwi.b_values == (800.0,)


def test_real_siemens_dwi_dicom_is_split_by_b_value_and_adc_matches_scanner(real_data):
    folder = real_data / "prostatex_0000_dicom"
    dwi = read_dwi(folder / "6.000000-ep2ddifftraDYNDIST-69284")   # b-value only in (0019,100C)
    assert dwi.b_values == (50.0, 400.0, 800.0)
    assert all(im.GetSize() == (84, 128, 19) for im in dwi.images)
    scanner = read_volume(folder / "7.000000-ep2ddifftraDYNDISTADC-48780", "adc")  # 10⁻⁶ mm²/s
    ours = sitk.GetArrayFromImage(dwi.adc)
    theirs = sitk.GetArrayFromImage(scanner) / 1000.0
    tissue = (theirs > 0.6) & (theirs < 2.5) & (ours > 0)
    assert tissue.sum() > 5000
    assert abs(np.median(ours[tissue] / theirs[tissue]) - 1.0) < 0.06


def test_mask_label_selection(one_case, tmp_path):
    m = sitk.ReadImage(str(one_case.mask))
    lab = sitk.Cast(m, sitk.sitkUInt8) * 5
    sitk.WriteImage(lab, str(tmp_path / "lab.nrrd"))
    assert sitk.GetArrayFromImage(read_mask(tmp_path / "lab.nrrd")).max() == 1
    assert sitk.GetArrayFromImage(read_mask(tmp_path / "lab.nrrd", label=5)).sum() == sitk.GetArrayFromImage(m).sum()
    with pytest.raises(InputError, match="no voxel with label 3"):
        read_mask(tmp_path / "lab.nrrd", label=3)


def test_bad_files_name_the_file_and_problem(tmp_path, one_case):
    with pytest.raises(InputError, match=r"t1w .*missing\.nii\.gz: file not found"):
        read_volume(tmp_path / "missing.nii.gz", "t1w")
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot be read as an image"):
        read_volume(tmp_path / "junk.nii.gz", "t1w")
    with pytest.raises(InputError, match="is not 3-D"):
        read_volume(one_case.dwi, "t2w")
    img = sitk.ReadImage(str(one_case.t1w))
    arr = sitk.GetArrayFromImage(img)
    arr[3, 4, 5] = np.nan
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(img)
    sitk.WriteImage(bad, str(tmp_path / "nan.nrrd"))
    with pytest.raises(InputError, match="NaN/Inf"):
        read_volume(tmp_path / "nan.nrrd", "t1w")
    with pytest.raises(InputError, match="2 volume"):
        read_dwi(one_case.dwi, (0, 500, 1000))
    empty = sitk.Image(img.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(img)
    sitk.WriteImage(empty, str(tmp_path / "empty.nrrd"))
    with pytest.raises(InputError, match="empty"):
        read_mask(tmp_path / "empty.nrrd")


def test_nifti_read_once_gives_exactly_what_itk_reads(one_case, tmp_path):
    """Float NIfTI files are read once (to see NaN/Inf as stored) with ITK's header geometry: the
    image must be ITK's own, for every orientation, float64 and 4-D."""
    from liverstiffness.imageio import _read_float_nifti

    rng = np.random.default_rng(0)
    rot = tuple(sitk.Euler3DTransform((0, 0, 0), 0.2, -0.1, 0.3).GetMatrix())
    images = [sitk.ReadImage(str(p)) for p in (one_case.t1w, one_case.t2w, one_case.dwi)]
    for direction in [(1, 0, 0, 0, 1, 0, 0, 0, -1), (0, 1, 0, 1, 0, 0, 0, 0, -1), rot]:
        for dtype in (np.float32, np.float64):
            img = sitk.GetImageFromArray(rng.random((7, 9, 11)).astype(dtype))
            img.SetDirection(direction)
            img.SetSpacing((1.1, 2.2, 3.3))
            img.SetOrigin((5.0, -7.0, 9.0))
            images.append(img)
    for i, img in enumerate(images):
        for ext in (".nii", ".nii.gz"):
            path = tmp_path / f"x{i}{ext}"
            sitk.WriteImage(img, str(path))
            ours, itk = _read_float_nifti(path, "x"), sitk.ReadImage(str(path))
            assert ours is not None and ours.GetSize() == itk.GetSize(), (i, ext)
            assert np.allclose(ours.GetOrigin(), itk.GetOrigin()) and np.allclose(ours.GetSpacing(), itk.GetSpacing())
            assert np.allclose(ours.GetDirection(), itk.GetDirection())
            assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(itk).astype(np.float32))
    assert _read_float_nifti(one_case.mask, "mask") is None                  # integer labels: ITK reads them
