"""One patient-grouped early-stopping split, scored on a held-out cohort: the experiment the
ablations (readout, training-set size) and the one-off training experiments here all run."""
from __future__ import annotations

import time


def train_and_score(train, test, cfg, seed: int, desc: str, ridge: bool = True, init_state: dict | None = None,
                    keep_predictions: bool = False) -> dict:
    """Train ``train_fold`` on ``train`` (CohortArrays; ``cfg.val_fraction`` of its patients stop it
    early), then Pearson r on ``test`` of the full model, of the same model without its image tokens
    and (``ridge``) of the ridge baseline fitted on all of ``train``. One thread: callers run jobs
    side by side. ``train_fold`` is looked up when called, so experiments may patch the module.
    ``init_state``: starting weights (a model's, or a pretrained encoder's); ``keep_predictions``: the
    row also holds each variant's test predictions (ln kPa) under "predictions"."""
    import numpy as np
    import torch
    from scipy.stats import pearsonr

    import liverstiffness.stiffness.train as T
    from liverstiffness.stiffness.baseline import RidgeBaseline, features
    from liverstiffness.stiffness.ensemble import predict_log
    from liverstiffness.stiffness.folds import inner_split

    torch.set_num_threads(1)
    tr, va = inner_split(train.records, cfg.val_fraction, seed)
    t = time.perf_counter()
    net, info = T.train_fold(train.subset(tr), train.subset(va), cfg, seed, torch.device("cpu"), T.DistInfo(), desc,
                             lambda entry: None, init_state)
    row = {"best_epoch": info["best_epoch"], "minutes": round((time.perf_counter() - t) / 60, 1)}
    predictions = {}
    for variant in ("full", "without_image_tokens"):
        pred = predict_log([net], test.images, test.cov, test.known, torch.device("cpu"), variant=variant)[0]
        row[variant] = float(pearsonr(test.log_kpa, pred)[0])
        predictions[variant] = pred
    if keep_predictions:
        row["predictions"] = predictions
    if ridge:
        voxel_ml = float(np.prod(cfg.spec.spacing_mm)) / 1000.0
        X, names = features(train.images, train.cov, train.known, cfg.spec.channels, voxel_ml)
        Xt, _ = features(test.images, test.cov, test.known, cfg.spec.channels, voxel_ml)
        row["ridge"] = float(pearsonr(test.log_kpa, RidgeBaseline.fit(X, train.log_kpa, names).predict_log(Xt))[0])
    return row
