"""Train the liver segmentation model: k folds over cases, the fold networks are the ensemble.

Every case is held out by exactly one fold network, which scores it on the case's own grid
(Dice, HD95, mean surface distance against the manual label): these are the numbers reported
as "never seen in training". Real and synthetic cases are split into folds separately, so each
fold holds out its share of both. The shipped model runs all k networks and averages them (each
saw (k−1)/k of the cases); its score on new data is expected at or above the single networks'.

Reproducible: the folds, the sampling and the augmentation follow ``seed`` (and the fold index),
so running the folds one after another or in parallel worker processes gives the same networks.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .config import SegTrainConfig
from .data import SegCase
from .metrics import compare
from .model_folder import SegInference, SegModelMeta, save_weights, write_meta
from .network import build_network

SOURCES = ("real", "synthetic")


def assign_folds(cases: list[SegCase], k: int, seed: int) -> list[int]:
    """Fold index per case: each source shuffled (seeded) and dealt round-robin; a case whose
    group is a case dealt before (a phantom built from a CHAOS case) follows it into its fold."""
    rng = np.random.default_rng(seed)
    fold = [0] * len(cases)
    fold_of_group: dict[str, int] = {}
    for source in SOURCES:
        idx = [i for i, c in enumerate(cases) if c.source == source]
        n = 0
        for i in rng.permutation(idx):
            group = cases[int(i)].group
            if group in fold_of_group:
                fold[int(i)] = fold_of_group[group]
                continue
            fold[int(i)] = fold_of_group[group] = n % k
            n += 1
    return fold


def _lr(step: int, cfg: SegTrainConfig) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to zero."""
    warm = max(1, cfg.steps // 20)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, cfg.steps - warm)))


def train_network(train_cases: list[SegCase], cfg: SegTrainConfig, seed: int, device: torch.device,
                  log=None) -> torch.nn.Module:
    """One network on ``train_cases`` for ``cfg.steps`` steps (Dice + cross-entropy loss)."""
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    from .augment import augmented_batch, case_weights, training_transforms

    set_determinism(seed)
    torch.manual_seed(seed)
    net = build_network(cfg.net).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    transforms = training_transforms(cfg.patch_yx, seed)
    rng = np.random.default_rng(seed)
    weights = case_weights(train_cases, cfg.synthetic_share)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    t0, running = time.perf_counter(), []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        x, y = augmented_batch(train_cases, transforms, rng, cfg.batch_size, cfg.net.context,
                               cfg.organ_intensity_prob, cfg.organ_intensity_range, weights)
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        running.append(loss.item())
        if log and ((step + 1) % 20 == 0 or step + 1 == cfg.steps):
            log({"step": step + 1, "loss": round(float(np.mean(running)), 4), "lr": round(_lr(step, cfg), 6),
                 "elapsed_s": round(time.perf_counter() - t0, 1)})
            running = []
    return net.eval()


def evaluate_cases(segmenter, cases: list[SegCase]) -> list[dict]:
    """Each case segmented by ``segmenter`` and compared with its label on the case's own grid."""
    rows = []
    for c in cases:
        image, label = c.originals()
        t = time.perf_counter()
        res = segmenter.segment(image, c.case_id, require_liver=False)
        row = {"case_id": c.case_id, "source": c.source, **compare(res.mask, label),
               "mean_probability": res.confidence["mean_probability"],
               "tta_agreement_dice": res.confidence.get("tta_agreement_dice"), "seconds": round(time.perf_counter() - t, 2)}
        rows.append(row)
    return rows


def _fold_job(k: int, cases: list[SegCase], folds: list[int], cfg: SegTrainConfig, out: Path, device: str,
              threads: int) -> tuple[dict, list[dict]]:
    """Train fold ``k`` (in this process or a worker), save it, score its held-out cases."""
    from .infer import LiverSegmenter, _device

    if threads:
        torch.set_num_threads(threads)
    dev = _device(device)
    train = [c for c, f in zip(cases, folds) if f != k]
    held = [c for c, f in zip(cases, folds) if f == k]
    log_path = out / f"train_log_fold{k}.jsonl"
    with open(log_path, "w") as fh:
        def log(entry):
            fh.write(json.dumps({"fold": k, **entry}) + "\n")
            fh.flush()
        t = time.perf_counter()
        net = train_network(train, cfg, cfg.seed + 1000 * k, dev, log)
        train_s = time.perf_counter() - t
    name = f"fold{k}.pt"
    digest = save_weights(net, out / name)
    fold = {"file": name, "sha256": digest, "held_out": [c.case_id for c in held],
            "trained_on": [c.case_id for c in train], "steps": cfg.steps, "train_seconds": round(train_s, 1)}
    meta = _meta(cfg, [fold], {})
    from .model_folder import load_networks
    seg = LiverSegmenter(meta, load_networks(out, meta, dev), out, dev)  # the saved (float16) weights, as shipped
    return fold, [{"fold": k, **r} for r in evaluate_cases(seg, held)]


def _meta(cfg: SegTrainConfig, folds: list[dict], metrics: dict, trained_on: dict | None = None) -> SegModelMeta:
    return SegModelMeta(name="liverstiffness-liverseg", version="0.1.0", net=cfg.net, spec=cfg.spec,
                        inference=SegInference(), folds=folds,
                        trained_on=trained_on or {}, metrics=metrics)


def summarise(rows: list[dict]) -> dict:
    """Mean, SD, min and max of each score, per source."""
    out = {}
    for source in SOURCES:
        sel = [r for r in rows if r["source"] == source]
        if not sel:
            continue
        out[source] = {"n": len(sel)}
        for key in ("dice", "hd95_mm", "mean_surface_mm"):
            v = np.array([r[key] for r in sel], float)
            out[source][key] = {"mean": round(float(v.mean()), 4), "sd": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4),
                                "min": round(float(v.min()), 4), "max": round(float(v.max()), 4)}
    return out


def train_segmentation(cases: list[SegCase], out: str | Path, cfg: SegTrainConfig, device: str = "auto",
                       workers: int = 1, trained_on: dict | None = None, progress=print) -> SegModelMeta:
    """k-fold training into the model folder ``out``; returns its metadata (also written there)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.folds < 2:
        raise ValueError("at least 2 folds: every case needs a network that never saw it")
    if sum(c.source == "real" for c in cases) < cfg.folds:
        raise ValueError(f"{cfg.folds} folds need at least {cfg.folds} real cases")
    folds = assign_folds(cases, cfg.folds, cfg.seed)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    t0 = time.perf_counter()
    results = {}
    if workers > 1:
        # spawn, not fork: a forked copy of a process that already runs torch's threads can hang.
        threads = cfg.threads or max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {k: pool.submit(_fold_job, k, cases, folds, cfg, out, device, threads) for k in range(cfg.folds)}
            for k, fut in futures.items():
                results[k] = fut.result()
                progress(f"fold {k} done")
    else:
        for k in range(cfg.folds):
            results[k] = _fold_job(k, cases, folds, cfg, out, device, cfg.threads)
            progress(f"fold {k} done")
    fold_meta = [results[k][0] for k in range(cfg.folds)]
    rows = [r for k in range(cfg.folds) for r in results[k][1]]
    with open(out / "cv_cases.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(out / "train_log.jsonl", "w") as fh:  # one log for the folder; the per-fold logs go
        for k in range(cfg.folds):
            part = out / f"train_log_fold{k}.jsonl"
            fh.write(part.read_text())
            part.unlink()
    metrics = {"held_out": summarise(rows), "protocol": f"{cfg.folds}-fold cross-validation over cases; each case "
               "scored by the one fold network that never saw it, on the image's own grid, after post-processing",
               "train_wall_seconds": round(time.perf_counter() - t0, 1)}
    meta = _meta(replace(cfg), fold_meta, metrics, trained_on)
    write_meta(out, meta)
    return meta
