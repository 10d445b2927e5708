"""Is an exam like the training exams *as the model sees it*? A distance in the network's own
feature space.

:mod:`..ood` compares a few intensity statistics with the training cohort's ranges. Real scans
can pass that and still be unlike anything the model learned from: healthy-donor T2w scans
(CHAOS) had every statistic in range and got a fibrosis category from the phantom-trained demo
model. The check here is the feature-space Mahalanobis distance of Lee et al. ("A simple unified
framework for detecting out-of-distribution samples and adversarial attacks", NeurIPS 2018),
on the vector the regression head reads (the pooled tokens), made small enough to ship:

* per fold model and per subset of the sequences (an exam without its DWI is embedded
  differently, so it is compared with training exams run the same way), the fold's held-out
  training exams' features are reduced by PCA to ``N_COMPONENTS`` directions;
* an exam's score under one fold is its whitened distance in those directions plus the energy
  outside them relative to the training exams' (so an exam off the training subspace counts too);
* each fold's threshold is the ``QUANTILE`` of its held-out exams' scores, and an exam is out of
  distribution when its scores exceed the thresholds on average over the folds (score ratio > 1).

So about 1 % of exams like the held-out training exams are flagged by construction; the
held-out site's rate is measured in ``bench/RESULTS.md``. Stored in ``feature_distribution.npz``
in the model folder (its SHA-256 in model.json).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

N_COMPONENTS = 16
QUANTILE = 0.99
# Fewer held-out exams per fold than this give no distribution (a 99th percentile of a handful of
# exams means nothing): such a model folder has no feature check, and its reports say so.
MIN_EXAMS_PER_FOLD = 50
FILE = "feature_distribution.npz"


@torch.no_grad()
def head_features(net, images, cov, known, device, present=None, batch: int = 32) -> np.ndarray:
    """[N, D] the vectors ``net``'s regression head reads (pooled tokens), with ``present``
    [N, n_sequences] the sequences shown (None: those with signal)."""
    captured = []
    hook = net.head.register_forward_pre_hook(lambda module, args: captured.append(args[0].float().cpu().numpy()))
    try:
        for s in range(0, len(images), batch):
            x = torch.as_tensor(np.asarray(images[s:s + batch]), dtype=torch.float32, device=device)
            c = torch.as_tensor(np.asarray(cov[s:s + batch]), dtype=torch.float32, device=device)
            k = torch.as_tensor(np.asarray(known[s:s + batch]), dtype=torch.bool, device=device)
            p = None if present is None else torch.as_tensor(np.asarray(present[s:s + batch]), device=device)
            net(x, c, k, p)
    finally:
        hook.remove()
    return np.concatenate(captured).reshape(len(images), -1)


def fit_fold(features: np.ndarray, n_components: int = N_COMPONENTS) -> dict:
    """One fold model's held-out features [n, D] → mean, PCA directions and scales, threshold."""
    f = np.asarray(features, np.float64)
    mean = f.mean(0)
    k = max(1, min(n_components, len(f) - 2, f.shape[1]))
    u, s, vt = np.linalg.svd(f - mean, full_matrices=False)
    lam = (s[:k] ** 2) / max(1, len(f) - 1) + 1e-8
    comps = vt[:k]
    resid = ((f - mean) - (f - mean) @ comps.T @ comps)
    res_scale = float(np.mean((resid ** 2).sum(1))) + 1e-8
    part = {"mean": mean, "components": comps, "variances": lam, "residual_energy": np.array(res_scale)}
    scores = score_fold(part, f)
    part["threshold"] = np.array(float(np.quantile(scores, QUANTILE)))
    return part


def score_fold(part: dict, features: np.ndarray) -> np.ndarray:
    """Whitened distance in the fold's principal directions + the energy outside them (relative)."""
    d = np.asarray(features, np.float64) - part["mean"]
    z = d @ part["components"].T
    resid = d - z @ part["components"]
    return (z ** 2 / part["variances"]).sum(1) + (resid ** 2).sum(1) / float(part["residual_energy"])


def fit_from_folds(models, images, cov, known, folds, device) -> dict[tuple[str, int], dict]:
    """Every fold model on the training exams it never saw, with each subset of the sequences
    (as sequence dropout shows them): (subset key, fold) → :func:`fit_fold`. Empty when a fold
    has fewer than MIN_EXAMS_PER_FOLD held-out exams."""
    from .augment import SUBSET_VARIANTS, ablation_inputs

    parts = {}
    folds = np.asarray(folds)
    if min(int(np.sum(folds == k)) for k in range(len(models))) < MIN_EXAMS_PER_FOLD:
        return parts
    for k, net in enumerate(models):
        held = np.flatnonzero(folds == k)
        x = np.asarray(images[held])
        with torch.no_grad():
            available = net.sequences_present(torch.as_tensor(x)).numpy()
        for key, variant in SUBSET_VARIANTS.items():
            present, _ = ablation_inputs(available, variant)
            parts[(key, k)] = fit_fold(head_features(net, x, cov[held], known[held], device, present))
    return parts


def describe_entry(sha: str) -> dict:
    """model.json's ``feature_distribution`` entry."""
    return {"file": FILE, "sha256": sha, "n_components": N_COMPONENTS, "quantile": QUANTILE}


def save(path: Path, parts: dict[tuple[str, int], dict]) -> str:
    """``parts``: (subset key, fold) → fit_fold's dict; returns the file's SHA-256."""
    arrays = {f"{subset}|{fold}|{name}": np.asarray(v, np.float32) for (subset, fold), part in parts.items()
              for name, v in part.items()}
    np.savez_compressed(path, **arrays)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load(path: Path) -> dict[tuple[str, int], dict]:
    parts: dict = {}
    with np.load(path) as data:
        for key in data.files:
            subset, fold, name = key.split("|")
            parts.setdefault((subset, int(fold)), {})[name] = data[key].astype(np.float64)
    return parts


def check(parts: dict, per_fold_features: list[np.ndarray], subset: str) -> dict | None:
    """The report's ``feature_distance`` for one exam: per_fold_features[f] is [D] under fold f.
    None when the model folder has no distribution for this subset."""
    ratios = []
    for fold, feats in enumerate(per_fold_features):
        part = parts.get((subset, fold))
        if part is None:
            return None
        ratios.append(float(score_fold(part, feats[None])[0] / float(part["threshold"])))
    ratio = float(np.mean(ratios))
    return {"method": f"Mahalanobis distance of the head's features (PCA {N_COMPONENTS} + residual), per fold, "
                      f"over its {QUANTILE:.0%} quantile on held-out training exams with the same sequences",
            "subset": subset, "ratio_to_threshold": round(ratio, 3), "per_fold": [round(r, 3) for r in ratios],
            "in_distribution": ratio <= 1.0}
