
"""Out-of-range flagging (issue 12, item 3): training statistics in model.json, the check, and
what the report, the summary line, the batch CSV and the Slicer table say."""
import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from liverstiffness import ood
from liverstiffness.cli.main import main
from liverstiffness.manifest import PatientFacts
from liverstiffness.predict import PredictOptions, predict_exam
from liverstiffness.stiffness.ensemble import Ensemble


def test_summary_and_check_by_hand():
    """Two channels' worth of synthetic inputs: the ranges are numpy's percentiles, and a value
    just inside the widened range passes while one beyond it is flagged."""
    rng = np.random.default_rng(0)
    channels = ("t1w", "t2w", "dwi", "adc", "mask")
    images = rng.uniform(0.5, 1.5, (40, 5, 4, 6, 8)).astype(np.float32)
    images[:, 4] = 0.0
    images[:, 4, 1:3, 2:4, 2:6] = 1.0                                  # 16 liver voxels
    images[:, 3] = 1.2
    facts = [PatientFacts(age=30.0 + i, sex="F", bmi=25.0) for i in range(40)]
    stats = ood.summarise_cohort(images, channels, 0.288, facts)
    assert stats["n_exams"] == 40 and stats["sex_counts"] == {"F": 40, "M": 0} and stats["adc_missing_fraction"] == 0
    ages = np.arange(30.0, 70.0)
    assert stats["features"]["age"]["p1"] == pytest.approx(np.percentile(ages, 1))
    assert stats["features"]["liver_volume_ml"]["median"] == pytest.approx(16 * 0.288)
    assert "pdff" not in stats["features"]                              # never known: no range
    x = images[0].copy()
    inside = ood.check_exam(x, channels, 0.288, PatientFacts(age=50.0, sex="F"), stats)
    assert inside == {"checked": True, "in_range": True, "outside": [], "n_training_exams": 40}
    hi = stats["features"]["age"]["p99"] + 0.11 * (stats["features"]["age"]["p99"] - stats["features"]["age"]["p1"])
    out = ood.check_exam(x, channels, 0.288, PatientFacts(age=hi, sex="M"), stats)
    assert [o["feature"] for o in out["outside"]] == ["age", "sex"]
    x[3] = 0.0                                                          # no ADC, which every training exam had
    assert "adc_missing" in [o["feature"] for o in ood.check_exam(x, channels, 0.288, None, stats)["outside"]]
    assert ood.describe(out).startswith("outside the training range: age (years) ")


def test_training_writes_the_statistics_and_predict_reports_in_range(tiny_model, one_case, tmp_path):
    meta = json.loads((tiny_model / "model.json").read_text())
    stats = meta["input_statistics"]
    assert stats["version"] == ood.STATISTICS_VERSION and stats["n_exams"] == 8
    assert {"t2w_liver_p90", "adc_liver_median", "liver_volume_ml", "age"} <= set(stats["features"])
    ens = Ensemble.load(tiny_model, "cpu")
    inp = one_case
    rep = predict_exam(inp, ens, tmp_path / "in", PredictOptions(gradient_maps=False, montage=False))
    assert rep.input_range["checked"] and rep.input_range["in_range"]
    assert not any("training range" in w for w in rep.warnings)


@pytest.mark.slow
def test_an_exam_unlike_the_training_cohort_is_flagged_everywhere(tiny_model, small_cohort, tmp_path, capsys):
    """A T2w whose liver is five times brighter than any training exam's (contrast the model never
    saw: a wrongly chosen series) and a child's age: the report's input_range, a warning, the
    summary line and the batch CSV's input_range column all say so. (A T1w given as the T2w is not
    caught: with body-median normalisation its liver values lie inside the wide range the sites'
    different T2w parameters give.)"""
    manifest, records, _ = small_cohort
    rec = records[0]
    t2w = sitk.ReadImage(str(rec.t2w), sitk.sitkFloat32)
    liver = sitk.Cast(sitk.Resample(sitk.ReadImage(str(rec.mask)), t2w, sitk.Transform(), sitk.sitkNearestNeighbor, 0),
                      sitk.sitkFloat32)
    odd = tmp_path / "odd_t2w.nii.gz"
    sitk.WriteImage(t2w * (1 + 4 * liver), str(odd))
    argv = ["predict", "--t1w", str(rec.t1w), "--t2w", str(odd), "--dwi", str(rec.dwi), "--dwi-b",
            ",".join(f"{b:g}" for b in rec.dwi_b), "--mask", str(rec.mask), "--age", "9", "--sex", "F",
            "--model", str(tiny_model), "--maps", "none", "--no-montage", "--out", str(tmp_path / "one")]
    capsys.readouterr()
    assert main(argv) == 0
    assert "inputs outside the model's training range" in capsys.readouterr().out
    rep = json.loads((tmp_path / "one" / "report.json").read_text())
    flagged = {o["feature"] for o in rep["input_range"]["outside"]}
    assert (rep["input_range"]["in_range"] is False and "age" in flagged
            and flagged & {"t2w_liver_p90", "t2w_context_mean", "t2w_liver_p10"})
    assert any(w.startswith("inputs outside the training range: ") for w in rep["warnings"])
    lines = manifest.read_text().splitlines()
    cols = lines[0].split(",")
    row = dict(zip(cols, lines[1].split(",")))
    row.update(age="9", case_id="child")
    row = {k: (str((manifest.parent / v).resolve()) if k in ("t1w", "t2w", "dwi", "mask") else v) for k, v in row.items()}
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerow(row)
        w.writerow({**row, "case_id": "adult", "age": lines[1].split(",")[cols.index("age")]})
    assert main(["predict", "--manifest", str(tmp_path / "m.csv"), "--model", str(tiny_model), "--maps", "none",
                 "--no-montage", "--quiet", "--out", str(tmp_path / "batch")]) == 0
    assert "1 with inputs outside the training range" in capsys.readouterr().out
    with open(tmp_path / "batch" / "predictions.csv", newline="") as fh:
        table = {r["case_id"]: r for r in csv.DictReader(fh)}
    assert table["child"]["input_range"].startswith("outside the training range: age (years) 9")
    assert table["adult"]["input_range"] == "in range"


def test_a_model_without_statistics_still_works_and_says_the_check_was_not_made(one_case, tmp_path):
    """A model folder written before the statistics existed (the shipped model without them)."""
    from liverstiffness.stiffness.ensemble import DEMO_MODEL_DIR

    old = tmp_path / "old_model"
    shutil.copytree(DEMO_MODEL_DIR, old)
    meta = json.loads((old / "model.json").read_text())
    del meta["input_statistics"]
    (old / "model.json").write_text(json.dumps(meta))
    ens = Ensemble.load(old, "cpu")
    assert ens.meta.input_statistics is None
    inp = one_case
    rep = predict_exam(inp, ens, tmp_path / "demo", PredictOptions(gradient_maps=False, montage=False, qa=False))
    assert rep.input_range["checked"] is False and "could not be checked" in rep.input_range["note"]
    assert ood.describe(rep.input_range) == "not checked"
