"""Training protocol, checkpoints, metrics, bias analysis, intervals and torchrun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from liverstiffness.errors import InputError
from liverstiffness.manifest import ExamRecord, PatientFacts, read_manifest
from liverstiffness.stiffness.data import load_cohort
from liverstiffness.stiffness.ensemble import Ensemble, predict_log
from liverstiffness.stiffness.evaluate import agreement, residual_bias
from liverstiffness.stiffness.folds import make_folds
from liverstiffness.stiffness.interval import Calibration, calibrate, coverage_of


def _fake_records(n_patients=60, sites="ABCD", seed=0):
    rng = np.random.default_rng(seed)
    recs = []
    for p in range(n_patients):
        site = sites[p % len(sites)]
        for e in range(1 + (rng.random() < 0.3)):          # some patients have a repeat exam
            recs.append(ExamRecord(f"c{p}-{e}", f"p{p}", Path("t1"), Path("t2"), Path("d"), Path("m"), (800.0,),
                                   site=site, facts=PatientFacts(), stiffness_kpa=3.0))
    return recs


def test_folds_group_patients_and_balance_sites():
    recs = _fake_records()
    fold = make_folds(recs, 5, seed=1)
    assert set(fold) == set(range(5))
    by_patient = {}
    for r, f in zip(recs, fold):
        by_patient.setdefault(r.patient_id, set()).add(f)
    assert all(len(s) == 1 for s in by_patient.values())     # repeat exams never straddle folds
    for site in "ABCD":
        counts = np.bincount(fold[[r.site == site for r in recs]], minlength=5)
        assert counts.max() - counts.min() <= 2                 # each site spread evenly
    with pytest.raises(InputError, match="need at least 70 patients"):
        make_folds(recs, 70)


def test_checkpoint_round_trip_reproduces_out_of_fold_predictions(tiny_model, small_cohort):
    meta = json.loads((tiny_model / "model.json").read_text())
    assert meta["format"] == "liverstiffness-ensemble/3" and len(meta["folds"]) == 2
    assert meta["input_spec"]["channels"] == ["t1w", "t2w", "dwi", "adc", "mask"]
    assert meta["synthetic_training_data"] is True and "DEMONSTRATION" in meta["intended_use"]
    assert "not for clinical use" in (tiny_model / "MODEL_CARD.md").read_text().lower()
    ens = Ensemble.load(tiny_model, "cpu")
    records = read_manifest(small_cohort[0])
    data = load_cohort(records, ens.meta.spec, ens.meta.preprocess, None, 1, False)
    oof = {row.split(",")[0]: (int(row.split(",")[3]), float(row.split(",")[5]))
           for row in (tiny_model / "oof_predictions.csv").read_text().splitlines()[1:]}
    for i, rec in enumerate(data.records):
        fold, pred = oof[rec.case_id]
        again = np.exp(predict_log([ens.models[fold]], data.images[i:i + 1], data.cov[i:i + 1], data.known[i:i + 1],
                                   ens.device)[0, 0])
        assert again == pytest.approx(pred, rel=1e-3)
    log = [json.loads(line) for line in (tiny_model / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["settings"]["folds"] == 2 and "torch" in log[0]["settings"]



@pytest.mark.slow
def test_inference_is_float32_on_every_device_and_bfloat16_stays_an_option(small_cohort):
    """CPU/GPU agreement (0.01 kPa): predict_log does not autocast unless asked, on any device. With
    the demo model, bfloat16 autocast (CPU autocast makes the casts CUDA's would) moved estimates
    by 0.024–0.028 kPa, so it stays opt-in; it must still give sane numbers."""
    ens = Ensemble.load(None, "cpu")
    data = load_cohort(read_manifest(small_cohort[0]), ens.meta.spec, ens.meta.preprocess, None, 1, False)
    run = lambda **kw: np.exp(predict_log(ens.models, data.images, data.cov, data.known, ens.device, **kw).mean(0))  # noqa: E731
    default, full, mixed = run(), run(amp=False), run(amp=True)
    assert np.array_equal(default, full)
    assert np.all(np.isfinite(mixed)) and np.abs(full - mixed).max() <= 0.05

def test_weights_are_checked_against_their_hash(tiny_model, tmp_path):
    import shutil
    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy, ignore=shutil.ignore_patterns("cache"))
    with open(copy / "fold1.pt", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(InputError, match="SHA-256 does not match"):
        Ensemble.load(copy, "cpu")


def test_bootstrap_resamples_patients_not_exams():
    """Repeat exams of one patient are one observation: a cohort of 12 patients with 5 identical exams
    each has the CI of 12 patients (wide), not of 60 exams (narrow, as if the repeats were new people)."""
    from liverstiffness.stiffness.evaluate import bootstrap_r_ci, bootstrap_r_difference

    rng = np.random.default_rng(3)
    y1 = rng.normal(0, 1, 12)
    p1 = y1 + rng.normal(0, 1, 12)
    y, p, patients = np.repeat(y1, 5), np.repeat(p1, 5), np.repeat(np.arange(12), 5)
    by_exam, by_patient = bootstrap_r_ci(y, p), bootstrap_r_ci(y, p, groups=patients)
    assert by_patient[1] - by_patient[0] > 1.8 * (by_exam[1] - by_exam[0])
    single = bootstrap_r_ci(y1, p1)          # the 12 patients once each: about the patient-level width
    assert abs((by_patient[1] - by_patient[0]) - (single[1] - single[0])) < 0.1
    d = bootstrap_r_difference(y, p, y, groups=patients)
    assert d["difference"] < 0 and d["ci95"][1] <= 0 and d["p_not_greater"] == 1.0     # against a perfect predictor


def test_metrics_match_a_hand_computed_case():
    y = np.array([2.0, 3.0, 4.0, 6.0])
    p = np.array([2.5, 2.5, 4.5, 5.5])
    m = agreement(y, p, low=[1.5, 2.8, 3.0, 6.1], high=[2.6, 3.5, 5.0, 7.0])
    # differences p − y: 0.5, −0.5, 0.5, −0.5
    assert m["mean_bias_kpa"] == 0.0 and m["mae_kpa"] == 0.5
    sd = np.sqrt(4 * 0.25 / 3)
    assert m["bland_altman_loa_kpa"] == pytest.approx([-1.96 * sd, 1.96 * sd], abs=1e-4)
    yc, pc = y - y.mean(), p - p.mean()
    assert m["pearson_r"] == pytest.approx((yc @ pc) / np.sqrt((yc @ yc) * (pc @ pc)), abs=1e-4)
    # AUROC at 3.0 kPa: positives {3, 4, 6} scored {2.5, 4.5, 5.5} vs the negative scored 2.5 → (0.5+1+1)/3
    assert m["auroc"][">=3kPa"] == pytest.approx(2.5 / 3, abs=1e-4)
    assert m["auroc"][">=2.5kPa"] == pytest.approx(2.5 / 3, abs=1e-4)
    assert m["interval_coverage"] == 0.75                     # 6.0 lies below its interval 6.1–7.0
    assert m["n"] == 4


def test_bias_analysis_detects_a_planted_bias_and_only_that():
    rng = np.random.default_rng(3)
    n = 400
    age = rng.uniform(20, 80, n)
    bmi = rng.uniform(18, 45, n)
    sex = rng.choice(["F", "M"], n)
    pdff = list(rng.uniform(0, 20, n))
    noise = rng.normal(0, 0.1, n)
    biased = residual_bias(noise + 0.004 * (age - 50), age, sex, bmi, pdff)   # older → overestimated
    assert biased["age"]["biased"] and biased["age"]["p_value"] < 1e-6 and biased["age"]["slope_per_unit"] > 0
    assert not biased["bmi"]["biased"] and not biased["sex"]["biased"]
    sex_biased = residual_bias(noise + 0.08 * (sex == "M"), age, sex, bmi, pdff)
    assert sex_biased["sex"]["biased"] and not sex_biased["age"]["biased"]
    steat = residual_bias(noise + 0.08 * (np.array(pdff) >= 5), age, sex, bmi, pdff)
    assert steat["steatosis"]["biased"]


def test_cv_plus_interval_reaches_its_coverage_on_held_out_data():
    """K-fold CV+ on simulated fold models: coverage on new exchangeable exams near the nominal
    90 % (and above the guaranteed bound); wider where the fold models disagree."""
    rng = np.random.default_rng(0)
    k, n, m = 5, 500, 2500
    truth = rng.normal(1.0, 0.4, n + m)                      # ln kPa
    fold_bias = rng.normal(0, 0.03, k)                        # each fold model a little off
    fold = np.arange(n) % k
    oof = truth[:n] + fold_bias[fold] + rng.normal(0, 0.12, n)
    cal = calibrate(np.exp(truth[:n]), np.exp(oof), fold, coverage=0.9)
    assert cal.n_calibration == n and 0.75 < cal.guaranteed_coverage < 0.8
    new = truth[n:] + rng.normal(0, 0.12, m)
    fold_log = new[None] + fold_bias[:, None]                 # [K, M]
    low, high = cal.interval(fold_log)
    cov = coverage_of(np.exp(truth[n:]), low, high)
    assert 0.87 <= cov <= 0.94 and cov >= cal.guaranteed_coverage
    spread = fold_log + np.linspace(-0.2, 0.2, k)[:, None]     # the folds disagree → wider
    wide_low, wide_high = cal.interval(spread)
    assert np.all(wide_high - wide_low > high - low)
    saved = json.loads(json.dumps(cal.to_dict()))
    assert Calibration.from_dict(saved).to_dict() == saved


@pytest.mark.slow
def test_tiny_model_interval_coverage_and_ablation_are_reported_by_evaluate(tiny_model, small_cohort, tmp_path, capsys):
    from liverstiffness.cli.main import main
    from liverstiffness.stiffness.evaluate import evaluate_model
    rep = evaluate_model(tiny_model, small_cohort[0], tmp_path / "ev", device="cpu", workers=1, progress=False)
    assert "ablation" not in rep
    assert main(["evaluate", "--model", str(tiny_model), "--manifest", str(small_cohort[0]), "--out",
                 str(tmp_path / "ab"), "--device", "cpu", "--workers", "1", "--ablation", "--quiet"]) == 0
    ablation = json.loads((tmp_path / "ab" / "metrics.json").read_text())["ablation"]
    assert set(ablation) == {"full", "without_image_tokens", "without_t1w", "without_t2w", "without_dwi", "only_t1w",
                             "only_t2w", "only_dwi", "baseline"}
    assert ablation["only_t2w"]["sequences"] == "t2w" and 0 <= ablation["only_t2w"]["interval_coverage"] <= 1
    for name, m in ablation.items():
        assert m["n"] == 8 and set(m) >= {"pearson_r", "pearson_r_ci95", "mae_kpa"}
        assert ("full_minus_this_r" in m) == (name != "full")
    assert ablation["full"]["pearson_r"] == rep["transformer"]["pearson_r"]
    assert ablation["without_t2w"]["mae_kpa"] != ablation["full"]["mae_kpa"]      # the variant really changed the input
    assert "without_image_tokens" in capsys.readouterr().out
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["transformer"]["n"] == 8 and "interval_coverage" in saved["transformer"]
    assert set(saved["transformer"]["auroc"]) == {">=2.5kPa", ">=3kPa", ">=3.5kPa", ">=5kPa"}
    assert set(saved["by_site"]) == {"A", "B", "C"} and "baseline" in saved
    assert set(saved["residual_bias"]) >= {"age", "bmi", "sex"}
    for png in ("predicted_vs_reference.png", "bland_altman.png", "residuals_vs_covariates.png"):
        assert (tmp_path / "ev" / png).stat().st_size > 5000
    assert rep["transformer"]["pearson_r_ci95"] is not None


@pytest.mark.slow
def test_torchrun_two_cpu_processes(small_cohort, tmp_path):
    """Two data-parallel CPU processes train a 2-fold model; the folder held a 3-fold model before,
    whose third fold's weights must not survive into the new one."""
    out = tmp_path / "ddp"
    out.mkdir()
    (out / "fold2.pt").write_bytes(b"weights of an earlier 3-fold model")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "liverstiffness", "train", "--manifest", str(small_cohort[0]), "--out", str(out),
           "--folds", "2", "--epochs", "1", "--no-register", "--workers", "1", "--batch-size", "4", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "model.json").read_text())
    assert meta["metrics"]["world_size"] == 2 and len(meta["folds"]) == 2
    assert all((out / f["file"]).is_file() for f in meta["folds"])
    assert sorted(p.name for p in out.glob("fold*.pt")) == ["fold0.pt", "fold1.pt"]


def test_init_from_fine_tunes_the_source_model(tiny_model, small_cohort, tmp_path):
    """--init-from: each fold starts from the source model's weights (architecture, inputs and
    preprocessing taken over from it) instead of from random weights."""
    import torch

    from liverstiffness.cli.main import main
    from liverstiffness.stiffness.checkpoint import load_models, read_meta

    out = tmp_path / "tuned"
    assert main(["train", "--manifest", str(small_cohort[0]), "--out", str(out), "--folds", "2", "--epochs", "1",
                 "--lr", "1e-7", "--init-from", str(tiny_model), "--workers", "1", "--batch-size", "4", "--quiet"]) == 0
    src, new = read_meta(tiny_model), read_meta(out)
    assert new.config == src.config and new.spec == src.spec and new.preprocess.register == src.preprocess.register
    before, after = load_models(tiny_model, src), load_models(out, new)
    for a, b in zip(before, after):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(p.float(), q.float(), atol=1e-3), name      # a tiny step from the source
    settings = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])["settings"]
    assert settings["init_from"] == str(tiny_model)
