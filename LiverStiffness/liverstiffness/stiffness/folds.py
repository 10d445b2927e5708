"""Cross-validation folds grouped by patient and balanced across sites.

Repeat exams of one patient always fall in the same fold (no leakage through anatomy), and
scikit-learn's StratifiedGroupKFold spreads each site's patients evenly over the folds.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ..errors import InputError
from ..manifest import ExamRecord


def make_folds(records: list[ExamRecord], k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) for each record."""
    patients = [r.patient_id for r in records]
    n_patients = len(set(patients))
    if k < 2:
        raise InputError("--folds", f"must be at least 2, got {k}")
    if n_patients < k:
        raise InputError("--folds", f"{k} folds need at least {k} patients; the manifest has {n_patients}")
    sites = np.array([r.site or "?" for r in records])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.full(len(records), -1)
    for i, (_, test) in enumerate(splitter.split(np.zeros(len(records)), sites, groups=patients)):
        fold[test] = i
    return fold


def inner_split(records: list[ExamRecord], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient-grouped split of a training part into (train, early-stopping validation) indices."""
    rng = np.random.default_rng(seed)
    patients = sorted({r.patient_id for r in records})
    rng.shuffle(patients)
    n_val = max(1, int(round(fraction * len(patients))))
    val_p = set(patients[:n_val])
    is_val = np.array([r.patient_id in val_p for r in records])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
