"""Per-subset interval calibration (and the feature distribution) for a model folder trained
before they existed.

``train`` now keeps, for every subset of T1w, T2w and DWI, the out-of-fold residuals of its fold
models run with only those sequences (:mod:`.interval`). A model folder trained earlier has the
full residuals only; given the cohort it was trained on, this recomputes the same out-of-fold
predictions — each fold model on the exams it never saw, with each subset — and adds them,
without retraining. The full-sequence residuals are recomputed too and must match those stored
(else the cohort is not the one the model was trained on, and nothing is written). The same pass
fits the held-out exams' head-feature distribution (:mod:`.embedding_ood`), as training does.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..manifest import read_manifest
from .augment import SUBSET_VARIANTS
from .checkpoint import read_meta, write_meta
from .data import load_cohort
from .embedding_ood import FILE, describe_entry, fit_from_folds, save
from .ensemble import Ensemble, predict_log
from .interval import FULL, Calibration

# Residuals agree to this (ln kPa) when the cohort is the training cohort: the stored ones are
# rounded to 5 decimals, and CPU kernels differ in the last bits between machines.
MATCH_TOLERANCE = 2e-3


def subset_oof(model_dir: str | Path, manifest: str | Path, cache_dir: Path | None = None, workers: int = 0,
               progress: bool = True, device: str = "auto") -> tuple[list[str], np.ndarray, np.ndarray, dict, dict]:
    """Out-of-fold ln(kPa) of each subset for the exams of ``oof_predictions.csv`` in its order:
    (case ids, fold of each, ln reference, subset key → ln prediction, the feature distribution)."""
    ens = Ensemble.load(model_dir, device)
    oof_csv = Path(ens.model_dir) / "oof_predictions.csv"
    if not oof_csv.is_file():
        raise InputError(f"model {model_dir}", "has no oof_predictions.csv (the folds of its training exams)")
    with open(oof_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {r.case_id: r for r in read_manifest(manifest, require_label=True)}
    missing = [row["case_id"] for row in rows if row["case_id"] not in by_id]
    if missing:
        raise InputError(f"manifest {manifest}", f"lacks {len(missing)} training exam(s) of the model, e.g. {missing[0]}")
    records = [by_id[row["case_id"]] for row in rows]
    folds = np.array([int(row["fold"]) for row in rows])
    data = load_cohort(records, ens.meta.spec, ens.meta.preprocess, cache_dir, workers, progress, with_maps=False)
    if data.failures:
        raise InputError(f"manifest {manifest}", f"{len(data.failures)} exam(s) failed preprocessing, e.g. "
                                                 f"{next(iter(data.failures.items()))}")
    preds = {key: np.zeros(len(records)) for key in SUBSET_VARIANTS}
    for k, net in enumerate(ens.models):
        held = np.flatnonzero(folds == k)
        for key, variant in SUBSET_VARIANTS.items():
            preds[key][held] = predict_log([net], data.images[held], data.cov[held], data.known[held], ens.device,
                                           variant=variant)[0]
    parts = fit_from_folds(ens.models, data.images, data.cov, data.known, folds, ens.device)
    return [r.case_id for r in records], folds, data.log_kpa.astype(float), preds, parts


def add_subset_calibration(model_dir: str | Path, manifest: str | Path, cache_dir: Path | None = None,
                           workers: int = 0, progress: bool = True) -> dict:
    """Add per-subset residuals to ``model_dir``'s calibration (model.json rewritten) and the
    out-of-fold metrics of each subset to its cross-validation metrics; returns those metrics."""
    from .evaluate import cv_metrics

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    cal = meta.calibration
    _, folds, y_log, preds, parts = subset_oof(model_dir, manifest, cache_dir, workers, progress)
    full = np.abs(y_log - preds[FULL])
    worst = float(np.max(np.abs(full - np.asarray(cal.residuals_log))))
    if len(full) != cal.n_calibration or worst > MATCH_TOLERANCE or list(folds) != list(cal.residual_fold):
        raise InputError(f"manifest {manifest}", f"is not the cohort model {model_dir} was trained on (its out-of-fold "
                                                 f"residuals differ by up to {worst:.3g} ln kPa)")
    subsets = {key: tuple(np.abs(y_log - p).tolist()) for key, p in preds.items() if key != FULL}
    meta.calibration = Calibration(cal.coverage, cal.residuals_log, cal.residual_fold, cal.method,
                                   cal.guaranteed_coverage, subsets)
    ablation = meta.metrics.setdefault("cross_validation", {}).setdefault("ablation", {})
    by_subset = {}
    for key, variant in SUBSET_VARIANTS.items():
        ablation[variant] = cv_metrics(y_log, preds[key])
        by_subset[key] = ablation[variant]
    if parts:
        meta.feature_distribution = describe_entry(save(model_dir / FILE, parts))
    write_meta(model_dir, meta)
    return by_subset
