"""The server's persisted state: what a restarted run resumes from.

Why our own: FLARE 2.9's simulator starts its server with no snapshot (``snapshot = None`` in
``SimulatorRunner.start_server_app``) and FLARE's model-controller workflows (FedAvg among them)
keep no job snapshot; FLARE's maintainers advise saving the global model after each round in the
controller and reading it back. So the controller writes, after every completed round, the global
weights (tensors only) and ``progress.json`` (rounds completed, each round's pooled validation
error, the best round so far, and a fingerprint of the recipe and sites); a new run with the same
recipe, sites and state folder continues from the last completed round.

Files (all written atomically: a file is the old complete one or the new complete one)::

    progress.json        fingerprint, sites, completed_rounds, val_mse_by_round, best_round
    global_model.pt      the global weights after ``completed_rounds`` rounds
    best_model.pt        the weights of ``best_round`` (when it is not the latest)
    final_model.pt       the chosen weights (after the run)
    result.json          what the sites reported at the end (numbers only)
    received.jsonl       every message the server received: task, round, site, weight names and
                         shapes, the numbers (the privacy audit)
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..outputs import atomic_write_bytes, atomic_write_text
from ..stiffness.network import StiffnessTransformer
from .settings import Recipe

PROGRESS, GLOBAL, BEST, FINAL, RESULT, AUDIT = ("progress.json", "global_model.pt", "best_model.pt", "final_model.pt",
                                                "result.json", "received.jsonl")


def initial_weights(recipe: Recipe) -> dict:
    """The global starting weights: the network seeded by the recipe, its last layer × 0.1 as
    ``train_fold`` starts it (the head's bias is set by each site in round 0)."""
    torch.manual_seed(recipe.seed)
    net = StiffnessTransformer(recipe.model_config)
    with torch.no_grad():
        net.head[-1].weight.mul_(0.1)
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def shapes(recipe: Recipe) -> dict:
    return {k: tuple(v.shape) for k, v in StiffnessTransformer(recipe.model_config).state_dict().items()}


def save_weights(path: Path, params: dict) -> None:
    buf = io.BytesIO()
    torch.save({k: torch.as_tensor(np.asarray(v)).contiguous() for k, v in params.items()}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_weights(path: Path) -> dict:
    return {k: v.numpy() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}


def read_progress(state_dir: str | Path) -> dict | None:
    path = Path(state_dir) / PROGRESS
    return json.loads(path.read_text()) if path.is_file() else None


def write_progress(state_dir: str | Path, progress: dict) -> None:
    atomic_write_text(Path(state_dir) / PROGRESS, json.dumps(progress, indent=1))


def run_identity(recipe: Recipe, sites: list[str]) -> dict:
    return {"fingerprint": recipe.fingerprint(), "sites": sorted(sites)}


def same_run(progress: dict, recipe: Recipe, sites: list[str]) -> bool:
    ident = run_identity(recipe, sites)
    return all(progress.get(k) == v for k, v in ident.items())


def append_audit(state_dir: str | Path, entry: dict) -> None:
    with open(Path(state_dir) / AUDIT, "a") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
