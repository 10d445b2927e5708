"""What may leave a site: the three messages a site sends, built here and checked on arrival.

Why one module: the privacy promise ("weights and aggregate numbers, never images or
identifiers") is only as good as the one place that builds what a site sends and the one check
the server runs on everything it receives (``check``). A message that fails the check is refused
and left out of the round.

- ``train``: the network's ``state_dict`` tensors after local training (exactly its parameter and
  buffer names, with their shapes), the validation error of the model the site received (a sum
  of squares and a count) and the number of training exams (FedAvg's weight).
- ``validate``: the same validation sums for the final global model, and the ridge baseline's
  sufficient statistics of the site's training exams (sums, or nothing when the site has too few
  exams for them to hide single exams; ``ridge.py``).
- ``report``: on the site's held-out exams, the absolute ln residuals of the chosen model (sorted,
  per subset of the sequences, without exam order or identity), agreement sums per ablation and
  for the ridge, counts of exams and patients per split, vendor and field strength, and a
  0.1 kPa histogram of the reference stiffness.

Leaves are numbers; strings appear only as dictionary keys from a fixed vocabulary, or as the
category labels of counts (vendor, field strength, the manifest's site label: at most 32
characters). No list nests deeper than two levels (the ridge's Gram matrix), so no image fits.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np

from ..stiffness.augment import ABLATIONS, SUBSET_VARIANTS

TRAIN, VALIDATE, REPORT = "train", "validate", "report"
TASKS = (TRAIN, VALIDATE, REPORT)
NUM_STEPS = "NUM_STEPS_CURRENT_ROUND"       # FLARE's FedAvg weight (nvflare FLMetaKey)

SUM_FIELDS = ("n", "sy", "sp", "syy", "spp", "syp", "sabs")
RIDGE_FIELDS = ("n", "sx", "sy", "xtx", "xty", "yty")
COUNT_GROUPS = ("by_vendor", "by_field_strength_T", "by_site")
METRIC_KEYS = {
    TRAIN: {"val_sse", "n_val"},
    VALIDATE: {"val_sse", "n_val", "ridge_sums", "ridge_withheld"},
    REPORT: {"n_held_out", "residuals", "sums", "baseline_sums", "counts", "kpa_histogram"},
}
# Every dictionary key a message may use below its top level (besides count labels).
VOCABULARY = (set(SUM_FIELDS) | set(RIDGE_FIELDS) | set(SUBSET_VARIANTS) | set(ABLATIONS) | set(COUNT_GROUPS)
              | {"n_exams", "n_patients", "n_training", "n_early_stopping", "n_held_out", "n_features", "min_exams"})
MAX_LABEL = 32
MAX_LIST = 100_000


class MessageRefused(ValueError):
    """A site's message holds something that may not leave a site."""


def _number(x) -> float | int:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    return float(x)


def train_update(state: dict, n_train: int, val_sse: float, n_val: int) -> tuple[dict, dict, dict]:
    """(params, metrics, meta) of a round: the tensors of the state_dict, detached on the CPU."""
    params = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return params, {"val_sse": _number(val_sse), "n_val": _number(n_val)}, {NUM_STEPS: _number(n_train)}


def validation(val_sse: float, n_val: int, ridge_sums: dict | None, ridge_withheld: dict | None) -> dict:
    return {"val_sse": _number(val_sse), "n_val": _number(n_val), "ridge_sums": ridge_sums,
            "ridge_withheld": ridge_withheld}


def report(n_held_out: int, residuals: dict, sums: dict, baseline_sums: dict | None, counts: dict,
           kpa_histogram: list) -> dict:
    return {"n_held_out": _number(n_held_out), "residuals": residuals, "sums": sums, "baseline_sums": baseline_sums,
            "counts": counts, "kpa_histogram": kpa_histogram}


def _check_leaf(x, where: str) -> None:
    if x is None or isinstance(x, (bool, np.bool_)):
        return
    if not isinstance(x, (Real, np.integer, np.floating)):
        raise MessageRefused(f"{where}: {type(x).__name__} is not a number")
    if not math.isfinite(float(x)):
        raise MessageRefused(f"{where}: not a finite number")


def _check_value(x, where: str, depth: int = 0, labels: bool = False) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            if not isinstance(k, str):
                raise MessageRefused(f"{where}: a key that is not a string")
            if labels:
                if len(k) > MAX_LABEL:
                    raise MessageRefused(f"{where}: a category label longer than {MAX_LABEL} characters")
            elif k not in VOCABULARY:
                raise MessageRefused(f"{where}: key {k[:40]!r} is not one a site may send")
            _check_value(v, f"{where}.{k}", depth, labels=k in COUNT_GROUPS)
        return
    if isinstance(x, (list, tuple, np.ndarray)):
        arr = np.asarray(x, dtype=object) if not isinstance(x, np.ndarray) else x
        if depth >= 2 or arr.ndim > 2 - depth:
            raise MessageRefused(f"{where}: nested deeper than a matrix")
        if len(x) > MAX_LIST:
            raise MessageRefused(f"{where}: more than {MAX_LIST} values")
        for i, v in enumerate(x):
            _check_value(v, f"{where}[{i}]", depth + 1)
        return
    _check_leaf(x, where)


def check(task: str, params: dict | None, metrics: dict | None, meta: dict | None, shapes: dict) -> None:
    """Refuse (``MessageRefused``) anything but the message ``task`` allows. ``shapes``: the
    network's state_dict names → shapes (what a ``train`` message must hold, exactly)."""
    if task not in TASKS:
        raise MessageRefused(f"unknown task {task!r}")
    params = params or {}
    if task == TRAIN:
        if set(params) != set(shapes):
            extra, missing = sorted(set(params) - set(shapes)), sorted(set(shapes) - set(params))
            raise MessageRefused(f"weights are not the network's state_dict (extra {extra[:3]}, missing {missing[:3]})")
        for name, value in params.items():
            if tuple(np.shape(value)) != tuple(shapes[name]):
                raise MessageRefused(f"weight {name} has shape {tuple(np.shape(value))}, not {tuple(shapes[name])}")
            if not np.all(np.isfinite(np.asarray(value, dtype=float))):
                raise MessageRefused(f"weight {name} is not finite (the site's training diverged)")
        steps = (meta or {}).get(NUM_STEPS)
        _check_leaf(steps, NUM_STEPS)
        if steps is None:
            raise MessageRefused(f"no {NUM_STEPS} (the FedAvg weight)")
    elif params:
        raise MessageRefused(f"a {task} message carries no weights")
    metrics = metrics or {}
    unexpected = set(metrics) - METRIC_KEYS[task]
    if unexpected:
        raise MessageRefused(f"{task} message has fields {sorted(unexpected)} a site may not send")
    for key, value in metrics.items():
        _check_value(value, key)
