"""The result of a federated run as an ordinary model folder (what ``liverstiffness train`` writes).

Why a folder like any other: ``predict``, ``evaluate``, ``serve``, the Slicer panel and
``Ensemble.load`` then use it unchanged. It holds one network (``fold0.pt``: the global model of
the round with the lowest pooled validation error), ``model.json`` (``checkpoint.write_meta``)
with a split-conformal interval from the sites' held-out residuals, the held-out metrics pooled
from the sites' sums (under ``metrics.cross_validation``, where the readers look, marked as
held-out), the ridge baseline when it could be fitted from sums, ``MODEL_CARD.md``
(``model_card.write_model_card``, with the sections that describe cross-validation rewritten
for federated training and a section on the federation) and ``federated.json``.

Not in it, because they cannot be had without a site sending single exams' values:
``input_statistics`` (percentiles, minima, maxima of the inputs: reports say the range check
was not made), ``feature_distribution.npz``, out-of-fold predictions, bootstrap CIs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..outputs import atomic_write_text
from ..preprocess import PreprocessOptions
from ..stiffness.augment import ABLATIONS
from ..stiffness.baseline import SHAPE, STAT_CHANNELS, STATS, RidgeBaseline
from ..stiffness.checkpoint import EnsembleMeta, save_fold, write_meta
from ..stiffness.covariates import ALL_COVARIATES
from ..stiffness.model_card import write_model_card
from ..stiffness.network import StiffnessTransformer
from ..stiffness.train import CLINICAL_USE, SYNTHETIC_USE
from . import pooling, state
from .settings import Recipe

FEDERATED_FILE = "federated.json"
NOT_POOLED = ("the training inputs' ranges (model.json input_statistics: percentiles, minima and maxima are single "
              "exams' values), so predictions say the out-of-range check was not made; the head-feature distribution "
              "(feature_distribution.npz); out-of-fold predictions; bootstrap confidence intervals")


def ridge_feature_names(n_covariates: int = len(ALL_COVARIATES)) -> list[str]:
    """The names ``stiffness.baseline.features`` gives its columns (a test holds them equal)."""
    names = [f"{c}_{s}" for c in STAT_CHANNELS for s in STATS] + [f"{c}_available" for c in STAT_CHANNELS]
    names += ["liver_volume_ml", *SHAPE]
    return names + [f"cov{i}" for i in range(n_covariates)] + [f"cov{i}_known" for i in range(n_covariates)]


def _replace_section(text: str, heading: str, new: list[str]) -> str:
    """Replace the section whose heading starts with ``heading`` (up to the next ``## ``), or
    append ``new`` when there is none."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + "\n".join(new) + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[:start] + new + lines[end:])


def _card(model_dir: Path, meta: EnsembleMeta, result: dict, recipe: Recipe) -> None:
    path = write_model_card(model_dir, meta)
    text = path.read_text()
    cv = meta.metrics["cross_validation"]
    t, b = cv["transformer"], cv.get("baseline") or {}
    ridge = result["ridge"]
    table = ["## Held-out exams at each site (federated training: no cross-validation)", "",
             f"Each site kept {recipe.held_out_fraction:.0%} of its patients out of training; the numbers below pool "
             "all sites' held-out exams from per-site sums (no site sent an exam's values).", "",
             "| model | n | Pearson r | MAE (kPa) |", "|---|---|---|---|",
             f"| transformer (global model) | {t.get('n')} | {t.get('pearson_r')} | {t.get('mae_kpa')} |",
             f"| ridge baseline | {b.get('n', '')} | {b.get('pearson_r', 'not fitted')} | {b.get('mae_kpa', '')} |",
             *[f"| ablation: {name.replace('_', ' ')} | {m.get('n')} | {m.get('pearson_r')} | {m.get('mae_kpa')} |"
               for name, m in cv.get("ablation", {}).items() if name != "full"], ""]
    text = _replace_section(text, "## Cross-validation", table)
    cal = meta.calibration
    text = _replace_section(text, "## Uncertainty", [
        "## Uncertainty", "",
        (f"Split conformal: nominal coverage {cal.coverage:.0%} from {cal.n_calibration} absolute ln residuals of the "
         "held-out exams of every site, which each site computed itself and sent without the exams. Guarantee for "
         f"exams exchangeable with those held-out exams (the same sites, scanners and population): coverage ≥ "
         f"{cal.coverage:.0%}; none at a site that took no part, where the measured coverage is the evidence."
         if cal else "none (no site reported held-out residuals)"), ""])
    text = _replace_section(text, "## Weights", [
        "## Weights", "",
        *[f"- `{f['file']}` SHA-256 `{f['sha256']}` (the global model after round {f['round']} of "
          f"{result['rounds']}, chosen by the pooled validation error)" for f in meta.folds], ""])
    text = text.replace("out-of-fold r", "held-out r").replace(
        f"An ensemble of {len(meta.folds)} cross-validation fold models", "One global model (FedAvg over the sites)")
    withheld = ridge.get("withheld") or {}
    ridge_line = (f"Fitted from the sums (n, Σx, Σy, XᵀX, Xᵀy, yᵀy) of {ridge['sites_sending_sums']} sites' training "
                  f"exams; penalty {ridge.get('alpha')} chosen by {ridge.get('alpha_choice')}." if ridge.get("fitted") else
                  "Not fitted: a ridge from sums needs at least two sites sending them, and a site sends them only "
                  "when its training exams number at least twice the features + 2 (fewer would let XᵀX reveal single "
                  f"exams); {ridge['sites_sending_sums']} site(s) sent sums"
                  + (", withheld by " + ", ".join(f"{s} ({w['n_training']} training exams, {w['min_exams']} needed)"
                                                  for s, w in withheld.items()) if withheld else "")
                  + ". Pooling the features to fit it would send single exams' values.")
    split = meta.trained_on["split"]
    history = ", ".join(f"{k}: {v}" for k, v in result["val_mse_by_round"].items())
    text = text.rstrip("\n") + "\n\n" + "\n".join([
        "## Federated training", "",
        f"Trained with NVIDIA FLARE (FedAvg, weighted by training exams): {result['rounds']} rounds of "
        f"{recipe.local_epochs} local epoch(s) at {len(result['sites'])} sites ({', '.join(result['sites'])}), "
        f"at least {result['min_clients']} per round. Sites reporting at the end: {', '.join(result['sites_reported'])}.",
        f"- Exams: {split['n_training']} training, {split['n_early_stopping']} early stopping (round choice), "
        f"{split['n_held_out']} held out (interval, metrics), each split by patient at each site.",
        f"- Round chosen: {result['best_round']} (pooled validation MSE, ln kPa², by round: {history or 'none'}).",
        "- What left each site: the network's weights after each round, sums of squared validation errors and "
        "counts, held-out absolute ln residuals (sorted, no exam attached), agreement sums, counts per vendor and "
        "field strength, a 0.1 kPa histogram of the reference stiffness, and the ridge sums where allowed.",
        f"- Not computed, since it would need single exams' values: {NOT_POOLED}.",
        f"- Ridge baseline: {ridge_line}",
        "- FedProx: not offered (the local step is `train_fold`, which has no place for a proximal loss term).",
        *([f"- Resumed after round(s) {', '.join(map(str, result['resumed_at']))}."] if result.get("resumed_at") else []),
        ""])
    atomic_write_text(path, text)


def write_model_folder(state_dir: str | Path, out_dir: str | Path, options: dict) -> Path:
    """The model folder from the server's state after a finished run (``state.RESULT`` and
    ``state.FINAL``); ``options``: ``name``, ``synthetic``."""
    state_dir, out = Path(state_dir), Path(out_dir)
    result = json.loads((state_dir / state.RESULT).read_text())
    recipe = Recipe.from_dict(result["recipe"])
    reports = list(result["reports"].values())
    out.mkdir(parents=True, exist_ok=True)

    net = StiffnessTransformer(recipe.model_config)
    net.load_state_dict({k: torch.as_tensor(v) for k, v in state.load_weights(state_dir / state.FINAL).items()})
    for stale in set(out.glob("fold*.pt")) - {out / "fold0.pt"}:
        stale.unlink()
    sha = save_fold(net, out / "fold0.pt")

    ablation = {v: pooling.metrics_from_sums(pooling.add_sums(r["sums"][v] for r in reports)) for v in ABLATIONS}
    baseline = pooling.metrics_from_sums(pooling.add_sums(r.get("baseline_sums") for r in reports)) \
        if result.get("baseline") else {}
    if result.get("baseline"):
        d = result["baseline"]
        RidgeBaseline(d["names"], np.asarray(d["mean"]), np.asarray(d["scale"]), np.asarray(d["coef"]),
                      d["intercept"], d["alpha"]).save(out / "baseline.json")
    else:
        (out / "baseline.json").unlink(missing_ok=True)
    trained_on = pooling.pool_counts([r["counts"] for r in reports], [r["kpa_histogram"] for r in reports])
    federated = {key: result[key] for key in ("rounds", "best_round", "val_mse_by_round", "sites", "sites_validated",
                                              "sites_reported", "min_clients", "ridge", "resumed_at")}
    federated.update({"local_epochs": recipe.local_epochs, "held_out_fraction": recipe.held_out_fraction,
                      "val_fraction": recipe.val_fraction, "not_computed": NOT_POOLED,
                      "per_site_held_out": {s: pooling.metrics_from_sums(r["sums"]["full"])
                                            for s, r in result["reports"].items()}})
    split = trained_on["split"]
    fold = {"fold": 0, "file": "fold0.pt", "sha256": sha, "round": result["best_round"], "best_epoch": None,
            "n_train": split["n_training"], "n_early_stopping": split["n_early_stopping"],
            "n_held_out": split["n_held_out"], "held_out": ablation["full"]}
    synthetic = bool(options.get("synthetic"))
    meta = EnsembleMeta(
        name=options.get("name") or "liverstiffness-federated", version=__version__, config=recipe.model_config,
        spec=recipe.input_spec, preprocess=PreprocessOptions(register=recipe.register, n4=recipe.n4),
        calibration=pooling.calibration([r["residuals"] for r in reports], recipe.coverage), folds=[fold],
        trained_on=trained_on,
        metrics={"cross_validation": {"transformer": ablation["full"], "baseline": baseline, "ablation": ablation,
                                      "kind": "held-out exams of every site, pooled from per-site sums (federated)"},
                 "federated": federated},
        intended_use=SYNTHETIC_USE if synthetic else CLINICAL_USE, synthetic=synthetic, input_statistics=None)
    atomic_write_text(out / FEDERATED_FILE, json.dumps(federated, indent=1))
    write_meta(out, meta)
    _card(out, meta, result, recipe)
    return out
