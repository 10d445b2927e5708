"""Blood tests (AST, ALT, platelets) and FIB-4: the formula, the manifest columns, one-line input errors, the
phantom's published strength, covariate tokens for new models while old model folders read as before, and the
FIB-4 baseline in ``evaluate`` (docs/phantom.md "Blood tests a hepatologist reads beside stiffness")."""
from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from liverstiffness.cli.main import main
from liverstiffness.errors import InputError
from liverstiffness.manifest import ExamRecord, PatientFacts, fib4, read_manifest, write_manifest
from liverstiffness.phantom.cohort import exam_labs, plan_exams
from liverstiffness.stiffness.covariates import ALL_COVARIATES, COVARIATES_V1, encode
from liverstiffness.stiffness.evaluate import ADVANCED_FIBROSIS_KPA, fib4_baseline


def _records(n: int, seed: int) -> list[ExamRecord]:
    """Planned phantom exams (no images) with their blood tests and an MRE label with its 8 % noise."""
    rng = np.random.default_rng([seed, 999])
    out = []
    for e in plan_exams(n, seed):
        ast, alt, platelets = exam_labs(e, seed)
        p = e.patient
        kpa = e.state.stiffness_kpa(float(np.exp(rng.normal(0, 0.08))))
        out.append(ExamRecord(case_id=e.case_id, patient_id=p.pid, t1w=None, t2w=Path("t2w.nii.gz"), dwi=None,
                              mask=None, dwi_b=(), facts=PatientFacts(p.age, p.sex, p.bmi, None, ast, alt, platelets),
                              stiffness_kpa=kpa))
    return out


def test_fib4_is_age_times_ast_over_platelets_times_root_alt():
    # 64 y, AST 36 U/L, ALT 16 U/L, platelets 144 × 10⁹/L: 64 · 36 / (144 · 4) = 2304 / 576 = 4.0
    assert fib4(64, 36, 16, 144) == pytest.approx(4.0, rel=1e-12)
    assert fib4(50, 40, 25, 200) == pytest.approx(2.0, rel=1e-12)       # 2000 / (200 · 5)
    assert PatientFacts(age=64, ast=36, alt=16, platelets=144).fib4 == pytest.approx(4.0)
    assert PatientFacts(age=64, ast=36, alt=16).fib4 is None and fib4(None, 36, 16, 144) is None


def test_manifest_round_trip_with_and_without_lab_columns(small_cohort, tmp_path):
    records = read_manifest(small_cohort[0])
    assert any(r.facts.platelets is not None for r in records)          # the phantom writes them
    write_manifest(tmp_path / "with.csv", records)
    header = next(csv.reader(open(tmp_path / "with.csv")))
    assert header[-5:] == ["ast", "alt", "platelets", "mre_map", "mre_confidence"]
    for a, b in zip(records, read_manifest(tmp_path / "with.csv", check_files=False)):
        assert (b.facts.ast, b.facts.alt, b.facts.platelets) == (a.facts.ast, a.facts.alt, a.facts.platelets)
    # Without blood tests no lab columns are written, and an old manifest without them still reads.
    bare = [replace(r, facts=replace(r.facts, ast=None, alt=None, platelets=None)) for r in records]
    write_manifest(tmp_path / "without.csv", bare)
    assert not {"ast", "alt", "platelets"} & set(next(csv.reader(open(tmp_path / "without.csv"))))
    back = read_manifest(tmp_path / "without.csv", check_files=False)
    assert all(r.facts.fib4 is None and r.facts.ast is None for r in back)
    assert [r.facts.age for r in back] == [r.facts.age for r in records]


@pytest.mark.parametrize("facts, field", [(dict(platelets=250000.0), "platelets"), (dict(ast=0.0), "AST"),
                                          (dict(alt=float("nan")), "ALT")])
def test_a_bad_lab_value_is_a_one_line_error_naming_it(facts, field):
    with pytest.raises(InputError) as exc:
        PatientFacts(age=50, **facts).validate("patient")
    assert field in str(exc.value) and "\n" not in str(exc.value)


def test_a_bad_lab_cell_or_option_is_one_line(small_cohort, tmp_path, capsys):
    rows = list(csv.DictReader(open(small_cohort[0])))
    rows[0]["platelets"] = "lots"
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(InputError, match="platelets"):
        read_manifest(tmp_path / "m.csv", check_files=False)
    code = main(["predict", "--t2w", "t2w.nii.gz", "--mask", "mask.nii.gz", "--age", "50", "--platelets", "250000",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "platelets" in err and "250000" in err


def test_the_phantoms_labs_have_the_published_strength():
    """FIB-4 against MRE-advanced fibrosis: AUROC about 0.7–0.8 (docs/phantom.md: 0.77 on 5000 exams, 0.73–0.81 on
    400); realistic marginals; each panel missing in about 10 %; platelets low in advanced disease."""
    records = _records(400, seed=0)
    out = fib4_baseline(records)
    assert out["available"] and 280 <= out["n"] <= 360
    assert 0.65 <= out["auroc"][f">={ADVANCED_FIBROSIS_KPA:g}kPa"] <= 0.85
    assert 0.0 < out["pearson_r"] and out["pearson_r_ci95"][0] < out["pearson_r"] < out["pearson_r_ci95"][1]
    facts = [r.facts for r in records]
    ast = [f.ast for f in facts if f.ast is not None]
    alt = [f.alt for f in facts if f.alt is not None]
    plt = np.array([f.platelets for f in facts if f.platelets is not None])
    assert 20 <= np.median(ast) <= 35 and 25 <= np.median(alt) <= 40
    assert 220 <= plt.mean() <= 280 and 50 <= plt.std() <= 90
    assert 0.04 <= 1 - len(alt) / len(facts) <= 0.18 and 0.04 <= 1 - len(plt) / len(facts) <= 0.18
    # ALT weakly related to stiffness; platelets below 150 mostly in advanced disease.
    y = np.array([r.stiffness_kpa for r in records if r.facts.alt is not None])
    assert abs(np.corrcoef(np.log(alt), y)[0, 1]) < 0.25
    y_plt = np.array([r.stiffness_kpa for r in records if r.facts.platelets is not None])
    assert np.mean(plt[y_plt >= 5.0] < 150) > 3 * np.mean(plt[y_plt < ADVANCED_FIBROSIS_KPA] < 150)
    # Deterministic: the same exams get the same values whatever the cohort size.
    assert [r.facts for r in _records(40, seed=0)] == facts[:40]


def test_old_model_folders_read_their_four_covariates_bit_identically(small_cohort):
    from liverstiffness.stiffness.baseline import RidgeBaseline, features
    from liverstiffness.stiffness.checkpoint import DEMO_MODEL_DIR, read_meta
    from liverstiffness.stiffness.data import load_cohort
    from liverstiffness.stiffness.ensemble import Ensemble

    meta = read_meta(DEMO_MODEL_DIR)
    raw = json.loads((DEMO_MODEL_DIR / "model.json").read_text())
    # Written before the blood tests (no list: the original four), or rewritten since (recalibrate) with them named.
    assert raw["architecture"]["n_covariates"] == 4
    assert tuple(raw["architecture"].get("covariates", COVARIATES_V1)) == COVARIATES_V1
    assert meta.config.covariates == COVARIATES_V1 == ("age", "sex", "bmi", "pdff")
    facts = PatientFacts(55, "M", 31, 12, ast=60, alt=45, platelets=120)
    values, known = encode(facts, meta.config.covariates)
    assert values.shape == (4,) and known.all()
    assert np.array_equal(encode(facts)[0][:4], values) and encode(facts)[0].shape == (len(ALL_COVARIATES),)
    # The shipped model's estimate is the same whether it is given its four columns or all of them.
    ens = Ensemble.load(DEMO_MODEL_DIR, "cpu")
    records = read_manifest(small_cohort[0])[:2]
    four = load_cohort(records, ens.meta.spec, ens.meta.preprocess, None, 1, False, meta.config.covariates)
    every = load_cohort(records, ens.meta.spec, ens.meta.preprocess, None, 1, False)
    assert four.cov.shape[1] == 4 and every.cov.shape[1] == len(ALL_COVARIATES)
    a, b = ens.predict(four.images, four.cov, four.known), ens.predict(every.images, every.cov, every.known)
    assert np.array_equal(a["kpa"], b["kpa"]) and np.array_equal(a["low"], b["low"])
    # Its ridge baseline too: evaluate gives it the first as many covariate columns as it was fitted with.
    ridge = RidgeBaseline.load(DEMO_MODEL_DIR / "baseline.json")
    k, voxel_ml = ridge.n_covariates, float(np.prod(ens.meta.spec.spacing_mm)) / 1000.0
    assert k == 4
    x4, _ = features(four.images, four.cov, four.known, ens.meta.spec.channels, voxel_ml)
    x8, _ = features(every.images, every.cov[:, :k], every.known[:, :k], ens.meta.spec.channels, voxel_ml)
    assert np.array_equal(ridge.predict_log(x4), ridge.predict_log(x8))


def test_a_model_json_naming_unknown_covariates_is_refused(tmp_path):
    from liverstiffness.stiffness.checkpoint import DEMO_MODEL_DIR, read_meta

    folder = tmp_path / "m"
    shutil.copytree(DEMO_MODEL_DIR, folder)
    d = json.loads((folder / "model.json").read_text())
    d["architecture"]["covariates"] = ["age", "sex", "bmi", "hba1c"]
    (folder / "model.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="update liverstiffness") as exc:
        read_meta(folder)
    assert "\n" not in str(exc.value)


def test_a_model_trained_now_has_the_lab_tokens_and_uses_them(tiny_model, small_cohort):
    import torch

    from liverstiffness.stiffness.checkpoint import read_meta
    from liverstiffness.stiffness.data import load_cohort
    from liverstiffness.stiffness.ensemble import Ensemble

    meta = read_meta(tiny_model)
    assert meta.config.n_covariates == len(ALL_COVARIATES) and meta.config.covariates == ALL_COVARIATES
    arch = json.loads((Path(tiny_model) / "model.json").read_text())["architecture"]
    assert arch["covariates"] == ["age", "sex", "bmi", "pdff", "ast", "alt", "platelets", "fib4"]
    ens = Ensemble.load(tiny_model, "cpu")
    records = read_manifest(small_cohort[0])[:2]
    data = load_cohort(records, ens.meta.spec, ens.meta.preprocess, None, 1, False, meta.config.covariates)
    with_labs = ens.predict(data.images, data.cov, data.known)["kpa"]
    lab_cols = [ALL_COVARIATES.index(n) for n in ("ast", "alt", "platelets", "fib4")]
    known = data.known.copy()
    known[:, lab_cols] = False
    without = ens.predict(data.images, data.cov, known)["kpa"]
    assert np.all(np.isfinite(with_labs)) and np.all(with_labs > 0) and not np.array_equal(with_labs, without)
    # A caller that gives only the original four columns gets the labs' missing embedding.
    net, x = ens.models[0], torch.as_tensor(data.images)
    with torch.no_grad():
        four = net(x, torch.as_tensor(data.cov[:, :4]), torch.as_tensor(data.known[:, :4]))
        unknown = net(x, torch.as_tensor(data.cov), torch.as_tensor(known))
    assert torch.equal(four, unknown)


def test_evaluate_reports_the_fib4_baseline(tiny_model, small_cohort, tmp_path):
    from liverstiffness.stiffness.evaluate import evaluate_model

    report = evaluate_model(tiny_model, small_cohort[0], tmp_path / "ev", device="cpu", workers=1, progress=False)
    block = json.loads((tmp_path / "ev" / "metrics.json").read_text())["fib4"]
    assert block == report["fib4"] and block["available"]
    complete = [r for r in read_manifest(small_cohort[0]) if r.facts.fib4 is not None]
    assert block["n"] == len(complete) >= 4 and block["n_without_labs"] == 8 - len(complete)
    af = block["advanced_fibrosis"]
    assert af["n_advanced"] + af["n_not_advanced"] == block["n"]
    for key in ("rule_out_1.3", "rule_in_2.67"):
        for v in (af[key]["sensitivity"], af[key]["specificity"]):
            assert v is None or 0.0 <= v <= 1.0
    assert 0.0 <= af["indeterminate_share"] <= 1.0
    assert af["rule_out_1.3"]["share_below"] + af["indeterminate_share"] + af["rule_in_2.67"]["share_above"] == \
        pytest.approx(1.0, abs=1e-3)
    assert set(block["transformer_on_same_exams"]["auroc"]) == set(block["auroc"])
    # Without blood tests the key says so instead of failing.
    bare = [replace(r, facts=replace(r.facts, platelets=None)) for r in read_manifest(small_cohort[0])]
    none = fib4_baseline(bare)
    assert none["available"] is False and none["n"] == 0 and "not computed" in none["note"]
    assert not math.isnan(none["n_without_labs"])
