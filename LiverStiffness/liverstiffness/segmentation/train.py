"""Train the liver segmentation model: k folds over cases, the fold networks are the ensemble.

Every case is held out by exactly one fold network of a run, which scores it on the case's own
grid (Dice, HD95, mean surface distance against the manual label): these are the numbers reported
as "never seen in training". Real and synthetic cases are split into folds separately, so each
fold holds out its share of both. With several runs (seeds: other fold splits, sampling and
augmentation) a case is held out once per run and scored by the mean of those networks, the way
the ensemble runs. The shipped model runs all networks and averages them (each saw (k−1)/k of the
cases); its score on new data is expected at or above the held-out networks'.

Reproducible: the folds, the sampling and the augmentation follow the run's seed (and the fold
index), so running the folds one after another or in parallel worker processes gives the same
networks, and run r of ``runs`` is the single run with seed ``seed + r``.
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

from .config import AUX_WEIGHT, SWA_EVERY, SegTrainConfig
from .data import SegCase
from .metrics import compare, json_ready
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


def swa_start(cfg: SegTrainConfig) -> int | None:
    """The step from which the weights are averaged (``cfg.swa``: the last share of the steps); None: off."""
    return cfg.steps - max(1, round(cfg.swa * cfg.steps)) if cfg.swa > 0 else None


def _lr(step: int, cfg: SegTrainConfig) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to zero; with ``cfg.swa`` the rate
    stays, from the averaging's first step on, where the schedule had it (a constant rate keeps the weights
    moving around the minimum, which is what the average is taken over)."""
    start = swa_start(cfg)
    if start is not None:
        step = min(step, start)
    warm = max(1, cfg.steps // 20)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, cfg.steps - warm)))


def loss_function(cfg: SegTrainConfig):
    """Dice + cross-entropy on the liver logit (sigmoid); the Dice per slice, or over the batch (``batch_dice``)."""
    from monai.losses import DiceCELoss

    return DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=cfg.batch_dice)


def train_network(train_cases: list[SegCase], cfg: SegTrainConfig, seed: int, device: torch.device,
                  log=None, start: torch.nn.Module | None = None) -> torch.nn.Module:
    """One network on ``train_cases`` for ``cfg.steps`` steps (Dice + cross-entropy loss; with
    ``cfg.net.aux_organs``, plus AUX_WEIGHT × that loss on the other organs' outputs); ``start``: a
    network whose weights it begins from (the schedule, warm-up included, runs again from step 0); with
    ``cfg.swa`` the network returned is the average of its weights over the last steps (stochastic weight
    averaging, ``torch.optim.swa_utils``)."""
    from monai.utils import set_determinism
    from torch.optim.swa_utils import AveragedModel

    from .augment import augmented_batch, case_weights, training_transforms

    set_determinism(seed)
    torch.manual_seed(seed)
    net = build_network(cfg.net)     # drawn even with ``start``, so the augmentation's draws stay the same
    if start is not None:
        net.load_state_dict(start.state_dict())
    net = net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = loss_function(cfg)
    transforms = training_transforms(cfg.patch_yx, seed, cfg.scale_aug)
    rng = np.random.default_rng(seed)
    weights = case_weights(train_cases, cfg.synthetic_share)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    t0, running = time.perf_counter(), []
    average_from = swa_start(cfg)
    # the instance-norm network keeps no running statistics, so the averaged weights need no update pass
    averaged = AveragedModel(net) if average_from is not None else None
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        x, y, known = augmented_batch(train_cases, transforms, rng, cfg.batch_size, cfg.net.context,
                                      cfg.organ_intensity_prob, cfg.organ_intensity_range, weights,
                                      cfg.organ_intensity_keep_bright, cfg.net.aux_organs)
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = net(x).float()
        loss = loss_fn(logits[:, :1], y[:, :1])
        if known.any():   # the other organs, on the samples that have them labelled
            sel = known.to(device)
            loss = loss + AUX_WEIGHT * loss_fn(logits[sel, 1:], y[sel, 1:])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        running.append(loss.item())
        if averaged is not None and step >= average_from and (
                (step - average_from) % SWA_EVERY == 0 or step + 1 == cfg.steps):
            averaged.update_parameters(net)
        if log and ((step + 1) % 20 == 0 or step + 1 == cfg.steps):
            log({"step": step + 1, "loss": round(float(np.mean(running)), 4), "lr": round(_lr(step, cfg), 6),
                 "elapsed_s": round(time.perf_counter() - t0, 1)})
            running = []
    if averaged is not None:
        net.load_state_dict(averaged.module.state_dict())
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
               "tta_agreement_dice": res.confidence.get("tta_agreement_dice"),
               "fold_agreement_dice": res.confidence.get("fold_agreement_dice"),   # None with one network
               "seconds": round(time.perf_counter() - t, 2)}
        rows.append(row)
    return rows


def weights_file(runs: int, run: int, k: int) -> str:
    """The file name of fold ``k`` of run ``run`` in a folder of ``runs`` runs."""
    return f"fold{k}.pt" if runs == 1 else f"run{run}_fold{k}.pt"


def split(cases: list[SegCase], folds: list[int], k: int) -> tuple[list[SegCase], list[SegCase]]:
    """(training cases, held-out cases) of fold ``k`` under the fold index per case ``folds``."""
    return [c for c, f in zip(cases, folds) if f != k], [c for c, f in zip(cases, folds) if f == k]


def starting_networks(init_dir: str | Path, cases: list[SegCase], folds: dict[int, list[int]],
                      cfg: SegTrainConfig) -> dict[tuple[int, int], int]:
    """For each fold network (run, fold) to train, the index of the network of the folder ``init_dir``
    it starts from: one that never trained on any case the new fold holds out (else those cases'
    held-out scores would be scores on seen livers); of those, the one of the same seed (else run) that
    held out exactly the same cases when there is one (continuing a run with its own seed and cases),
    else one of another run that did, else the eligible ones in turn."""
    from ..errors import InputError
    from .model_folder import read_meta

    init = read_meta(init_dir)
    where = f"--init-from {init_dir}"
    # dropout holds no weights: a network trained without it continues with it (and back)
    if (replace(init.net, dropout=0.0), init.spec) != (replace(cfg.net, dropout=0.0), cfg.spec):
        raise InputError(where, "has another network or input grid than the one to train (its seg_model.json "
                                "architecture / input_spec); start from a folder trained with the same settings")
    if any("trained_on" not in f for f in init.folds):
        raise InputError(where, "does not list the cases each network trained on (written before that was "
                                "recorded), so it cannot be checked that they never saw the held-out cases")
    picks = {}
    for r, fold_of in folds.items():
        for k in range(cfg.folds):
            held = {c.case_id for c in split(cases, fold_of, k)[1]}
            ok = [i for i, f in enumerate(init.folds) if not held & set(f["trained_on"])]
            if not ok:
                raise InputError(where, f"every network there trained on a case that fold {k} of run {r} holds out "
                                        f"({', '.join(sorted(held))}); use the same --seed and cases, or another folder")
            same = [i for i in ok if set(init.folds[i]["held_out"]) == held]
            # splits can repeat across seeds: the network of its own seed first, so a run continues the same
            # network whether it is trained alone or as run r of several (join_runs relies on it)
            same.sort(key=lambda i: (init.folds[i].get("seed") != cfg.seed + r, init.folds[i].get("run", 0) != r))
            picks[(r, k)] = same[0] if same else ok[(r * cfg.folds + k) % len(ok)]
    return picks


def recipe(cfg: SegTrainConfig) -> dict:
    """A folder's config.json: its training settings and, when its networks started from another folder's
    (``init_from``), that folder's own config.json as ``init_recipe``, so the folder keeps every stage its
    networks went through after the folder it started from has gone."""
    d = cfg.to_dict()
    if cfg.init_from:
        first = Path(cfg.init_from) / "config.json"
        d["init_recipe"] = json.loads(first.read_text()) if first.is_file() else None
    return d


def _fold_log(out: Path, weights_file: str) -> Path:
    """A fold network's own training log, written by its job and merged into train_log.jsonl after."""
    return out / f"train_log_{Path(weights_file).stem}.jsonl"


def _fold_job(run: int, k: int, cases: list[SegCase], folds: list[int], cfg: SegTrainConfig, out: Path,
              device: str, threads: int, start_index: int | None = None) -> dict:
    """Train fold ``k`` of run ``run`` (in this process or a worker) and save it; ``start_index``: the
    network of ``cfg.init_from`` it starts from."""
    from .infer import _device
    from .model_folder import load_networks, read_meta

    if threads:
        torch.set_num_threads(threads)
    dev = _device(device)
    seed = cfg.seed + run
    train, held = split(cases, folds, k)
    name = weights_file(cfg.runs, run, k)
    start, started_from = None, {}
    if start_index is not None:
        init = read_meta(cfg.init_from)
        start = load_networks(cfg.init_from, init, "cpu", [start_index])[0]   # its SHA-256 checked there
        started_from = {"started_from": {key: init.folds[start_index][key] for key in ("file", "sha256")}}
    with open(_fold_log(out, name), "w") as fh:
        def log(entry):
            fh.write(json.dumps({"run": run, "fold": k, **entry}) + "\n")
            fh.flush()
        t = time.perf_counter()
        net = train_network(train, cfg, seed + 1000 * k, dev, log, start)
        train_s = time.perf_counter() - t
    return {"file": name, "sha256": save_weights(net, out / name), "run": run, "seed": seed,
            "held_out": [c.case_id for c in held], "trained_on": [c.case_id for c in train], "steps": cfg.steps,
            "train_seconds": round(train_s, 1), **started_from}


def score_held_out(model_dir: str | Path, meta: SegModelMeta, cases: list[SegCase], device: str = "cpu") -> list[dict]:
    """Each case segmented by the networks of ``model_dir`` that never saw it (one per run, their mean
    probability, with the folder's test-time scales) and scored against its label on its own grid."""
    from .infer import LiverSegmenter, _device
    from .model_folder import load_networks

    dev = _device(device)
    by_networks: dict[tuple[int, ...], list[SegCase]] = {}
    for c in cases:
        idx = tuple(meta.networks_holding_out(c.case_id))
        if idx:
            by_networks.setdefault(idx, []).append(c)
    rows = []
    for idx, group in by_networks.items():
        seg = LiverSegmenter(meta, load_networks(model_dir, meta, dev, list(idx)), Path(model_dir), dev)
        files = " ".join(meta.folds[i]["file"] for i in idx)
        rows += [{"networks": files, **r} for r in evaluate_cases(seg, group)]
    order = {c.case_id: i for i, c in enumerate(cases)}
    return sorted(rows, key=lambda r: order[r["case_id"]])


def folder_meta(cfg: SegTrainConfig, folds: list[dict], metrics: dict, trained_on: dict | None = None) -> SegModelMeta:
    return SegModelMeta(name="liverstiffness-liverseg", version="0.1.0", net=cfg.net, spec=cfg.spec,
                        inference=SegInference(), folds=folds,
                        trained_on=trained_on or {}, metrics=metrics)


def protocol(folds: int, runs: int) -> str:
    """How the held-out scores were made (model card and seg_model.json)."""
    if runs == 1:
        return (f"{folds}-fold cross-validation over cases; each case scored by the one fold network that never "
                "saw it, on the image's own grid, after post-processing")
    return (f"{runs} independent {folds}-fold cross-validation runs over cases (seeds, so fold splits, differ); "
            f"each case scored by the mean probability of the {runs} networks that never saw it (one per run), "
            "on the image's own grid, after post-processing")


def summarise(rows: list[dict]) -> dict:
    """Mean, SD, min and max of each score, per source; None where infinite (a case without an outline)."""
    out = {}
    for source in SOURCES:
        sel = [r for r in rows if r["source"] == source]
        if not sel:
            continue
        out[source] = {"n": len(sel)}
        for key in ("dice", "hd95_mm", "mean_surface_mm"):
            v = np.array([r[key] for r in sel], float)
            if len(v) == 1:
                sd = 0.0
            elif np.isfinite(v).all():
                sd = float(v.std(ddof=1))
            else:           # a case without an outline (metrics.compare: inf): infinite (None), not NaN
                sd = float("inf")
            out[source][key] = {"mean": round(float(v.mean()), 4), "sd": round(sd, 4),
                                "min": round(float(v.min()), 4), "max": round(float(v.max()), 4)}
    return json_ready(out)


def train_segmentation(cases: list[SegCase], out: str | Path, cfg: SegTrainConfig, device: str = "auto",
                       workers: int = 1, trained_on: dict | None = None, progress=print) -> SegModelMeta:
    """k-fold training into the model folder ``out``; returns its metadata (also written there)."""
    out = Path(out)
    if cfg.folds < 2:
        raise ValueError("at least 2 folds: every case needs a network that never saw it")
    if sum(c.source == "real" for c in cases) < cfg.folds:
        raise ValueError(f"{cfg.folds} folds need at least {cfg.folds} real cases")
    folds = {r: assign_folds(cases, cfg.folds, cfg.seed + r) for r in range(cfg.runs)}
    jobs = [(r, k) for r in range(cfg.runs) for k in range(cfg.folds)]
    starts = starting_networks(cfg.init_from, cases, folds, cfg) if cfg.init_from else {}   # checked before writing
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(recipe(cfg), indent=2) + "\n")
    t0 = time.perf_counter()
    results = {}
    if workers > 1:
        # spawn, not fork: a forked copy of a process that already runs torch's threads can hang.
        threads = cfg.threads or max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {job: pool.submit(_fold_job, *job, cases, folds[job[0]], cfg, out, device, threads,
                                          starts.get(job)) for job in jobs}
            for job, fut in futures.items():
                results[job] = fut.result()
                progress(f"run {job[0]} fold {job[1]} done")
    else:
        for job in jobs:
            results[job] = _fold_job(*job, cases, folds[job[0]], cfg, out, device, cfg.threads, starts.get(job))
            progress(f"run {job[0]} fold {job[1]} done")
    train_s = time.perf_counter() - t0
    fold_meta = [results[job] for job in jobs]
    with open(out / "train_log.jsonl", "w") as fh:  # one log for the folder; the per-fold logs go
        for fold in fold_meta:
            part = _fold_log(out, fold["file"])
            fh.write(part.read_text())
            part.unlink()
    return _score_and_describe(out, cfg, fold_meta, cases, device, train_s, trained_on)


def _score_and_describe(out: Path, cfg: SegTrainConfig, fold_meta: list[dict], cases: list[SegCase], device: str,
                        train_s: float, trained_on: dict | None) -> SegModelMeta:
    """The last step of a model folder: its held-out cases scored (cv_cases.csv) and seg_model.json."""
    # scored from the saved (float16) weights, as shipped
    rows = score_held_out(out, folder_meta(cfg, fold_meta, {}), cases, device)
    with open(out / "cv_cases.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    metrics = {"held_out": summarise(rows), "protocol": protocol(cfg.folds, cfg.runs),
               "train_wall_seconds": round(train_s, 1)}
    meta = folder_meta(replace(cfg), fold_meta, metrics, trained_on)
    write_meta(out, meta)
    return meta


def join_runs(run_dirs: list[str | Path], out: str | Path, cases: list[SegCase], device: str = "cpu") -> SegModelMeta:
    """Single runs of seeds s, s + 1, … trained one by one, written as the one folder that ``runs`` =
    their number and seed s writes (its run r is the single run of seed s + r, the same splits, starting
    networks and so weights: tested): the networks under their run's names, their records and training
    logs given their run, every case scored by all the networks that never saw it together. Refused
    (ValueError, before anything is written) unless the folders are exactly those runs of one recipe."""
    from ..stiffness.checkpoint import sha256
    from .model_folder import read_meta

    run_dirs, out = [Path(d) for d in run_dirs], Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; join into a new folder")
    settings = [json.loads((d / "config.json").read_text()) for d in run_dirs]
    first = settings[0]
    for r, (d, c) in enumerate(zip(run_dirs, settings)):
        if c.get("runs") != 1 or c.get("seed") != first["seed"] + r or {**c, "seed": first["seed"]} != first:
            raise ValueError(f"{d}: not the single run of seed {first['seed'] + r} with {run_dirs[0]}'s settings")
    cfg = SegTrainConfig.from_dict({**first, "runs": len(run_dirs)})
    folds = {r: assign_folds(cases, cfg.folds, cfg.seed + r) for r in range(cfg.runs)}
    starts = starting_networks(cfg.init_from, cases, folds, cfg) if cfg.init_from else {}
    init = read_meta(cfg.init_from) if cfg.init_from else None
    metas = [read_meta(d) for d in run_dirs]
    for r, (d, meta) in enumerate(zip(run_dirs, metas)):
        if meta.trained_on != metas[0].trained_on or len(meta.folds) != cfg.folds:
            raise ValueError(f"{d}: trained on other data or with another number of folds than {run_dirs[0]}")
        for k, f in enumerate(meta.folds):
            held = [c.case_id for c in split(cases, folds[r], k)[1]]
            start = ({key: init.folds[starts[(r, k)]][key] for key in ("file", "sha256")} if init else None)
            if f["held_out"] != held or f.get("started_from") != start or sha256(d / f["file"]) != f["sha256"]:
                raise ValueError(f"{d / f['file']}: not fold {k} of run {r} of the joined folder (its held-out "
                                 "cases, starting network or SHA-256 differ)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(recipe(cfg), indent=2) + "\n")
    fold_meta = []
    with open(out / "train_log.jsonl", "w") as log:
        for r, (d, meta) in enumerate(zip(run_dirs, metas)):
            for k, f in enumerate(meta.folds):
                # saved again, not copied: torch.save names its archive after the file, so a copy would keep
                # the single run's bytes and SHA-256; the tensors are the same
                name = weights_file(cfg.runs, r, k)
                torch.save(torch.load(d / f["file"], weights_only=True), out / name)
                fold_meta.append({**f, "file": name, "sha256": sha256(out / name), "run": r})
            for line in (d / "train_log.jsonl").read_text().splitlines():
                log.write(json.dumps({**json.loads(line), "run": r}) + "\n")
    train_s = sum(m.metrics.get("train_wall_seconds", 0.0) for m in metas)   # one after the other
    return _score_and_describe(out, cfg, fold_meta, cases, device, train_s, metas[0].trained_on)
