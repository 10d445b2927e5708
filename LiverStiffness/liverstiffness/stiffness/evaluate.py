"""Validation as in the published study, and more: agreement, discrimination at the MRE
thresholds, interval coverage, per-site/vendor breakdown, and residual bias against age, sex,
BMI and steatosis with p-values. Plots: predicted vs reference, Bland-Altman, residuals.

Two baselines sit beside the transformer: the ridge on liver-mask statistics (``baseline.py``),
and FIB-4 (:func:`fib4_baseline`), the blood-test score a hepatologist would read instead of this
tool, with its standard cut-offs for advanced fibrosis, on the exams whose manifest row has the
age, AST, ALT and platelets.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from ..cutoffs import TABLES
from ..mre import AUROC_THRESHOLDS_KPA

STEATOSIS_PDFF = 5.0   # %, the usual MRI-PDFF cut-off for steatotic liver disease
BOOTSTRAP = 2000
# FIB-4 cut-offs for advanced fibrosis: below 1.30 rules it out, above 2.67 rules it in, between is
# indeterminate (Shah et al., Clin Gastroenterol Hepatol 2009; the index: Sterling et al., Hepatology 2006).
FIB4_RULE_OUT, FIB4_RULE_IN = 1.30, 2.67
# Advanced fibrosis (>= F3) on MRE: the F3 edge of the project's NAFLD cut-off table (Liang 2023, 3.53 kPa).
ADVANCED_FIBROSIS_KPA = next(edge for edge, label in TABLES["nafld-liang-2023"].bands if label.startswith(">=F3"))


def _r(y, p) -> float | None:
    return float(stats.pearsonr(y, p)[0]) if len(y) > 2 and np.std(y) > 0 and np.std(p) > 0 else None


def _resamples(n: int, groups, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap index sets: whole patients drawn with replacement when ``groups`` (a patient id
    per exam) is given — repeat exams of one patient are not independent — else single exams."""
    if groups is None:
        return list(rng.integers(0, n, size=(n_boot, n)))
    ids, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    return [np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))]) for _ in range(n_boot)]


def _r_each(y, p, resamples) -> np.ndarray:
    """Pearson r of each resample (NaN where one side is constant); one array operation when the
    resamples are of one length (exams, or patients with equally many exams), else one by one."""
    if len({len(i) for i in resamples}) == 1:
        idx = np.stack(resamples)
        yc, pc = y[idx] - y[idx].mean(1, keepdims=True), p[idx] - p[idx].mean(1, keepdims=True)
        den = np.sqrt((yc ** 2).sum(1) * (pc ** 2).sum(1))
        return np.where(den > 0, (yc * pc).sum(1) / np.where(den > 0, den, 1), np.nan)
    out = np.full(len(resamples), np.nan)
    for b, idx in enumerate(resamples):
        yc, pc = y[idx] - y[idx].mean(), p[idx] - p[idx].mean()
        den = np.sqrt((yc ** 2).sum() * (pc ** 2).sum())
        if den > 0:
            out[b] = (yc * pc).sum() / den
    return out


def bootstrap_r_ci(y, p, n_boot: int = BOOTSTRAP, seed: int = 0, level: float = 0.95, groups=None) -> list[float] | None:
    """Percentile bootstrap CI of Pearson r, resampling patients (``groups``) or else exams."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    if len(y) < 5:
        return None
    r = _r_each(y, p, _resamples(len(y), groups, n_boot, np.random.default_rng(seed)))
    lo, hi = np.nanpercentile(r, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return [round(float(lo), 4), round(float(hi), 4)]


def bootstrap_r_difference(y, p_a, p_b, n_boot: int = BOOTSTRAP, seed: int = 0, level: float = 0.95,
                           groups=None) -> dict:
    """r(a) − r(b) on the same exams with a paired percentile bootstrap CI (patients, or else exams,
    resampled once for both, so the CI is of the difference, not of two independent r's)."""
    y, a, b = (np.asarray(v, float) for v in (y, p_a, p_b))
    resamples = _resamples(len(y), groups, n_boot, np.random.default_rng(seed))
    d = _r_each(y, a, resamples) - _r_each(y, b, resamples)
    lo, hi = np.nanpercentile(d, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    point = (_r(y, a) or np.nan) - (_r(y, b) or np.nan)
    return {"difference": _round(float(point)), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "p_not_greater": round(float(np.mean(d <= 0)), 4)}


def ablation_report(y_kpa, predictions: dict[str, np.ndarray], groups=None, intervals: dict | None = None) -> dict:
    """Each variant's r (bootstrap CI), MAE and AUROCs (with ``intervals``, variant → (low, high),
    its interval coverage and median width), and the full model's r minus each other variant's
    with a paired bootstrap CI. ``predictions``: variant → kPa; must hold "full". ``groups``: the
    patient of each exam (the bootstrap resamples patients)."""
    out = {}
    intervals = intervals or {}
    for name, p in predictions.items():
        m = agreement(y_kpa, p, *intervals.get(name, (None, None)), groups=groups)
        out[name] = {k: m[k] for k in ("n", "pearson_r", "pearson_r_ci95", "mae_kpa", "auroc",
                                       "interval_coverage", "interval_median_width_kpa") if k in m}
        if name != "full":
            out[name]["full_minus_this_r"] = bootstrap_r_difference(y_kpa, predictions["full"], p, groups=groups)
    return out


def agreement(y_kpa, pred_kpa, low=None, high=None, groups=None) -> dict:
    """n, Pearson r with bootstrap CI (by patient when ``groups`` gives each exam's patient), MAE,
    bias and Bland-Altman limits (kPa), AUROCs, coverage."""
    y, p = np.asarray(y_kpa, float), np.asarray(pred_kpa, float)
    d = p - y
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
    out = {"n": int(len(y)), "pearson_r": _round(_r(y, p)), "pearson_r_ci95": bootstrap_r_ci(y, p, groups=groups),
           "mae_kpa": _round(float(np.mean(np.abs(d)))), "mean_bias_kpa": _round(float(np.mean(d))),
           "bland_altman_loa_kpa": [_round(float(np.mean(d) - 1.96 * sd)), _round(float(np.mean(d) + 1.96 * sd))],
           "auroc": {}}
    for t in AUROC_THRESHOLDS_KPA:
        pos = y >= t
        out["auroc"][f">={t:g}kPa"] = (_round(float(roc_auc_score(pos, p))) if 0 < pos.sum() < len(y) else None)
    if low is not None and high is not None:
        out["interval_coverage"] = _round(float(np.mean((y >= np.asarray(low)) & (y <= np.asarray(high)))))
        out["interval_median_width_kpa"] = _round(float(np.median(np.asarray(high) - np.asarray(low))))
    return out


def cv_metrics(y_log, p_log) -> dict:
    """n, Pearson r and MAE (kPa) of ln-scale predictions, as the validation report computes them
    (a model folder's cross-validation entries)."""
    m = agreement(np.exp(y_log), np.exp(p_log))
    return {k: m[k] for k in ("n", "pearson_r", "mae_kpa")}


def _round(v, nd=4):
    return None if v is None else round(v, nd)


def residual_bias(residual_log, age, sex, bmi, pdff, alpha: float = 0.05) -> dict:
    """Does the ln residual (pred − reference) depend on a patient fact? Pearson for continuous
    facts, Welch's t-test for groups; ``biased`` when p < alpha."""
    res = np.asarray(residual_log, float)
    out = {}
    for name, v in (("age", age), ("bmi", bmi)):
        v = np.asarray([np.nan if x is None else x for x in v], float)
        ok = np.isfinite(v)
        if ok.sum() > 3 and np.std(v[ok]) > 0:
            r, pval = stats.pearsonr(v[ok], res[ok])
            slope = np.polyfit(v[ok], res[ok], 1)[0]
            out[name] = {"test": "Pearson", "r": round(float(r), 4), "slope_per_unit": round(float(slope), 5),
                         "p_value": float(pval), "n": int(ok.sum()), "biased": bool(pval < alpha)}
    groups = {"sex": (np.array([s == "F" for s in sex]), np.array([s == "M" for s in sex]), ("F", "M")),
              "steatosis": (np.array([x is not None and x >= STEATOSIS_PDFF for x in pdff]),
                            np.array([x is not None and x < STEATOSIS_PDFF for x in pdff]),
                            (f"PDFF>={STEATOSIS_PDFF:g}%", f"PDFF<{STEATOSIS_PDFF:g}%"))}
    for name, (a, b, labels) in groups.items():
        if a.sum() > 1 and b.sum() > 1:
            t, pval = stats.ttest_ind(res[a], res[b], equal_var=False)
            out[name] = {"test": "Welch t", "mean_residual": {labels[0]: round(float(res[a].mean()), 4),
                                                              labels[1]: round(float(res[b].mean()), 4)},
                         "n": {labels[0]: int(a.sum()), labels[1]: int(b.sum())}, "p_value": float(pval),
                         "biased": bool(pval < alpha)}
    return out


def _share(mask) -> float | None:
    return _round(float(np.mean(mask))) if len(mask) else None


def fib4_baseline(records, pred_kpa=None) -> dict:
    """FIB-4 against the reference kPa on the exams with age, AST, ALT and platelets: Pearson r
    of kPa against FIB-4 (bootstrap CI over patients), AUROC at the report's thresholds and for
    advanced fibrosis (>= ADVANCED_FIBROSIS_KPA), and at the cut-offs 1.30 and 2.67 the
    sensitivity and specificity for advanced fibrosis and the share left indeterminate. With
    ``pred_kpa``, the transformer's r and AUROCs on the same exams, for comparison."""
    fib4 = [r.facts.fib4 for r in records]
    idx = np.array([v is not None for v in fib4], bool)
    n = int(idx.sum())
    out = {"score": "FIB-4 = age x AST / (platelets x sqrt(ALT)) (Sterling et al., Hepatology 2006)",
           "n": n, "n_without_labs": int(len(records) - n)}
    if n == 0:
        out.update(available=False, note="no exam has age, AST, ALT and platelets (manifest columns age, ast, alt, "
                                         "platelets): FIB-4 baseline not computed")
        return out
    y = np.array([r.stiffness_kpa for r in records], float)[idx]
    f = np.array([v for v in fib4 if v is not None], float)
    patients = np.array([r.patient_id for r in records])[idx]
    out.update(available=True, pearson_r=_round(_r(y, f)), pearson_r_ci95=bootstrap_r_ci(y, f, groups=patients),
               spearman_rho=_round(float(stats.spearmanr(y, f)[0])) if n > 2 and np.std(f) > 0 else None,
               median_fib4=_round(float(np.median(f))), auroc={})
    for t in (*AUROC_THRESHOLDS_KPA, ADVANCED_FIBROSIS_KPA):
        pos = y >= t
        out["auroc"][f">={t:g}kPa"] = _round(float(roc_auc_score(pos, f))) if 0 < pos.sum() < n else None
    advanced = y >= ADVANCED_FIBROSIS_KPA
    low, high = f < FIB4_RULE_OUT, f > FIB4_RULE_IN
    out["advanced_fibrosis"] = {
        "definition": f"MRE >= {ADVANCED_FIBROSIS_KPA:g} kPa (>=F3, cut-off table nafld-liang-2023)",
        "n_advanced": int(advanced.sum()), "n_not_advanced": int((~advanced).sum()),
        "cutoffs": "Shah et al., Clin Gastroenterol Hepatol 2009: < 1.30 rules out, > 2.67 rules in",
        f"rule_out_{FIB4_RULE_OUT:g}": {"sensitivity": _share(~low[advanced]), "specificity": _share(low[~advanced]),
                                        "share_below": _share(low)},
        f"rule_in_{FIB4_RULE_IN:g}": {"sensitivity": _share(high[advanced]), "specificity": _share(~high[~advanced]),
                                      "share_above": _share(high)},
        "indeterminate_share": _share(~low & ~high),
    }
    if pred_kpa is not None:
        p = np.asarray(pred_kpa, float)[idx]
        same = {"pearson_r": _round(_r(y, p)), "pearson_r_ci95": bootstrap_r_ci(y, p, groups=patients), "auroc": {}}
        for t in (*AUROC_THRESHOLDS_KPA, ADVANCED_FIBROSIS_KPA):
            pos = y >= t
            same["auroc"][f">={t:g}kPa"] = _round(float(roc_auc_score(pos, p))) if 0 < pos.sum() < n else None
        out["transformer_on_same_exams"] = same
    return out


def full_report(records, pred_kpa, low, high, baseline_kpa=None) -> dict:
    """metrics.json content: overall, per site and vendor, steatosis subgroups, residual bias."""
    y = np.array([r.stiffness_kpa for r in records], float)
    pred = np.asarray(pred_kpa, float)
    patients = np.array([r.patient_id for r in records])     # CIs resample patients, not exams
    report = {"transformer": agreement(y, pred, low, high, groups=patients)}
    if baseline_kpa is not None:
        report["baseline"] = agreement(y, baseline_kpa, groups=patients)
    for key in ("site", "vendor"):
        report[f"by_{key}"] = {}
        for g in sorted({getattr(r, key) for r in records}):
            idx = np.array([getattr(r, key) == g for r in records])
            entry = {"transformer": agreement(y[idx], pred[idx], np.asarray(low)[idx], np.asarray(high)[idx],
                                              groups=patients[idx])}
            if baseline_kpa is not None:
                entry["baseline"] = agreement(y[idx], np.asarray(baseline_kpa)[idx], groups=patients[idx])
            report[f"by_{key}"][g] = entry
    pdff = [r.facts.pdff for r in records]
    steat = np.array([p is not None and p >= STEATOSIS_PDFF for p in pdff])
    no_steat = np.array([p is not None and p < STEATOSIS_PDFF for p in pdff])
    report["steatosis_subgroups"] = {
        "with (PDFF>=5%)": agreement(y[steat], pred[steat], groups=patients[steat]) if steat.sum() > 2 else None,
        "without (PDFF<5%)": agreement(y[no_steat], pred[no_steat], groups=patients[no_steat]) if no_steat.sum() > 2 else None}
    report["fib4"] = fib4_baseline(records, pred)
    report["residual_bias"] = residual_bias(np.log(pred) - np.log(y), [r.facts.age for r in records],
                                            [r.facts.sex for r in records], [r.facts.bmi for r in records], pdff)
    return report


def plots(records, pred_kpa, out_dir: Path, baseline_kpa=None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.array([r.stiffness_kpa for r in records], float)
    p = np.asarray(pred_kpa, float)
    sites = [r.site for r in records]
    paths = []
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for s in sorted(set(sites)):
        idx = np.array([x == s for x in sites])
        ax.scatter(y[idx], p[idx], s=14, alpha=0.75, label=f"site {s}")
    if baseline_kpa is not None:
        ax.scatter(y, baseline_kpa, s=8, marker="x", color="grey", alpha=0.5, label="ridge baseline")
    lim = [0, max(y.max(), p.max()) * 1.05]
    ax.plot(lim, lim, "k--", lw=1, label="identity")
    ax.set(xlim=lim, ylim=lim, xlabel="MRE stiffness (kPa)", ylabel="predicted stiffness (kPa)",
           title=f"Predicted vs reference (r = {_r(y, p):.2f})" if _r(y, p) is not None else "Predicted vs reference")
    ax.legend(fontsize=8)
    paths.append(out_dir / "predicted_vs_reference.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    m, d = (p + y) / 2, p - y
    sd = np.std(d, ddof=1)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(m, d, s=14, alpha=0.75)
    for v, ls in ((d.mean(), "-"), (d.mean() - 1.96 * sd, "--"), (d.mean() + 1.96 * sd, "--")):
        ax.axhline(v, color="k", ls=ls, lw=1)
    ax.set(xlabel="mean of predicted and MRE (kPa)", ylabel="predicted − MRE (kPa)",
           title=f"Bland-Altman: bias {d.mean():.2f}, LoA {d.mean() - 1.96 * sd:.2f} to {d.mean() + 1.96 * sd:.2f} kPa")
    paths.append(out_dir / "bland_altman.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    res = np.log(p) - np.log(y)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    for ax, (name, v) in zip(axes, (("age (years)", [r.facts.age for r in records]),
                                    ("BMI (kg/m²)", [r.facts.bmi for r in records]),
                                    ("PDFF (%)", [r.facts.pdff for r in records]))):
        v = np.array([np.nan if x is None else x for x in v], float)
        ax.scatter(v, res, s=12, alpha=0.7)
        ax.axhline(0, color="k", lw=1)
        ax.set_xlabel(name)
    sex = np.array([r.facts.sex for r in records])
    axes[3].boxplot([res[sex == "F"], res[sex == "M"]], tick_labels=["F", "M"])
    axes[3].set_xlabel("sex")
    axes[0].set_ylabel("ln(predicted / MRE)")
    fig.suptitle("Residuals against patient facts")
    paths.append(out_dir / "residuals_vs_covariates.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _ablations(ens, data, res, baseline_kpa, out: Path, workers: int, progress: bool) -> dict:
    """The ablation table of :func:`evaluate_model`: every variant on the exams all variants could
    be run on (a subset without the T1w is preprocessed again, and an exam may fail there)."""
    from dataclasses import replace

    from .augment import ABLATIONS, SEQUENCE_GROUPS, SUBSET_VARIANTS
    from .data import load_cohort

    runs = {"full": (data, res)}
    for v in ABLATIONS[1:]:
        kept = ([g for g in SEQUENCE_GROUPS if g != v[8:]] if v.startswith("without_") and v[8:] in SEQUENCE_GROUPS
                else [v[5:]] if v.startswith("only_") else list(SEQUENCE_GROUPS))
        sub = data
        if "t1w" not in kept:      # the reference changes: preprocess as a site without a T1w would
            records = [replace(r, **{g: None for g in SEQUENCE_GROUPS if g not in kept}) for r in data.records]
            sub = load_cohort(records, ens.meta.spec, ens.meta.preprocess, out / "cache", workers, progress,
                              with_maps=False)
        runs[v] = (sub, ens.with_cpu_fallback(lambda v=v, sub=sub: ens.predict(sub.images, sub.cov, sub.known, v))[0])
    common = set.intersection(*({r.case_id for r in d.records} for d, _ in runs.values()))
    keep = [r.case_id in common for r in data.records]
    variants, intervals = {}, {}
    for v, (d, r) in runs.items():
        idx = [i for i, rec in enumerate(d.records) if rec.case_id in common]
        variants[v] = np.asarray(r["kpa"])[idx]
        intervals[v] = (np.asarray(r["low"])[idx], np.asarray(r["high"])[idx])
    if baseline_kpa is not None:
        variants["baseline"] = np.asarray(baseline_kpa)[keep]
    recs = [r for r in data.records if r.case_id in common]
    y = np.array([r.stiffness_kpa for r in recs], float)
    table = ablation_report(y, variants, groups=[r.patient_id for r in recs], intervals=intervals)
    for key, v in SUBSET_VARIANTS.items():
        table[v]["sequences"] = key
    return table


def map_report(ens, data) -> dict:
    """The model's stiffness maps against the exams' elastograms (``dense.map_agreement``) on the
    voxels a reader would use, with CIs by patient."""
    from .dense import map_agreement, predict_map_log

    maps, _ = ens.with_cpu_fallback(lambda: predict_map_log(ens.models, data.images, data.cov, data.known, ens.device))
    liver = data.images[:, list(ens.meta.spec.channels).index("mask")]
    return {"scored_on": "confident liver voxels of each exam's elastogram, resampled onto the model's crop",
            **map_agreement(maps, data.dense, liver, [r.patient_id for r in data.records])}


def evaluate_model(model_dir, manifest, out, device: str = "auto", workers: int = 0, progress: bool = True,
                   ablation: bool = False) -> dict:
    """Predict every labelled exam of ``manifest`` with the model and write the validation report.

    ``ablation``: also run the model without its image tokens and with each subset of the
    sequences (inputs the model was trained to do without), and report them beside the full model
    and the ridge baseline under the key "ablation", each subset with its own interval. A subset
    without the T1w is preprocessed again without it (the reference grid and the body region
    change), so its numbers are those a site without that sequence would see."""
    from ..manifest import read_manifest
    from .baseline import RidgeBaseline, features
    from .data import load_cohort
    from .ensemble import Ensemble

    records = read_manifest(manifest, require_label=True)
    ens = Ensemble.load(model_dir, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Every covariate this version knows: the network reads the first n_covariates of them, the
    # ridge the first as many as it was fitted with (a fine-tuned old model's ridge may have more).
    data = load_cohort(records, ens.meta.spec, ens.meta.preprocess, out / "cache", workers, progress,
                       with_maps=ens.meta.config.map_decoder)
    res, _ = ens.with_cpu_fallback(lambda: ens.predict(data.images, data.cov, data.known))
    baseline_kpa = None
    base_path = Path(ens.model_dir) / "baseline.json"
    if base_path.is_file():
        ridge = RidgeBaseline.load(base_path)
        k = ridge.n_covariates
        X, _ = features(data.images, data.cov[:, :k], data.known[:, :k], ens.meta.spec.channels,
                        float(np.prod(ens.meta.spec.spacing_mm)) / 1000.0)
        baseline_kpa = np.exp(ridge.predict_log(X))
    report = {"model": ens.meta.summary(Path(ens.model_dir)), "manifest": str(Path(manifest).resolve()),
              "bootstrap": f"{BOOTSTRAP} resamples of patients (repeat exams of a patient stay together)",
              "interval_nominal_coverage": res["coverage"], "interval_method": ens.meta.calibration.method
              if ens.meta.calibration else None, "failed_cases": data.failures,
              **full_report(data.records, res["kpa"], res["low"], res["high"], baseline_kpa)}
    if ablation:
        report["ablation"] = _ablations(ens, data, res, baseline_kpa, out, workers, progress)
    if ens.meta.config.map_decoder and data.has_maps:
        report["stiffness_map"] = map_report(ens, data)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    with open(out / "predictions.csv", "w") as fh:
        fh.write("case_id,site,stiffness_kpa,predicted_kpa,interval_low_kpa,interval_high_kpa,baseline_kpa\n")
        for i, r in enumerate(data.records):
            b = f"{baseline_kpa[i]:.4f}" if baseline_kpa is not None else ""
            fh.write(f"{r.case_id},{r.site},{r.stiffness_kpa},{res['kpa'][i]:.4f},{res['low'][i]:.4f},{res['high'][i]:.4f},{b}\n")
    plots(data.records, res["kpa"], out, baseline_kpa)
    return report
