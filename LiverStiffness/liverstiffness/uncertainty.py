"""Prediction intervals: split-conformal calibration of out-of-fold residuals, widened by the
disagreement of the fold ensemble.

On the ln(kPa) scale, let q be the conformal quantile of |ln y − ln ŷ| over the out-of-fold
predictions (each made by a model that never saw that exam). For a new exam with ensemble mean m
and ensemble SD s, the interval is exp(m ± √(q² + (z·s)²)), z the normal quantile of the coverage.
q alone gives the split-conformal guarantee (coverage ≥ level for exchangeable exams); the
ensemble term widens it where the folds disagree, i.e. for exams unlike the training data.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class Calibration:
    coverage: float      # nominal coverage, e.g. 0.9
    q_log: float         # conformal quantile of |ln residual|
    z: float             # normal quantile applied to the ensemble SD
    n_calibration: int
    method: str = "split-conformal on out-of-fold |ln residual|, widened by ensemble SD"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(**d)

    def interval(self, mean_log, sd_log) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) in kPa."""
        half = np.sqrt(self.q_log ** 2 + (self.z * np.asarray(sd_log)) ** 2)
        return np.exp(np.asarray(mean_log) - half), np.exp(np.asarray(mean_log) + half)


def conformal_quantile(scores, coverage: float) -> float:
    """The ⌈(n+1)·coverage⌉-th smallest score (finite-sample split-conformal quantile)."""
    s = np.sort(np.asarray(scores, float))
    n = len(s)
    if n == 0:
        raise ValueError("no calibration scores")
    k = math.ceil((n + 1) * coverage)
    return float(s[min(k, n) - 1]) if k <= n else float(s[-1] * 1.5)  # too few: widen


def calibrate(y_kpa, oof_pred_kpa, coverage: float = 0.9) -> Calibration:
    scores = np.abs(np.log(np.asarray(y_kpa)) - np.log(np.asarray(oof_pred_kpa)))
    return Calibration(coverage=coverage, q_log=conformal_quantile(scores, coverage),
                       z=float(norm.ppf(0.5 + coverage / 2)), n_calibration=len(scores))


def coverage_of(y_kpa, low, high) -> float:
    y = np.asarray(y_kpa)
    return float(np.mean((y >= np.asarray(low)) & (y <= np.asarray(high))))
