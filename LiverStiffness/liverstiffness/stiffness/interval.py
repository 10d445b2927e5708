"""Prediction intervals by K-fold CV+ (Barber, Candès, Ramdas & Tibshirani, "Predictive inference
with the jackknife+", Annals of Statistics 2021, section 4).

Training keeps, for every training exam i, its out-of-fold residual R_i = |ln y_i − ln μ_k(i)(x_i)|
on the ln(kPa) scale, μ_k(i) being the fold model that never saw exam i. For a new exam x the
interval is

    [ q⁻_α { ln μ_k(i)(x) − R_i },  q⁺_α { ln μ_k(i)(x) + R_i } ]   (over all n training exams),

q⁺_α the ⌈(1−α)(n+1)⌉-th smallest value and q⁻_α the ⌊α(n+1)⌋-th smallest: each residual is
re-centred on the prediction of the very fold model it was measured on, so the fold models'
disagreement about x widens the interval by itself.

Guarantee (their Theorem 4), for a new exam exchangeable with the training exams (same sites,
scanners and population): coverage ≥ 1 − 2α − min{2(1 − 1/K)/(n/K + 1), (1 − K/n)/(K + 1)}, i.e.
about 1 − 2α (80 % for a nominal 90 %); in practice it is usually close to 1 − α. At a site the
model never saw, no guarantee holds: the coverage measured there by ``liverstiffness evaluate``
is the evidence. The point estimate is the ensemble's geometric mean, which lies inside.

Subsets of the sequences: an exam without, say, its DWI is estimated less well, so its interval
must come from residuals measured the same way. Training keeps, beside the full residuals, the
out-of-fold residuals of every fold model run with each subset of T1w, T2w and DWI (the others
absent, as sequence dropout trained it), and ``interval(..., subset="t2w")`` uses those.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

METHOD = "K-fold CV+ (Barber et al., Ann. Stat. 2021) on ln(kPa) out-of-fold residuals"
FULL = "t1w+t2w+dwi"


def subset_label(key: str) -> str:
    """A subset key for people: "t1w+t2w" → "T1w + T2w"."""
    return key.replace("t1w", "T1w").replace("t2w", "T2w").replace("dwi", "DWI").replace("+", " + ")


def subset_key(sequences) -> str:
    """The name of a subset of the sequences, in their fixed order: "t1w+t2w+dwi", "t2w", …"""
    names = [s for s in ("t1w", "t2w", "dwi") if s in set(sequences)]
    if not names:
        raise ValueError("a subset needs at least one sequence")
    return "+".join(names)


def guarantee(coverage: float, n: int, k: int) -> float:
    """The CV+ lower bound on coverage for exchangeable exams (Theorem 4)."""
    alpha = 1 - coverage
    return max(0.0, 1 - 2 * alpha - min(2 * (1 - 1 / k) / (n / k + 1), (1 - k / n) / (k + 1)))


@dataclass(frozen=True)
class Calibration:
    coverage: float                 # nominal coverage 1 − α, e.g. 0.9
    residuals_log: tuple[float, ...]  # |ln y − ln ŷ| out of fold, one per training exam
    residual_fold: tuple[int, ...]    # the fold model each residual was measured on
    method: str = METHOD
    guaranteed_coverage: float = field(default=0.0)  # the CV+ bound for exchangeable exams
    # subset key → |ln y − ln ŷ| out of fold with only those sequences (same order as residual_fold)
    subset_residuals: dict = field(default_factory=dict)

    @property
    def n_calibration(self) -> int:
        return len(self.residuals_log)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["residuals_log"] = [round(float(r), 5) for r in self.residuals_log]
        d["residual_fold"] = [int(f) for f in self.residual_fold]
        d["n_calibration"] = self.n_calibration
        d["subset_residuals"] = {k: [round(float(r), 5) for r in v] for k, v in self.subset_residuals.items()}
        if not d["subset_residuals"]:
            del d["subset_residuals"]   # a model folder written before subsets reads as before
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(coverage=d["coverage"], residuals_log=tuple(d["residuals_log"]),
                   residual_fold=tuple(d["residual_fold"]), method=d.get("method", METHOD),
                   guaranteed_coverage=d.get("guaranteed_coverage", 0.0),
                   subset_residuals={k: tuple(v) for k, v in d.get("subset_residuals", {}).items()})

    def residuals_for(self, subset: str | None) -> tuple[tuple[float, ...], str | None]:
        """The residuals an exam with ``subset`` of the sequences is calibrated by, and None, or
        the full residuals and a warning when this model has none for that subset."""
        if subset in (None, FULL):
            return self.residuals_log, None
        if subset in self.subset_residuals:
            return self.subset_residuals[subset], None
        return self.residuals_log, (f"this model has no interval calibration for {subset_label(subset)} alone "
                                    "(it was trained before per-subset calibration): the interval is that of "
                                    "full exams and probably too narrow")

    def interval(self, fold_log: np.ndarray, subset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """fold_log [K, N]: ln(kPa) of each fold model for N exams with ``subset`` of the
        sequences (None: all) → (low, high) in kPa [N]."""
        fold_log = np.asarray(fold_log, float)
        r = np.asarray(self.residuals_for(subset)[0], float)
        centres = fold_log[np.asarray(self.residual_fold)]            # [n, N]: μ_k(i)(x)
        n = len(r)
        hi_rank = math.ceil(self.coverage * (n + 1))
        lo_rank = math.floor((1 - self.coverage) * (n + 1))
        upper = np.sort(centres + r[:, None], axis=0)
        lower = np.sort(centres - r[:, None], axis=0)
        # Too few exams for the rank: the interval is unbounded on that side.
        high = upper[hi_rank - 1] if hi_rank <= n else np.full(fold_log.shape[1], np.inf)
        low = lower[lo_rank - 1] if lo_rank >= 1 else np.full(fold_log.shape[1], -np.inf)
        return np.exp(low), np.exp(high)


def calibrate(y_kpa, oof_pred_kpa, fold, coverage: float = 0.9, subsets: dict | None = None) -> Calibration:
    """CV+ calibration from the out-of-fold predictions of a K-fold training run; ``subsets``:
    subset key → out-of-fold predictions (kPa) with only those sequences."""
    fold = np.asarray(fold, int)
    y = np.log(np.asarray(y_kpa, float))
    r = np.abs(y - np.log(np.asarray(oof_pred_kpa, float)))
    k = int(fold.max()) + 1
    by_subset = {key: tuple(np.abs(y - np.log(np.asarray(pred, float))).tolist())
                 for key, pred in (subsets or {}).items() if key != FULL}
    return Calibration(coverage=coverage, residuals_log=tuple(r.tolist()), residual_fold=tuple(fold.tolist()),
                       guaranteed_coverage=round(guarantee(coverage, len(r), k), 4), subset_residuals=by_subset)


def coverage_of(y_kpa, low, high) -> float:
    y = np.asarray(y_kpa)
    return float(np.mean((y >= np.asarray(low)) & (y <= np.asarray(high))))
