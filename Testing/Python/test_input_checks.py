"""Every input is checked before use: one test per class of damage (issue 12, item 1).

Each damaged input must end the command with exit code 2, one line ``error: <input>: <problem>``
and nothing written — or, where the README documents it, an estimate whose report states what
was found."""
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from liverstiffness import input_checks
from liverstiffness.cli.main import main
from liverstiffness.errors import InputError
from liverstiffness.imageio import read_mask, read_volume
from liverstiffness.preprocess import read_exam


def _args(rec, model, **override):
    files = {"t1w": rec.t1w, "t2w": rec.t2w, "dwi": rec.dwi, "mask": rec.mask, "dwi-b": ",".join(f"{b:g}" for b in rec.dwi_b)}
    files.update(override)
    argv = ["predict", "--model", str(model), "--maps", "none", "--no-montage", "--quiet"]
    for k, v in files.items():
        argv += [f"--{k}", str(v)]
    return argv


def refused(argv, out, capsys, pattern):
    """The contract for bad input: exit 2, one line naming the input and the problem, no output."""
    capsys.readouterr()
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(pattern, err), err
    assert not out.exists()
    return err


def _write_like(src, arr, path):
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(src)
    sitk.WriteImage(img, str(path))
    return path


def test_t2w_with_a_nan_slice_is_refused_not_estimated(one_case, tiny_model, tmp_path, capsys):
    """The issue's case: one slice of NaN in the T2w (a broken conversion). ITK's NIfTI reader
    hands those voxels over as 0, so the file itself is scanned."""
    t2 = sitk.ReadImage(str(one_case.t2w))
    arr = sitk.GetArrayFromImage(t2)
    k = arr.shape[0] // 2
    arr[k] = np.nan
    bad = _write_like(t2, arr, tmp_path / "t2w_nan.nii.gz")
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(bad)))).all()   # what ITK alone would see
    refused(_args(one_case, tiny_model, t2w=bad), tmp_path / "out", capsys,
                  rf"t2w .*t2w_nan\.nii\.gz: has \d+ NaN/Inf voxel\(s\); slice\(s\) {k} of")


@pytest.mark.parametrize("ext, value", [(".nrrd", np.inf), (".nii", -np.inf), (".mha", np.nan)])
def test_non_finite_voxels_in_any_format_and_in_the_mask(one_case, tmp_path, ext, value):
    t1 = sitk.ReadImage(str(one_case.t1w))
    arr = sitk.GetArrayFromImage(t1)
    arr[3, 10, 10] = value
    with pytest.raises(InputError, match=r"t1w .*has 1 NaN/Inf voxel"):
        read_volume(_write_like(t1, arr, tmp_path / f"t1{ext}"), "t1w")
    mask = sitk.Cast(sitk.ReadImage(str(one_case.mask)), sitk.sitkFloat32)
    m = sitk.GetArrayFromImage(mask)
    m[m.shape[0] // 2, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"mask .*NaN/Inf"):
        read_mask(_write_like(mask, m, tmp_path / f"mask{ext}"))


@pytest.mark.parametrize("fill", [0.0, 7.5])
def test_constant_image_is_refused(one_case, tiny_model, tmp_path, capsys, fill):
    t1 = sitk.ReadImage(str(one_case.t1w))
    flat = _write_like(t1, np.full(sitk.GetArrayViewFromImage(t1).shape, fill, np.float32), tmp_path / "flat.nii.gz")
    refused(_args(one_case, tiny_model, t1w=flat), tmp_path / "out", capsys,
            rf"t1w .*flat\.nii\.gz: is constant \(every voxel is {fill:g}\)")


def test_blank_slice_through_the_liver_is_refused(one_case, tmp_path):
    """A zero-filled slice (what a NaN slice becomes once converted to NIfTI and back)."""
    t2 = sitk.ReadImage(str(one_case.t2w))
    arr = sitk.GetArrayFromImage(t2)
    arr[arr.shape[0] // 2] = 0.0
    bad = _write_like(t2, arr, tmp_path / "t2w_blank.nrrd")
    with pytest.raises(InputError, match=rf"t2w .*t2w_blank\.nrrd: slice\(s\) {arr.shape[0] // 2} are blank \(every voxel 0\)"):
        read_exam(one_case.t1w, bad, one_case.dwi, one_case.mask, one_case.dwi_b)


def test_signal_void_in_the_liver_is_reported(one_case, tmp_path):
    """Exact zeros over part of the liver (a dropout, a zero-filled region) are not noise: the exam
    is still estimated, and its report says where the sequence has no signal; the undamaged exam's does not."""
    from liverstiffness import spatial

    assert not [n for n in read_exam(one_case.t1w, one_case.t2w, one_case.dwi, one_case.mask, one_case.dwi_b).notes
                if "exactly zero" in n]
    t2 = sitk.ReadImage(str(one_case.t2w))
    arr = sitk.GetArrayFromImage(t2)
    liver = sitk.GetArrayFromImage(spatial.resample_like(sitk.ReadImage(str(one_case.mask)), t2, interpolation="nearest",
                                                         pixel=sitk.sitkUInt8)) > 0
    middle = int(np.flatnonzero(liver.any(axis=(1, 2))).mean())
    void = np.zeros_like(liver)
    void[middle - 1:middle + 2] = liver[middle - 1:middle + 2]
    arr[void] = 0.0
    notes = read_exam(one_case.t1w, _write_like(t2, arr, tmp_path / "t2w_void.nrrd"), one_case.dwi, one_case.mask,
                      one_case.dwi_b).notes
    share = void.sum() / liver.sum()
    assert any(re.match(rf"T2W is exactly zero in {share:.0%} of the liver mask", n) for n in notes), (notes, share)


@pytest.mark.parametrize("geometry, pattern", [
    ({"spacing": (0.0015, 0.0015, 0.005)}, r"voxel spacing of 0\.0015×0\.0015×0\.005 mm, outside"),   # metres
    ({"spacing": (4.4, 4.4, 80.0)}, r"voxel spacing of .*80 mm, outside"),
    ({"direction": (1, 0.5, 0, 0, 1, 0, 0, 0, 1)}, r"direction cosines that are not orthonormal"),
    ({"spacing": (25.0, 25.0, 8.0)}, r"voxel spacing .* outside"),
    ({"origin": (float("nan"), 0.0, 0.0)}, r"non-finite origin"),
])
def test_absurd_geometry_is_refused(one_case, tmp_path, geometry, pattern):
    img = sitk.ReadImage(str(one_case.t2w))
    for key, value in geometry.items():
        getattr(img, "Set" + key.capitalize())(value)
    if "origin" in geometry:   # readers parse a NaN origin as 0; images made in memory (Slicer) can carry one
        with pytest.raises(InputError, match=pattern):
            input_checks.check_geometry(img, "t2w")
        return
    path = tmp_path / "t2w.mha"                # MetaImage keeps whatever the header says
    sitk.WriteImage(img, str(path))
    with pytest.raises(InputError, match=pattern):
        read_volume(path, "t2w")


def test_implausible_extent_for_an_abdomen(one_case, tmp_path):
    img = sitk.ReadImage(str(one_case.t1w))[:, :, :2]              # two 8 mm slices: 16 mm
    sitk.WriteImage(img, str(tmp_path / "thin.nii.gz"))
    with pytest.raises(InputError, match=r"covers only .*×16 mm \(LPS\): too small"):
        read_volume(tmp_path / "thin.nii.gz", "t1w")
    big = sitk.ReadImage(str(one_case.t1w))
    big.SetSpacing((15.0, 15.0, 8.0))                                # 86 × 15 mm = 1.3 m wide
    sitk.WriteImage(big, str(tmp_path / "wide.nii.gz"))
    with pytest.raises(InputError, match=r"larger than a body"):
        read_volume(tmp_path / "wide.nii.gz", "t1w")


def test_mask_labels_must_be_what_was_asked(one_case, tmp_path, tiny_model, capsys):
    m = sitk.GetArrayFromImage(sitk.ReadImage(str(one_case.mask))).astype(np.uint8)
    ref = sitk.ReadImage(str(one_case.mask))
    two = m.copy()
    two[(m > 0) & (np.arange(m.shape[2])[None, None, :] > m.shape[2] // 2)] = 2   # liver split into labels 1 and 2
    multi = _write_like(ref, two, tmp_path / "multi.nrrd")
    refused(_args(one_case, tiny_model, mask=multi), tmp_path / "o1", capsys, r"mask .*multi\.nrrd: has several labels \(1, 2\)")
    refused(_args(one_case, tiny_model, mask=multi) + ["--mask-label", "3"], tmp_path / "o2", capsys,
            r"has no voxel with label 3 \(its labels: 1, 2\)")
    prob = _write_like(ref, (m * 0.8).astype(np.float32), tmp_path / "prob.nrrd")
    refused(_args(one_case, tiny_model, mask=prob), tmp_path / "o3", capsys, r"non-integer values: .*not a label map")
    assert sitk.GetArrayFromImage(read_mask(multi, label=2)).sum() == (two == 2).sum()


def test_sequence_that_misses_the_liver_is_refused_and_a_partial_one_is_reported(one_case, tmp_path, tiny_model, capsys):
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(one_case.mask))) > 0
    z = np.flatnonzero(mask.any(axis=(1, 2)))
    t2 = sitk.ReadImage(str(one_case.t2w))
    t1 = sitk.ReadImage(str(one_case.t1w))

    def t2_cut_at(k_t1: int, name: str):
        """T2w keeping only the slices below T1w slice k_t1 (physically)."""
        cut_z = t1.TransformIndexToPhysicalPoint((0, 0, int(k_t1)))[2]
        ks = [k for k in range(t2.GetSize()[2]) if t2.TransformIndexToPhysicalPoint((0, 0, k))[2] < cut_z]
        sitk.WriteImage(t2[:, :, ks[0]:ks[-1] + 1], str(tmp_path / name))
        return tmp_path / name

    half = t2_cut_at(z[len(z) // 2], "t2w_half.nii.gz")
    refused(_args(one_case, tiny_model, t2w=half), tmp_path / "o1", capsys, r"t2w .*covers only \d+% of the liver mask")
    share = np.cumsum(mask.sum(axis=(1, 2))) / mask.sum()      # liver below each T1w slice
    most = t2_cut_at(int(np.searchsorted(share, 0.9)) + 1, "t2w_most.nii.gz")
    capsys.readouterr()
    assert main(_args(one_case, tiny_model, t2w=most) + ["--out", str(tmp_path / "o2")]) == 0
    rep = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert any(re.match(r"T2W covers \d+% of the liver mask", w) for w in rep["warnings"]), rep["warnings"]
    assert "warning(s)" in capsys.readouterr().out


def test_dwi_b_values_in_the_wrong_order_or_unit_are_refused(one_case, tiny_model, tmp_path, capsys):
    b = one_case.dwi_b                                            # (0, 500) for site A
    refused(_args(one_case, tiny_model, **{"dwi-b": f"{b[1]:g},{b[0]:g}"}), tmp_path / "o1", capsys,
            r"dwi .*liver signal does not fall with b")
    refused(_args(one_case, tiny_model, **{"dwi-b": f"{b[0]:g},{b[1] * 1e-3:g}"}), tmp_path / "o2", capsys,
            r"dwi .*liver ADC of .* outside the 0\.2–4 of any tissue")


def test_image_too_large_for_memory_is_refused_before_reading(one_case, tmp_path, tiny_model, capsys, monkeypatch):
    """A header that promises far more voxels than exist or fit: refused with the size needed,
    before a byte of voxel data is read (the data file holds none)."""
    (tmp_path / "huge.nhdr").write_text("NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\n"
                                        "sizes: 4096 4096 2048\nspace directions: (0.1,0,0) (0,0.1,0) (0,0,0.1)\n"
                                        "endian: little\nencoding: raw\ndata file: huge.raw\n\n")
    (tmp_path / "huge.raw").write_bytes(b"")
    refused(_args(one_case, tiny_model, t1w=tmp_path / "huge.nhdr"), tmp_path / "o1", capsys,
            r"t1w .*huge\.nhdr: has 4096×4096×2048 voxels \(34360 M\): more than the 268 M one image may have")
    monkeypatch.setenv(input_checks.MEMORY_ENV, "0.5")
    err = refused(_args(one_case, tiny_model), tmp_path / "o2", capsys, r"exam: needs about \d+\.\d GB of memory")
    assert "0.5 GB are available" in err


def test_slicer_nodes_get_the_same_checks(one_case):
    """The panel converts nodes into the same ExamImages: the same damage gives the same error."""
    import sys
    from pathlib import Path

    import slicer
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
    from test_slicer_logic import exam_nodes

    from LiverStiffnessLib.logic import LiverStiffnessLogic

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    try:
        nodes = exam_nodes(scene, one_case)
        logic = LiverStiffnessLogic(scene)
        arr = slicer.util.arrayFromVolume(nodes.t2w)
        keep = arr.copy()
        arr[arr.shape[0] // 2] = np.nan
        slicer.util.arrayFromVolumeModified(nodes.t2w)
        with pytest.raises(InputError, match=r"t2w T2w: has \d+ NaN/Inf"):
            logic.exam_images(nodes)
        arr[:] = 3.0
        slicer.util.arrayFromVolumeModified(nodes.t2w)
        with pytest.raises(InputError, match=r"t2w T2w: is constant"):
            logic.exam_images(nodes)
        arr[:] = keep
        slicer.util.arrayFromVolumeModified(nodes.t2w)
        lab = slicer.util.arrayFromVolume(nodes.mask_labelmap)
        lab[(lab > 0) & (np.arange(lab.shape[2])[None, None, :] > lab.shape[2] // 2)] = 2
        slicer.util.arrayFromVolumeModified(nodes.mask_labelmap)
        with pytest.raises(InputError, match=r"liver mask liver label: has several labels \(1, 2\)"):
            logic.exam_images(nodes)
        nodes.mask_label = 1
        assert logic.exam_images(nodes).notes == []
        nodes.t1w.SetSpacing(0.001, 0.001, 0.001)
        with pytest.raises(InputError, match=r"t1w T1w: has a voxel spacing of 0\.001"):
            logic.exam_images(nodes)
    finally:
        scene.Clear(1)
