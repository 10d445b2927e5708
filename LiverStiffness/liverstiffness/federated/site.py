"""One site's side of federated training: its exams, its splits, a round of the project's own
training step, and the numbers it reports.

Why separate from ``client``: this is the site's work without FLARE (``client`` only moves its
inputs and outputs through FLARE's Client API), so it reuses ``train``'s pieces unchanged —
``load_cohort`` with a cache, ``inner_split`` by patient, ``train_fold`` with its augmentation
and sequence dropout — and every message it builds goes through ``messages``.

Splits, by patient, fixed by the recipe's seed: a held-out part (``held_out_fraction``: the
interval's residuals and the held-out metrics; never trained on), and of the rest an
early-stopping part (``val_fraction``: the validation error that picks the round) and the
training part.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..manifest import ExamRecord, read_manifest
from ..preprocess import PreprocessOptions
from ..stiffness.augment import ABLATIONS, SUBSET_VARIANTS
from ..stiffness.baseline import RidgeBaseline, features
from ..stiffness.data import CohortArrays, cohort_counts, load_cohort
from ..stiffness.ensemble import predict_log
from ..stiffness.folds import inner_split
from ..stiffness.loop import DistInfo
from ..stiffness.network import StiffnessTransformer
from ..stiffness.train import fit_summary_standardisation, train_fold
from . import messages, pooling, ridge
from .settings import Recipe

#: Patients a site needs: one each for training, early stopping and the held-out part.
MIN_PATIENTS = 3


def check_records(records: list[ExamRecord], where: str) -> None:
    """A site's manifest must give every split at least one patient."""
    patients = len({r.patient_id for r in records})
    if patients < MIN_PATIENTS:
        raise InputError(where, f"has {patients} patient(s); a site needs at least {MIN_PATIENTS} (training, "
                                "early stopping, held-out calibration)")


def split(records: list[ExamRecord], recipe: Recipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training, early-stopping, held-out) exam indices, grouped by patient."""
    rest, held = inner_split(records, recipe.held_out_fraction, recipe.seed)
    tr, va = inner_split([records[i] for i in rest], recipe.val_fraction, recipe.seed + 1)
    return rest[tr], rest[va], held


@dataclass
class Site:
    name: str
    data: CohortArrays
    train: np.ndarray
    val: np.ndarray
    held: np.ndarray
    device: torch.device
    log_path: Path | None = None

    def log(self, entry: dict) -> None:
        if self.log_path is not None:
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps({"site": self.name, **entry}) + "\n")

    @property
    def fit_part(self) -> np.ndarray:
        """The exams the model learns from (training and early stopping), never the held-out ones."""
        return np.sort(np.concatenate([self.train, self.val]))


def load_site(name: str, manifest: str | Path, recipe: Recipe, work: str | Path, *, workers: int = 0,
              device: str = "auto", progress: bool = False) -> Site:
    """Read and preprocess the site's manifest (cached under ``work``) and split it."""
    from ..devices import resolve_device

    records = read_manifest(manifest, require_label=True)
    check_records(records, f"manifest {manifest}")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    options = PreprocessOptions(register=recipe.register, n4=recipe.n4)
    data = load_cohort(records, recipe.input_spec, options, work / "cache", workers, progress)
    if data.failures:
        raise InputError(f"manifest {manifest}", f"{len(data.failures)} case(s) failed preprocessing, e.g. "
                                                 f"{next(iter(data.failures.items()))}")
    train, val, held = split(data.records, recipe)
    return Site(name, data, train, val, held, resolve_device(device), work / "train_log.jsonl")


def network(params: dict, recipe: Recipe, device: torch.device) -> StiffnessTransformer:
    net = StiffnessTransformer(recipe.model_config)
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in params.items()})
    return net.to(device).eval()


def starting_state(params: dict, recipe: Recipe, site: Site) -> dict:
    """Round 0: what ``train_fold`` does for a fresh network, on the global starting weights — the
    summary token's standardisation from this site's training exams and the output starting at
    their mean ln kPa. FedAvg then averages them, weighted by training exams: the mean of the
    means is the pooled mean; the standard deviations are averaged (between-site spread of the
    means is left out)."""
    net = network(params, recipe, site.device)
    train = site.data.subset(site.train)
    fit_summary_standardisation(net, train.images, site.device)
    with torch.no_grad():
        # One training exam has no SD: standardise by 1 rather than send NaN into the average.
        net.stats_std.copy_(torch.where(torch.isfinite(net.stats_std), net.stats_std, torch.ones_like(net.stats_std)))
        net.head[-1].bias.fill_(float(train.log_kpa.mean()))
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def validation_error(site: Site, params: dict, recipe: Recipe) -> tuple[float, int]:
    """Σ (ln ŷ − ln y)² of ``params`` over the early-stopping exams, and their number."""
    val = site.data.subset(site.val)
    pred = predict_log([network(params, recipe, site.device)], val.images, val.cov, val.known, site.device)[0]
    return float(np.sum((pred - val.log_kpa) ** 2)), int(len(val.records))


def train_round(site: Site, params: dict, round_index: int, recipe: Recipe) -> tuple[dict, dict]:
    """One round of local training from the global weights: ``train_fold`` for ``local_epochs``."""
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in params.items()}
    if round_index == 0:
        state = starting_state(state, recipe, site)
    cfg = recipe.train_config(round_index)
    net, info = train_fold(site.data.subset(site.train), site.data.subset(site.val), cfg,
                           recipe.seed * 100 + round_index, site.device, DistInfo(),
                           f"{site.name} round {round_index + 1}/{recipe.rounds}", site.log, state)
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}, info


def train_message(site: Site, params: dict, round_index: int, recipe: Recipe) -> tuple[dict, dict, dict]:
    """Validate the received model, train a round, and build the ``train`` message."""
    val_sse, n_val = validation_error(site, params, recipe)
    state, info = train_round(site, params, round_index, recipe)
    site.log({"round": round_index, "received_val_mse": val_sse / max(1, n_val), **info})
    return messages.train_update(state, len(site.train), val_sse, n_val)


def _features(site: Site, idx: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, list[str]]:
    part = site.data.subset(idx)
    spec = recipe.input_spec
    return features(part.images, part.cov, part.known, spec.channels, float(np.prod(spec.spacing_mm)) / 1000.0)


def validate_message(site: Site, params: dict, recipe: Recipe) -> dict:
    """The final global model's validation sums and the ridge's sums of the training exams (when
    there are enough of them to hide single exams)."""
    val_sse, n_val = validation_error(site, params, recipe)
    X, _ = _features(site, site.fit_part, recipe)
    y = site.data.log_kpa[site.fit_part]
    needed = ridge.min_exams(X.shape[1])
    if len(y) >= needed:
        return messages.validation(val_sse, n_val, ridge.site_sums(X, y), None)
    return messages.validation(val_sse, n_val, None, {"n_training": len(y), "min_exams": needed, "n_features": X.shape[1]})


def report_message(site: Site, params: dict, baseline: dict | None, recipe: Recipe) -> dict:
    """The chosen model on the held-out exams: residuals per subset, agreement sums per ablation
    (and of the ridge, when the server sent one), counts and the stiffness histogram."""
    held = site.data.subset(site.held)
    net = network(params, recipe, site.device)
    y = held.log_kpa.astype(float)
    preds = {v: predict_log([net], held.images, held.cov, held.known, site.device, variant=v)[0] for v in ABLATIONS}
    residuals = {key: sorted(round(float(r), 5) for r in np.abs(y - preds[v])) for key, v in SUBSET_VARIANTS.items()}
    sums = {v: pooling.agreement_sums(np.exp(y), np.exp(p)) for v, p in preds.items()}
    baseline_sums = None
    if baseline:
        base = RidgeBaseline(baseline["names"], np.asarray(baseline["mean"]), np.asarray(baseline["scale"]),
                             np.asarray(baseline["coef"]), baseline["intercept"], baseline["alpha"])
        X, names = _features(site, site.held, recipe)
        if names == base.names:
            baseline_sums = pooling.agreement_sums(np.exp(y), np.exp(base.predict_log(X)))
    counts = {**cohort_counts(site.data.records), "n_training": len(site.train), "n_early_stopping": len(site.val),
              "n_held_out": len(site.held)}
    kpa = [r.stiffness_kpa for r in site.data.records]
    return messages.report(len(site.held), residuals, sums, baseline_sums, counts, pooling.histogram(kpa))
