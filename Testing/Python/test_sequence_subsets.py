"""Exams with any non-empty subset of T1w, T2w and DWI: files, manifests, intervals, QA, and the
per-subset calibration of a model folder trained before it existed."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from liverstiffness.cli.main import main
from liverstiffness.errors import InputError
from liverstiffness.report import Report
from liverstiffness.stiffness.checkpoint import read_meta
from liverstiffness.stiffness.interval import FULL, Calibration, calibrate, subset_key

# The manifest's path columns (the small cohort's rows name each exam's elastogram too).
PATH_COLUMNS = ("t1w", "t2w", "dwi", "mask", "mre_map", "mre_confidence")


def _predict(tmp_path, name, model, *args) -> tuple[int, Report | None]:
    out = tmp_path / name
    code = main(["predict", *args, "--model", str(model), "--device", "cpu", "--no-montage", "--maps", "none",
                 "--out", str(out), "--quiet"])
    return code, (Report.read(out) if code == 0 else None)


def _interval_from_calibration(model, report: Report) -> list[float]:
    """The interval the model folder's calibration gives for the report's fold estimates and subset."""
    cal = read_meta(model).calibration
    logs = np.log(np.asarray(report.fold_predictions_kpa))[:, None]
    low, high = cal.interval(logs, report.interval_basis)
    return [float(low[0]), float(high[0])]


@pytest.fixture(scope="module")
def calibrated_model(tiny_model, tmp_path_factory):
    """The tiny model with a calibration of 39 exams (the tiny one's 8 give unbounded intervals):
    small full residuals, larger ones for T1w alone and larger still for T2w alone."""
    model = tmp_path_factory.mktemp("calibrated") / "model"
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns("cache"))
    meta = json.loads((model / "model.json").read_text())
    rng = np.random.default_rng(0)
    fold = [i % 2 for i in range(39)]
    cal = Calibration(0.9, tuple(rng.uniform(0, 0.1, 39)), tuple(fold),
                      subset_residuals={k: tuple(rng.uniform(0, scale, 39)) for k, scale in (
                          ("t1w+t2w", 0.15), ("t1w+dwi", 0.15), ("t2w+dwi", 0.15), ("t1w", 0.4), ("t2w", 0.8), ("dwi", 0.4))})
    meta["calibration"] = cal.to_dict()
    (model / "model.json").write_text(json.dumps(meta))
    return model


def test_subset_key_and_calibration_round_trip():
    assert subset_key(["dwi", "t2w"]) == "t2w+dwi" and subset_key(("t1w", "t2w", "dwi")) == FULL
    with pytest.raises(ValueError):
        subset_key([])
    y = np.exp(np.linspace(0.5, 2.0, 40))
    fold = np.arange(40) % 4
    full = y * np.exp(0.05 * np.sin(np.arange(40)))
    worse = y * np.exp(0.4 * np.cos(np.arange(40)))
    cal = calibrate(y, full, fold, 0.9, subsets={FULL: full, "t2w": worse})
    assert set(cal.subset_residuals) == {"t2w"}             # the full residuals are the main ones
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again.subset_residuals["t2w"] == pytest.approx(cal.subset_residuals["t2w"], abs=1e-5)
    logs = np.log(np.full((4, 1), 3.0))
    lo_full, hi_full = cal.interval(logs)
    lo_t2, hi_t2 = cal.interval(logs, "t2w")
    assert hi_t2[0] - lo_t2[0] > 2 * (hi_full[0] - lo_full[0])   # larger residuals: a wider interval
    # A subset the model has no residuals for: the full ones, and a warning that says so.
    assert cal.residuals_for("t1w")[1].startswith("this model has no interval calibration for T1w")
    assert cal.residuals_for("t2w")[1] is None and cal.residuals_for(None)[1] is None


def test_t2w_only_and_t1w_t2w_from_the_command_line(one_case, calibrated_model, tmp_path):
    e, tiny_model = one_case, calibrated_model
    code, full = _predict(tmp_path, "full", tiny_model, "--t1w", str(e.t1w), "--t2w", str(e.t2w), "--dwi", str(e.dwi),
                          "--dwi-b", ",".join(f"{b:g}" for b in e.dwi_b), "--mask", str(e.mask))
    assert code == 0 and full.sequences_used == ["t1w", "t2w", "dwi"] and full.sequences_missing == {}
    assert full.interval_basis == FULL and full.preprocessing["reference_sequence"] == "t1w"

    code, t2 = _predict(tmp_path, "t2", tiny_model, "--t2w", str(e.t2w), "--mask", str(e.mask))
    assert code == 0
    assert t2.sequences_used == ["t2w"] and t2.sequences_missing == {"t1w": "not given", "dwi": "not given"}
    assert t2.interval_basis == "t2w" and t2.preprocessing["reference_sequence"] == "t2w"
    assert set(t2.inputs) == {"t2w", "mask"} and t2.dwi_b_values == [] and not t2.adc_available
    assert "T2w only (no T1w: not given; no DWI: not given)" in t2.summary_line()
    assert any(w.startswith("estimated without T1w, DWI") for w in t2.warnings)
    # The interval is the T2w-only calibration's, not the full one's: more than twice as wide here.
    assert t2.interval_kpa == pytest.approx(_interval_from_calibration(tiny_model, t2), abs=2e-3)
    assert full.interval_kpa == pytest.approx(_interval_from_calibration(tiny_model, full), abs=2e-3)
    width = {name: np.log(r.interval_kpa[1] / r.interval_kpa[0]) for name, r in (("full", full), ("t2w", t2))}
    assert width["t2w"] > 2 * width["full"], width
    # Zero channels are "not given", not out of the training range.
    assert not [o for o in t2.input_range["outside"] if o["feature"].startswith(("t1w_", "dwi_", "adc"))]

    code, t12 = _predict(tmp_path, "t12", tiny_model, "--t1w", str(e.t1w), "--t2w", str(e.t2w), "--mask", str(e.mask),
                         "--leave-out", "t2w:motion")
    assert code == 0 and t12.sequences_used == ["t1w"]
    assert t12.sequences_missing == {"t2w": "motion", "dwi": "not given"} and t12.interval_basis == "t1w"
    assert t12.interval_kpa == pytest.approx(_interval_from_calibration(tiny_model, t12), abs=2e-3)
    page = (tmp_path / "t12" / "report.html").read_text()
    assert "motion" in page


def test_no_sequence_or_a_bad_leave_out_is_one_line(one_case, tiny_model, tmp_path, capsys):
    code, _ = _predict(tmp_path, "none", tiny_model, "--mask", str(one_case.mask))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "at least one of --t1w, --t2w and --dwi" in err and "\n" not in err
    code, _ = _predict(tmp_path, "bad", tiny_model, "--t2w", str(one_case.t2w), "--mask", str(one_case.mask),
                       "--leave-out", "flair:noise")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--leave-out" in err and "\n" not in err
    assert not (tmp_path / "none").exists() and not (tmp_path / "bad").exists()


def test_manifest_with_empty_sequence_cells(small_cohort, tiny_model, tmp_path):
    manifest, records, _ = small_cohort
    rows = list(csv.DictReader(open(manifest)))[:3]
    base = manifest.parent
    for row in rows:
        for col in PATH_COLUMNS:
            row[col] = str(base / row[col])
    rows[0]["dwi"] = rows[0]["dwi_b"] = ""                  # no DWI
    rows[1]["t1w"] = rows[1]["dwi"] = rows[1]["dwi_b"] = ""  # T2w only
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "batch"
    assert main(["predict", "--manifest", str(path), "--model", str(tiny_model), "--device", "cpu", "--no-montage",
                 "--maps", "none", "--out", str(out), "--quiet"]) == 0
    table = {r["case_id"]: r for r in csv.DictReader(open(out / "predictions.csv"))}
    assert all(r["status"] == "ok" for r in table.values()), table
    used = {cid: Report.read(out / cid).sequences_used for cid in table}
    assert used == {rows[0]["case_id"]: ["t1w", "t2w"], rows[1]["case_id"]: ["t2w"],
                    rows[2]["case_id"]: ["t1w", "t2w", "dwi"]}
    # A row with no image at all is refused by name.
    rows[2]["t1w"] = rows[2]["t2w"] = rows[2]["dwi"] = rows[2]["dwi_b"] = ""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    from liverstiffness.manifest import read_manifest
    with pytest.raises(InputError, match="line 4 .*has no image"):
        read_manifest(path)


def test_qa_of_a_t2w_only_exam(one_case, tmp_path):
    out = tmp_path / "qa"
    assert main(["qa", "--t2w", str(one_case.t2w), "--mask", str(one_case.mask), "--out", str(out)]) == 0
    qa = json.loads((out / "qa.json").read_text())
    assert qa["measurements"]["reference_sequence"] == "t2w" and qa["measurements"]["sequences"] == ["t2w"]
    assert qa["measurements"]["volume_ml"] > 100


def test_subset_calibration_added_to_an_older_model_equals_trainings(small_cohort, tiny_model, tmp_path):
    """A model folder without per-subset residuals gets, from its training cohort, the very
    residuals training keeps today; another cohort is refused and nothing is written."""
    from liverstiffness.stiffness.recalibrate import add_subset_calibration

    trained = read_meta(tiny_model).calibration
    assert set(trained.subset_residuals) == {"t1w+t2w", "t1w+dwi", "t2w+dwi", "t1w", "t2w", "dwi"}
    old = tmp_path / "old"
    shutil.copytree(tiny_model, old, ignore=shutil.ignore_patterns("cache"))
    meta = json.loads((old / "model.json").read_text())
    del meta["calibration"]["subset_residuals"]
    (old / "model.json").write_text(json.dumps(meta))
    assert read_meta(old).calibration.subset_residuals == {}
    metrics = add_subset_calibration(old, small_cohort[0], cache_dir=tmp_path / "cache", progress=False)
    again = read_meta(old).calibration
    for key, residuals in trained.subset_residuals.items():
        assert again.subset_residuals[key] == pytest.approx(residuals, abs=2e-3), key
    assert set(metrics) == {FULL, *trained.subset_residuals} and metrics["t2w"]["n"] == len(trained.residuals_log)

    other = tmp_path / "other.csv"
    rows = list(csv.DictReader(open(small_cohort[0])))
    for row in rows:
        for col in PATH_COLUMNS:
            row[col] = str(small_cohort[0].parent / row[col])
        row["stiffness_kpa"] = f"{float(row['stiffness_kpa']) * 1.5:.3f}"   # not the labels it was trained on
    with open(other, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    before = (old / "model.json").read_text()
    with pytest.raises(InputError, match="is not the cohort"):
        add_subset_calibration(old, other, cache_dir=tmp_path / "cache", progress=False)
    assert (old / "model.json").read_text() == before


def test_a_mask_off_the_body_is_refused_on_t2w_and_dwi_references(one_case, tiny_model, tmp_path, capsys):
    """The mask-on-tissue check holds for each reference sequence, with its own level (the liver is
    darker on T2w than on T1w, relative to the image's brightest tissue)."""
    import numpy as np
    import SimpleITK as sitk

    t2 = sitk.ReadImage(str(one_case.t2w))
    corner = np.zeros(sitk.GetArrayViewFromImage(t2).shape, np.uint8)
    z = corner.shape[0] // 2
    corner[z - 3:z + 3, 1:25, 1:25] = 1                  # a liver-sized block in the air of a corner
    off = sitk.GetImageFromArray(corner)
    off.CopyInformation(t2)
    sitk.WriteImage(off, str(tmp_path / "off.nii.gz"))
    b = ",".join(f"{v:g}" for v in one_case.dwi_b)
    for args, ref in ((["--t2w", str(one_case.t2w)], "T2w"), (["--dwi", str(one_case.dwi), "--dwi-b", b], "DWI")):
        code, _ = _predict(tmp_path, f"off_{ref}", tiny_model, *args, "--mask", str(tmp_path / "off.nii.gz"))
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err, err
        assert f"does not cover the liver in the {ref} image" in err, err
        code, rep = _predict(tmp_path, f"on_{ref}", tiny_model, *args, "--mask", str(one_case.mask))
        assert code == 0 and rep.preprocessing["reference_sequence"] == ref.lower()


def test_no_category_from_sequences_that_cannot_support_one(one_case, calibrated_model, tmp_path):
    """A category only from sequences whose out-of-fold r in training reached 0.5: below, or not
    measured, the report says "not assessed" and why (the estimate and interval stay)."""
    from liverstiffness.stiffness.ensemble import MIN_SUBSET_R_FOR_CATEGORY

    meta = json.loads((calibrated_model / "model.json").read_text())
    ablation = meta["metrics"]["cross_validation"]["ablation"]
    for r, expect_category in ((MIN_SUBSET_R_FOR_CATEGORY - 0.2, False), (MIN_SUBSET_R_FOR_CATEGORY + 0.2, True)):
        ablation["only_t2w"] = {"n": 8, "pearson_r": r, "mae_kpa": 0.5}
        model = tmp_path / f"m{r:.1f}"
        shutil.copytree(calibrated_model, model)
        (model / "model.json").write_text(json.dumps(meta))
        code, rep = _predict(tmp_path, f"t2_{r:.1f}", model, "--t2w", str(one_case.t2w), "--mask", str(one_case.mask))
        assert code == 0 and rep.stiffness_kpa > 0 and rep.interval_kpa[0] < rep.interval_kpa[1]
        if expect_category:
            assert rep.category != "not assessed" and rep.category_band_kpa[0] is not None
            assert not any("no category" in w for w in rep.warnings)
        else:
            assert rep.category == "not assessed" and rep.category_band_kpa == [None, None]
            assert any(f"out-of-fold r {r:.2f}" in w and w.endswith("no category") for w in rep.warnings)
            assert "not assessed" in (tmp_path / f"t2_{r:.1f}" / "report.html").read_text()
    del ablation["only_t2w"]                                   # a model that never measured it: none either
    (model / "model.json").write_text(json.dumps(meta))
    code, rep = _predict(tmp_path, "t2_none", model, "--t2w", str(one_case.t2w), "--mask", str(one_case.mask))
    assert code == 0 and rep.category == "not assessed" and any("was not measured" in w for w in rep.warnings)
    # All three sequences: the category as always.
    code, rep = _predict(tmp_path, "all", model, "--t1w", str(one_case.t1w), "--t2w", str(one_case.t2w), "--dwi",
                         str(one_case.dwi), "--dwi-b", ",".join(f"{b:g}" for b in one_case.dwi_b), "--mask", str(one_case.mask))
    assert code == 0 and rep.category != "not assessed"


def test_training_takes_exams_without_a_sequence(small_cohort, tmp_path):
    """A training manifest may leave a sequence empty: those exams are preprocessed without it and
    trained on as sequence dropout shows them; every exam gets its out-of-fold prediction."""
    from liverstiffness.stiffness.network import ModelConfig
    from liverstiffness.stiffness.train import TrainConfig, train_cv

    manifest = small_cohort[0]
    rows = list(csv.DictReader(open(manifest)))
    for row in rows:
        for col in PATH_COLUMNS:
            row[col] = str(manifest.parent / row[col])
    rows[0]["dwi"] = rows[0]["dwi_b"] = ""
    rows[1]["t1w"] = ""
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cfg = TrainConfig(folds=2, epochs=1, seed=0, register=False, workers=1, batch_size=4,
                      model=ModelConfig(hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2))
    out = train_cv(path, tmp_path / "model", cfg, progress=False)
    oof = list(csv.DictReader(open(out / "oof_predictions.csv")))
    assert [r["case_id"] for r in oof] == [r["case_id"] for r in rows]
    assert all(float(r["predicted_kpa"]) > 0 for r in oof)
    cached = {p.name for p in (out / "cache").rglob("*.npz")}
    assert f"{rows[0]['case_id']}.without_dwi.npz" in cached and f"{rows[1]['case_id']}.without_t1w.npz" in cached
