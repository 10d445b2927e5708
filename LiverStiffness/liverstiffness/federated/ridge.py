"""The ridge baseline without pooling features: fitted from per-site sums.

Why it works: ridge regression on standardised features with an intercept depends on the data
only through n, Σx, Σy, XᵀX, Xᵀy and yᵀy, and those add up over sites. So each site sends the
sums of its training exams and the server solves the same problem ``RidgeBaseline.fit`` solves
on pooled exams (a test holds them equal for a given penalty). The penalty is chosen by
leave-one-site-out error, which the same sums give exactly; ``train`` instead chooses it by
leave-one-exam-out (RidgeCV), which needs each exam.

What it costs in privacy: XᵀX of a handful of exams pins down their features (with one exam,
x xᵀ and x·y are the exam itself). A site therefore sends its sums only when its training exams
number at least ``MIN_EXAMS_FACTOR`` × (features + 2); below that it sends nothing for the
ridge and says so, and with fewer than two sites sending, no ridge is fitted (the model card
says why).
"""
from __future__ import annotations

import numpy as np

from ..stiffness.baseline import RidgeBaseline

MIN_EXAMS_FACTOR = 2
ALPHAS = np.logspace(-2, 3, 21)        # RidgeBaseline.fit's candidates


def min_exams(n_features: int) -> int:
    return MIN_EXAMS_FACTOR * (n_features + 2)


def site_sums(X: np.ndarray, y_log: np.ndarray) -> dict:
    X, y = np.asarray(X, float), np.asarray(y_log, float)
    return {"n": int(len(y)), "sx": X.sum(0).tolist(), "sy": float(y.sum()), "xtx": (X.T @ X).tolist(),
            "xty": (X.T @ y).tolist(), "yty": float(y @ y)}


def _arrays(s: dict):
    return (s["n"], np.asarray(s["sx"], float), float(s["sy"]), np.asarray(s["xtx"], float),
            np.asarray(s["xty"], float), float(s["yty"]))


def _add(parts: list[dict]):
    arrs = [_arrays(p) for p in parts]
    return tuple(sum(a[i] for a in arrs) for i in range(6))


def solve(sums, alpha: float):
    """(mean, scale, coef, intercept) of ridge on standardised features from summed statistics."""
    n, sx, sy, xtx, xty, _ = sums
    mean, ybar = sx / n, sy / n
    scale = np.sqrt(np.clip(np.diag(xtx) / n - mean ** 2, 0, None)) + 1e-8     # population SD, as X.std(0)
    czz = (xtx - n * np.outer(mean, mean)) / np.outer(scale, scale)
    czy = (xty - n * mean * ybar) / scale
    coef = np.linalg.solve(czz + alpha * np.eye(len(mean)), czy)
    return mean, scale, coef, ybar


def sse(sums, mean, scale, coef, intercept) -> float:
    """Σ (y − ŷ)² over the exams behind ``sums``, from the sums alone."""
    n, sx, sy, xtx, xty, yty = sums
    w = coef / scale
    c0 = intercept - mean @ w
    return float(yty - 2 * c0 * sy - 2 * w @ xty + n * c0 ** 2 + 2 * c0 * (w @ sx) + w @ xtx @ w)


def fit(parts: list[dict], names: list[str]) -> tuple[RidgeBaseline, dict]:
    """The baseline from ≥ 2 sites' sums; the penalty by leave-one-site-out squared error."""
    if len(parts) < 2:
        raise ValueError("a ridge from sums needs at least two sites (the penalty is chosen leaving one out)")
    errors = []
    for alpha in ALPHAS:
        total = 0.0
        for k in range(len(parts)):
            rest = _add([p for j, p in enumerate(parts) if j != k])
            total += sse(_arrays(parts[k]), *solve(rest, alpha))
        errors.append(total)
    alpha = float(ALPHAS[int(np.argmin(errors))])
    mean, scale, coef, intercept = solve(_add(parts), alpha)
    n = sum(p["n"] for p in parts)
    info = {"sites": len(parts), "n_exams": n, "alpha": alpha,
            "alpha_choice": "leave-one-site-out squared error on ln(kPa)",
            "leave_one_site_out_mse": round(min(errors) / n, 5)}
    return RidgeBaseline(list(names), mean, scale, coef, float(intercept), alpha), info
