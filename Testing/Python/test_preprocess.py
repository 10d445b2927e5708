"""Preprocessing in physical space: registration, alignment of the mask, and the way back."""
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_erosion

from liverstiffness import preprocess as P
from liverstiffness import spatial
from liverstiffness.errors import InputError
from liverstiffness.preprocess import InputSpec, PreprocessOptions, prepare, read_exam
from liverstiffness.registration import register_sequence


def _exam(rec):
    return read_exam(rec.t1w, rec.t2w, rec.dwi, rec.mask, rec.dwi_b)


def _shifted(img, shift_mm):
    """The same image with its content moved by +shift (mm), on the same grid."""
    return sitk.Resample(img, img, sitk.TranslationTransform(3, [-s for s in shift_mm]), sitk.sitkLinear, 0.0)


def _liver_like(prepared, channel, rim_only=False):
    """Share of mask voxels whose intensity is within ±20 % of the liver's median.

    ``rim_only`` looks at the outer layer of the mask, where a misalignment shows first.
    """
    k = prepared.spec.channels.index(channel)
    inside = prepared.tensor[-1] > 0.5
    if rim_only:
        inside &= ~binary_erosion(inside)
    v = prepared.tensor[k][inside]
    med = np.median(prepared.tensor[k][prepared.tensor[-1] > 0.5])
    return np.mean(np.abs(v / med - 1.0) < 0.2)


@pytest.mark.parametrize("shift", [(0.0, 0.0, 12.0), (8.0, -6.0, 0.0), (0.0, 5.0, -15.0)])
def test_registration_recovers_a_known_physical_shift(one_case, shift):
    exam = _exam(one_case)
    fixed, region = P._registration_target(exam)
    base = register_sequence(fixed, exam.t2w, region, "t2w")
    found = register_sequence(fixed, _shifted(exam.t2w, shift), region, "t2w")
    assert found.status == "registered"
    assert np.allclose(found.translation_mm - base.translation_mm, shift, atol=1.5)


def test_mask_stays_on_the_liver_after_registration_and_resampling(one_case):
    exam = _exam(one_case)
    spec = InputSpec()
    k = spec.channels.index("t2w")
    original = prepare(exam, spec, PreprocessOptions(register=True))
    exam.t2w = _shifted(exam.t2w, (8.0, 6.0, 9.0))            # a second breath-hold, 14 mm further (the phantom has its own)
    aligned = prepare(exam, spec, PreprocessOptions(register=True))
    misaligned = prepare(exam, spec, PreprocessOptions(register=False))
    near_liver = original.tensor[-1] > 0.05
    err = lambda p: np.abs(p.tensor[k] - original.tensor[k])[near_liver].mean()  # noqa: E731
    assert err(aligned) < 0.3 * err(misaligned)
    assert _liver_like(aligned, "t1w") > 0.85 and _liver_like(aligned, "t2w") > 0.8
    shift = np.subtract(aligned.registration["t2w"]["translation_mm"], original.registration["t2w"]["translation_mm"])
    assert shift == pytest.approx([8.0, 6.0, 9.0], abs=1.5)


def test_tensor_layout_normalisation_and_round_trip_to_t1w_grid(one_case):
    exam = _exam(one_case)
    spec = InputSpec()
    prep = prepare(exam, spec)
    assert prep.tensor.shape == (len(spec.channels),) + tuple(reversed(spec.size))
    assert prep.tensor.dtype == np.float32 and np.isfinite(prep.tensor).all()
    inside = prep.tensor[-1] > 0.5
    body = P.body_region(prep.tensor[spec.channels.index("t1w")], inside)
    assert 0.3 < body.mean() < 0.95                          # the body, not the air around it nor only the fat
    for ch in ("t1w", "t2w", "dwi"):
        x = prep.tensor[spec.channels.index(ch)]
        # One factor per sequence (the body's median): 1 over the body, and every contrast kept —
        # the liver is not forced to 1 as a liver-median normalisation would.
        assert np.median(x[body]) == pytest.approx(1.0, abs=0.02)
        assert np.median(x[inside]) == pytest.approx(prep.liver_medians[ch], abs=1e-3)
        assert prep.body_medians[ch] > 0
    raw = P.spatial.resample_like(exam.t1w, prep.crop)
    ratio = prep.tensor[0] * prep.body_medians["t1w"] / np.maximum(sitk.GetArrayFromImage(raw), 1e-6)
    unclipped = (prep.tensor[0] > 0.05) & (prep.tensor[0] < P.NORMALISED_CLIP[1])
    assert np.allclose(ratio[unclipped], 1.0, rtol=1e-4)
    adc = prep.tensor[spec.channels.index("adc")][inside]
    assert 0.8 < np.median(adc) < 1.8                        # physical units, 10⁻³ mm²/s
    back = prep.to_reference(prep.tensor[-1])
    assert back.GetSize() == exam.t1w.GetSize() and np.allclose(back.GetOrigin(), exam.t1w.GetOrigin())
    a = sitk.GetArrayFromImage(back) > 0.5
    b = sitk.GetArrayFromImage(prep.mask_ref) > 0
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice > 0.85


def test_oblique_t1w_grid_gives_the_same_liver_in_physical_space(one_case):
    exam = _exam(one_case)
    straight = prepare(exam, InputSpec(), PreprocessOptions(register=False))
    rot = sitk.Euler3DTransform(P.spatial.centroid_mm(exam.mask).tolist(), 0.0, 0.0, np.deg2rad(12))
    direction = np.array(rot.GetMatrix()).reshape(3, 3)
    oblique = sitk.Image(exam.t1w.GetSize(), sitk.sitkFloat32)
    oblique.SetSpacing(exam.t1w.GetSpacing())
    oblique.SetDirection(direction.ravel().tolist())
    centre_idx = np.array(exam.t1w.GetSize()) / 2.0
    centre = np.array(exam.t1w.TransformContinuousIndexToPhysicalPoint(centre_idx.tolist()))
    oblique.SetOrigin((centre - direction @ (centre_idx * np.array(exam.t1w.GetSpacing()))).tolist())
    exam.t1w = sitk.Resample(exam.t1w, oblique, sitk.Transform(), sitk.sitkLinear, 0.0)
    exam.mask = sitk.Resample(exam.mask, oblique, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    tilted = prepare(exam, InputSpec(), PreprocessOptions(register=False))
    a, b = straight.tensor[-1] > 0.5, tilted.tensor[-1] > 0.5
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9      # same liver on the model's grid


def test_n4_option_runs_and_keeps_geometry(one_case):
    exam = _exam(one_case)
    corrected = P.n4_correct(exam.t1w)
    assert corrected.GetSize() == exam.t1w.GetSize()
    prep = prepare(exam, InputSpec(), PreprocessOptions(register=False, n4=True))
    assert "n4" in prep.timings_s and np.isfinite(prep.tensor).all()


def test_images_that_do_not_overlap_are_refused(one_case, tmp_path):
    t2 = sitk.ReadImage(str(one_case.t2w))
    t2.SetOrigin([o + 1000.0 for o in t2.GetOrigin()])
    sitk.WriteImage(t2, str(tmp_path / "far.nii.gz"))
    with pytest.raises(InputError, match="t2w .*does not overlap the T1w image physically"):
        read_exam(one_case.t1w, tmp_path / "far.nii.gz", one_case.dwi, one_case.mask, one_case.dwi_b)


def test_mask_outside_the_body_is_refused(one_case, tmp_path):
    m = sitk.ReadImage(str(one_case.mask))
    arr = np.zeros(sitk.GetArrayFromImage(m).shape, np.uint8)
    arr[10:14, 0:4, 0:4] = 1                                  # a corner of the field of view: air
    air = sitk.GetImageFromArray(arr)
    air.CopyInformation(m)
    sitk.WriteImage(air, str(tmp_path / "air.nii.gz"))
    with pytest.raises(InputError, match="does not cover the liver"):
        read_exam(one_case.t1w, one_case.t2w, one_case.dwi, tmp_path / "air.nii.gz", one_case.dwi_b)
    far = sitk.ReadImage(str(one_case.mask))
    far.SetOrigin([o + 2000.0 for o in far.GetOrigin()])
    sitk.WriteImage(far, str(tmp_path / "far_mask.nii.gz"))
    with pytest.raises(InputError, match="mask .*does not overlap"):
        read_exam(one_case.t1w, one_case.t2w, one_case.dwi, tmp_path / "far_mask.nii.gz", one_case.dwi_b)


def test_real_t2_case_with_manual_liver_mask_keeps_its_geometry(real_data):
    img = real_data / "chaos_t2spir" / "image_1.nii.gz"
    lab = real_data / "chaos_t2spir" / "label_1.nii.gz"
    exam = read_exam(img, img, img, lab, 0.0, mask_label=1)     # T2-only case: the one image in every slot
    prep = prepare(exam, InputSpec(), PreprocessOptions(register=False))
    assert not prep.has_adc and np.all(prep.tensor[InputSpec().channels.index("adc")] == 0)
    assert _liver_like(prep, "t2w") > 0.6
    back = sitk.GetArrayFromImage(prep.to_reference(prep.tensor[-1])) > 0.5
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(lab))) == 1
    assert 2 * (back & truth).sum() / (back.sum() + truth.sum()) > 0.8


def test_crop_to_cover_keeps_what_resampling_onto_the_reference_sees():
    """Registration crops the moving image to the fixed grid first: on an oblique image the crop
    must stay in place physically and hold every voxel that resampling can reach."""
    rng = np.random.default_rng(0)
    img = sitk.GetImageFromArray(rng.random((30, 80, 90)).astype(np.float32))
    img.SetSpacing((1.5, 1.5, 5.0))
    img.SetOrigin((-60.0, -50.0, -70.0))
    rot = sitk.Euler3DTransform((0, 0, 0), 0.1, -0.05, 0.3)
    img.SetDirection(np.array(rot.GetMatrix()).tolist())
    ref = spatial.centred_grid((5.0, 10.0, 0.0), (4.0, 4.0, 4.0), (12, 10, 8))
    crop = spatial.crop_to_cover(img, ref, margin_mm=4.0)
    assert np.prod(crop.GetSize()) < 0.5 * np.prod(img.GetSize())
    full, cropped = (sitk.GetArrayFromImage(sitk.Resample(x, ref, sitk.Transform(), sitk.sitkLinear, -1.0)) for x in (img, crop))
    assert (full > -1).all() and np.array_equal(full, cropped)
    far = spatial.centred_grid((900.0, 0.0, 0.0), (4.0, 4.0, 4.0), (5, 5, 5))
    assert spatial.crop_to_cover(img, far) is img          # nothing in reach: left whole
