"""Numbers each site computes on its own exams and the server adds up: agreement, calibration,
cohort counts.

Why sums: Pearson r and MAE of the pooled held-out exams follow exactly from per-site sums
(n, Σy, Σŷ, Σy², Σŷ², Σyŷ, Σ|ŷ−y|), so no site has to send an exam's reference or estimate. The
interval needs the residuals themselves (their order statistics), which are numbers without an
exam attached (sent sorted). Quantities that cannot be pooled from sums without sending
single exams' values — the bootstrap CIs, the input ranges of ``ood`` (percentiles, minima,
maxima) and the head-feature distribution of ``embedding_ood`` — are not computed.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..stiffness.interval import FULL, Calibration

#: Split conformal on ln(kPa) residuals, pooled over the sites' held-out exams.
SPLIT_METHOD = ("split conformal (one global model; held-out exams of every site, residuals pooled) on ln(kPa) "
                "absolute residuals")
#: The reference stiffness histogram: 0.1 kPa bins from 0 to 30 kPa, the last bin open.
HIST_STEP_KPA = 0.1
HIST_BINS = 300


def agreement_sums(y_kpa, p_kpa) -> dict:
    y, p = np.asarray(y_kpa, float), np.asarray(p_kpa, float)
    return {"n": int(len(y)), "sy": float(y.sum()), "sp": float(p.sum()), "syy": float((y * y).sum()),
            "spp": float((p * p).sum()), "syp": float((y * p).sum()), "sabs": float(np.abs(p - y).sum())}


def add_sums(parts) -> dict | None:
    parts = [p for p in parts if p]
    if not parts:
        return None
    return {k: sum(p[k] for p in parts) for k in parts[0]}


def metrics_from_sums(s: dict | None) -> dict:
    """n, Pearson r and MAE (kPa) from pooled sums, as ``stiffness.evaluate.cv_metrics`` gives them
    from the exams (r None below 3 exams or without spread)."""
    if not s or not s["n"]:
        return {"n": 0, "pearson_r": None, "mae_kpa": None}
    n = s["n"]
    var_y = s["syy"] / n - (s["sy"] / n) ** 2
    var_p = s["spp"] / n - (s["sp"] / n) ** 2
    cov = s["syp"] / n - s["sy"] * s["sp"] / n ** 2
    ok = n > 2 and var_y > 1e-12 * max(1.0, s["syy"] / n) and var_p > 1e-12 * max(1.0, s["spp"] / n)
    r = float(np.clip(cov / np.sqrt(var_y * var_p), -1, 1)) if ok else None
    return {"n": int(n), "pearson_r": None if r is None else round(r, 4), "mae_kpa": round(s["sabs"] / n, 4)}


def histogram(kpa) -> list[int]:
    idx = np.clip((np.asarray(kpa, float) / HIST_STEP_KPA).astype(int), 0, HIST_BINS - 1)
    return np.bincount(idx, minlength=HIST_BINS).astype(int).tolist()


def histogram_quantile(counts, q: float) -> float | None:
    """The q-quantile of a pooled histogram (the centre of its bin)."""
    counts = np.asarray(counts, float)
    if counts.sum() == 0:
        return None
    k = int(np.searchsorted(np.cumsum(counts), q * counts.sum(), side="left"))
    return round((min(k, HIST_BINS - 1) + 0.5) * HIST_STEP_KPA, 2)


def pool_counts(counts: list[dict], histograms: list[list[int]]) -> dict:
    """A model folder's ``trained_on`` from the sites' counts (every exam of each site: training,
    early-stopping and held-out), with the stiffness quantiles from the pooled histogram. Patients
    are counted per site: one patient at two hospitals counts twice."""
    out = {"n_exams": sum(c["n_exams"] for c in counts), "n_patients": sum(c["n_patients"] for c in counts)}
    for group in ("by_site", "by_vendor", "by_field_strength_T"):
        total = Counter()
        for c in counts:
            total.update(c.get(group) or {})
        out[group] = dict(sorted(total.items()))
    pooled = np.sum([np.asarray(h) for h in histograms], axis=0) if histograms else np.zeros(HIST_BINS)
    out["stiffness_kpa"] = {"median": histogram_quantile(pooled, 0.5), "p5": histogram_quantile(pooled, 0.05),
                            "p95": histogram_quantile(pooled, 0.95),
                            "note": f"from a pooled {HIST_STEP_KPA} kPa histogram (bin centres)"}
    out["split"] = {k: sum(c[k] for c in counts) for k in ("n_training", "n_early_stopping", "n_held_out")}
    return out


def calibration(residual_sets: list[dict], coverage: float) -> Calibration | None:
    """Split-conformal calibration from the sites' held-out residuals (subset key → |ln y − ln ŷ|).
    With one global model, ``Calibration.interval``'s CV+ formula is split conformal: every residual
    belongs to "fold" 0. Guarantee for exams exchangeable with the pooled held-out exams: coverage
    ≥ the nominal coverage (for n large enough that the rank exists; else the interval is unbounded)."""
    full = sorted(r for s in residual_sets for r in s.get(FULL, []))
    if not full:
        return None
    subsets = {}
    for key in sorted({k for s in residual_sets for k in s} - {FULL}):
        subsets[key] = tuple(sorted(r for s in residual_sets for r in s.get(key, [])))
    return Calibration(coverage=coverage, residuals_log=tuple(full), residual_fold=(0,) * len(full),
                       method=SPLIT_METHOD, guaranteed_coverage=coverage, subset_residuals=subsets)
