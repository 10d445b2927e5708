"""Registration that cannot go absurd (issue 12, item 2), on the issue's kind of exam: a Siemens
3 T site with a strong bias field and a single b = 800 DWI, made with the project's phantom.

Before this work, on these six exams (true breath-hold shifts under 6 mm) the rigid T2w/DWI →
T1w registration claimed 74 mm for exam 1's DWI and 72 mm for exam 5's T2w, and 12–14 mm for the
DWIs of exams 2 and 3; mask QA raised MISREGISTERED on four of the six clean masks (exam 5's
against the T1w itself, "fits when moved by [-18.3, 1.3, -5.7] mm"), and the estimate went ahead
on the moved sequences."""
import csv
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from liverstiffness import registration
from liverstiffness.cli.main import main
from liverstiffness.manifest import read_manifest
from liverstiffness.phantom import generate_cohort
from liverstiffness.phantom.sites import SITES
from liverstiffness.predict import PredictOptions, predict_exam
from liverstiffness.preprocess import PreprocessOptions, read_exam, register_to_reference
from liverstiffness.qa import run_qa
from liverstiffness.stiffness.ensemble import Ensemble

SIEMENS_3T_STRONG_BIAS = replace(SITES["B"], name="S", b_values=(800.0,), bias_amplitude=0.6)


@pytest.fixture(scope="module")
def strong_bias_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("siemens3t")
    SITES["S"] = SIEMENS_3T_STRONG_BIAS
    try:
        manifest = generate_cohort(out, n=6, seed=3, sites=("S",), size="small", progress=False)
    finally:
        del SITES["S"]
    with open(out / "truth.csv") as fh:
        truth = {r["case_id"]: r for r in csv.DictReader(fh)}
    exams = [(rec, read_exam(rec.t1w, rec.t2w, rec.dwi, rec.mask, rec.dwi_b), truth[rec.case_id])
             for rec in read_manifest(manifest)]
    return exams


def test_registrations_stay_within_the_breath_hold_bound_and_near_the_truth(strong_bias_cohort):
    for rec, exam, truth in strong_bias_cohort:
        for name, reg in register_to_reference(exam).items():
            true = np.array([float(truth[f"shift_{name}_{a}_mm"]) for a in "xyz"])
            assert np.linalg.norm(reg.claimed_mm) <= registration.MAX_SHIFT_MM or reg.status == "scanner geometry"
            used = reg.translation_mm
            assert np.linalg.norm(used) <= registration.MAX_SHIFT_MM
            # the DWI's EPI distortion (up to 3 mm) is part of the "truth" error
            assert np.linalg.norm(used - true) < 6.0, (rec.case_id, name, used, true, reg.status)


@pytest.mark.slow
def test_clean_masks_at_3t_are_not_called_misregistered(strong_bias_cohort):
    for rec, exam, _ in strong_bias_cohort:
        res = run_qa(exam)
        assert "MISREGISTERED" not in [f.code for f in res.flags], (rec.case_id, [f.message for f in res.flags])
        # Annotator-drawn masks (phantom/annotator.py: tips left out, boundary outside the edge)
        # pull the mask fit a few mm on their own: up to 8.9 mm measured on this cohort; the flag
        # itself reads the edge alignment, which stays below its threshold (asserted above).
        assert np.linalg.norm(res.measurements["mask_fit_to_reference"]["offset_mm"]) < 10.0, rec.case_id


def test_a_claim_beyond_the_bound_falls_back_to_the_scanner_geometry_with_a_warning(
        strong_bias_cohort, tiny_model, monkeypatch, tmp_path):
    """The issue's failure forced: the registration 'finds' 61 mm. The report must say it was
    rejected, and the estimate must be the one made on the scanner geometry."""
    rec = strong_bias_cohort[1][0]
    ens = Ensemble.load(tiny_model, "cpu")
    ens.meta.preprocess = PreprocessOptions(register=True)       # the test model was trained without
    inp = rec
    opts = PredictOptions(gradient_maps=False, montage=False)
    monkeypatch.setattr(registration, "_translation", lambda fixed, mov, region: np.array([0.0, -35.0, 50.0]))
    rep = predict_exam(inp, ens, tmp_path / "claimed", opts)
    regs = rep.preprocessing["registration_to_reference"]
    for name in ("t2w", "dwi"):
        assert regs[name]["status"] == "scanner geometry" and regs[name]["translation_mm"] == [0.0, 0.0, 0.0]
        assert regs[name]["claimed_mm"] == [0.0, -35.0, 50.0]
    assert any("DWI → T1w registration rejected (it claimed 61 mm, beyond the 20 mm breath-hold bound)" in w
               for w in rep.warnings), rep.warnings
    monkeypatch.setattr(registration, "_translation", lambda fixed, mov, region: np.zeros(3))
    plain = predict_exam(inp, ens, tmp_path / "scanner", opts)
    assert plain.stiffness_kpa == rep.stiffness_kpa
    assert not any("registration rejected" in w for w in plain.warnings)


def test_a_sequence_displaced_beyond_the_bound_is_refused(strong_bias_cohort, tiny_model, tmp_path, capsys):
    rec = strong_bias_cohort[0][0]
    t2 = sitk.ReadImage(str(rec.t2w))
    t2.SetOrigin(np.add(t2.GetOrigin(), (0.0, 0.0, 40.0)).tolist())     # a wrong header: 4 cm up
    sitk.WriteImage(t2, str(tmp_path / "t2w_moved.nii.gz"))
    argv = ["predict", "--t1w", str(rec.t1w), "--t2w", str(tmp_path / "t2w_moved.nii.gz"), "--dwi", str(rec.dwi),
            "--dwi-b", "800", "--mask", str(rec.mask), "--model", str(tiny_model), "--maps", "none", "--no-montage",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "t2w_moved.nii.gz: shows the liver about 40 mm from where the T1w shows it (more than the 20 mm" in err
    assert not (tmp_path / "out").exists()


def test_mask_fit_claims_nothing_beyond_its_bound(strong_bias_cohort):
    _, exam, _ = strong_bias_cohort[2]
    moved = sitk.Resample(exam.mask, exam.mask, sitk.TranslationTransform(3, [0.0, 0.0, -40.0]), sitk.sitkNearestNeighbor, 0)
    exam_far = type(exam)(exam.t1w, exam.t2w, exam.dwi, moved, exam.paths)
    res = run_qa(exam_far)
    for f in res.flags:
        if f.code == "MISREGISTERED":
            claimed = res.measurements["edge_alignment"][f.sequence]["offset_mm"]
            assert claimed <= res.thresholds.shift_search_mm + 8.0
