"""Do elastograms as dense targets help a hospital-size labelled cohort? And how good is the map?

    python -m experiments.dense_maps [--n-labelled 300] [--seeds 0,1,2] [--jobs 2] [--generator other]
    (from the repository root, as a module)

Cohorts (default generator: the same exams as ``experiments.pretrain_ablation``, images and labels
bit-identical, ``synth`` now writing each exam's elastogram beside them; ``--generator other``: the
same seeds from the configuration the project never tunes on, in build/dense_maps_other/):

- labelled: the first N exams of seed 1, sites A–D, each with its elastogram;
- test: seed 41, site E (n = 120), scored against its labels and its elastograms.

The blood tests the cohorts carry are withheld (``_load``): the question is what the images give.

Conditions, each the shipped recipe (``TrainConfig()``, one patient-grouped early-stopping split,
``train.train_fold``) on the same labelled exams: "global only" (``dense_weight`` 0: the maps are
ignored, the model of today) and "global + maps" (``dense_weight`` 1: a map decoder and the dense
loss on the confident liver voxels). Scored on the test site: Pearson r of ln kPa with its patient
bootstrap CI, without image tokens, the ridge baseline, the difference to "global only" on the same
seed; and for the map, ``dense.map_agreement`` (voxel-level and region-level r, bias, share of voxels
within ±20 %). Writes bench/RESULTS.md (section ``bench_dense_maps``); each run's row is kept in
build/dense_maps/rows.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from recipes.train_demo_model import run

ROOT = Path(__file__).resolve().parents[1]


def work_dir(generator: str) -> Path:
    return ROOT / "build" / ("dense_maps" if generator == "default" else f"dense_maps_{generator}")
COHORTS = {"labelled": (1, "A,B,C,D"), "test": (41, "E")}
N_TEST = 120
CONDITIONS = {"global_only": 0.0, "global_and_maps": 1.0}


def make_cohorts(n_labelled: int, generator: str) -> dict[str, Path]:
    paths = {}
    for name, (seed, sites) in COHORTS.items():
        out = work_dir(generator) / name
        if not (out / "manifest.csv").is_file():
            run("synth", "--out", str(out), "--n", str(n_labelled if name == "labelled" else N_TEST), "--seed",
                str(seed), "--sites", sites, "--workers", "2", "--generator", generator, "--quiet")
        paths[name] = out / "manifest.csv"
    return paths


def _load(manifest: Path, n: int | None = None, workers: int = 1):
    """``manifest``'s exams (the first ``n``), preprocessed into the cache beside its cohort folder."""
    # The cohort without its blood tests: on the phantom FIB-4 alone reaches r 0.78 on site E, and
    # the question here is what the images give (as in ``experiments.pretrain_ablation``, whose
    # cohorts predate the blood tests).
    from dataclasses import replace

    from liverstiffness.manifest import LAB_COLUMNS, read_manifest
    from liverstiffness.preprocess import PreprocessOptions
    from liverstiffness.stiffness.data import load_cohort
    from liverstiffness.stiffness.train import TrainConfig

    cfg = TrainConfig()
    records = [replace(r, facts=replace(r.facts, **{c: None for c in LAB_COLUMNS}))
               for r in read_manifest(manifest, require_label=True)]
    return load_cohort(records[:n] if n else records, cfg.spec, PreprocessOptions(register=cfg.register, n4=cfg.n4),
                       Path(manifest).parent.parent / "cache", workers, False)


def train_job(job: tuple) -> dict:
    condition, seed, manifests, n_labelled = job
    import numpy as np
    import torch

    import liverstiffness.stiffness.train as T
    from experiments.one_split import train_and_score
    from liverstiffness.stiffness.dense import map_agreement, predict_map_log

    cfg = T.TrainConfig(dense_weight=CONDITIONS[condition])
    train, test = _load(manifests["labelled"], n_labelled), _load(manifests["test"])
    if cfg.dense_weight > 0:
        cfg.model = T.replace(cfg.model, map_decoder=True)
    nets = []
    fit = T.train_fold

    def keep(*args, **kw):             # the trained network, for the map's scores
        net, info = fit(*args, **kw)
        nets.append(net)
        return net, info
    T.train_fold = keep
    row = {"condition": condition, "seed": seed, "n_labelled": len(train.images), "n_test": len(test.images),
           **train_and_score(train, test, cfg, seed, f"{condition} seed {seed}", keep_predictions=True)}
    T.train_fold = fit
    if cfg.dense_weight > 0:
        maps = predict_map_log(nets, test.images, test.cov, test.known, torch.device("cpu"))
        row["map"] = map_agreement(maps, test.dense, test.images[:, list(cfg.spec.channels).index("mask")],
                                   [r.patient_id for r in test.records])
    row["test_log_kpa"] = [float(v) for v in test.log_kpa]
    row["test_patients"] = [r.patient_id for r in test.records]
    row["pred_full"] = [float(v) for v in np.asarray(row.pop("predictions")["full"])]
    with open(Path(manifests["labelled"]).parent.parent / "rows.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
    return row


def summarise(rows: list[dict], generator: str) -> list[str]:
    import numpy as np

    from liverstiffness.stiffness.evaluate import BOOTSTRAP, bootstrap_r_ci, bootstrap_r_difference

    y = np.array(rows[0]["test_log_kpa"])
    patients = rows[0]["test_patients"]
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["condition"], r["seed"]): r for r in rows}
    flag = "" if generator == "default" else f" --generator {generator}"
    lines = [f"# Elastograms as dense targets, {rows[0]['n_labelled']} labelled exams, {generator} generator "
             f"(`python -m experiments.dense_maps --seeds {','.join(map(str, seeds))}{flag}`)", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores, {generator} generator. Labelled: the "
             f"first {rows[0]['n_labelled']} exams of seed 1, sites A–D, each with its elastogram (`synth`). Test: site "
             f"E, seed 41 (n = {len(y)} exams of {len(set(patients))} patients); blood tests withheld. Shipped recipe, one "
             "patient-grouped "
             "early-stopping split per seed; \"global + maps\" adds the map decoder and the elastogram loss (weight 1). "
             f"Pearson r of ln kPa; 95 % CIs from {BOOTSTRAP} bootstrap resamples of test patients.", "",
             "| condition | seeds | full r (mean, range) | without image tokens | ridge baseline | full − ridge | best epochs |",
             "|---|---|---|---|---|---|---|"]
    for cond in CONDITIONS:
        rs = [by[(cond, s)] for s in seeds if (cond, s) in by]
        if not rs:
            continue
        full, blind, ridge = [r["full"] for r in rs], [r["without_image_tokens"] for r in rs], rs[0]["ridge"]
        lines.append(f"| {cond.replace('_', ' ')} | {len(rs)} | {np.mean(full):.3f} ({min(full):.3f}–{max(full):.3f}) | "
                     f"{np.mean(blind):.3f} | {ridge:.3f} | {np.mean(full) - ridge:+.3f} | "
                     f"{', '.join(str(r['best_epoch']) for r in rs)} |")
    lines += ["", "Per seed: global + maps against global only on the same split (difference of r, patient-bootstrap "
              "95 % CI), and the map against the test site's elastograms on the voxels a reader would use (voxel r "
              "pooled over exams; within-exam: the median of each exam's own voxel r, the regional pattern alone; "
              "region r over the right/left lobe and eight sectors of every exam; bias and share within ±20 % in kPa):",
              "", "| seed | r (95 % CI) | global-only r | difference (95 % CI) | voxel r (95 % CI) | within-exam voxel r | "
              "region r (95 % CI) | bias (kPa) | within ±20 % |", "|---|---|---|---|---|---|---|---|---|"]
    for s in seeds:
        if ("global_and_maps", s) not in by:
            continue
        r = by[("global_and_maps", s)]
        p = np.array(r["pred_full"])
        lo, hi = bootstrap_r_ci(y, p, groups=patients)
        diff = "—"
        base = ""
        if ("global_only", s) in by:
            q = np.array(by[("global_only", s)]["pred_full"])
            d = bootstrap_r_difference(y, p, q, groups=patients)
            diff = f"{d['difference']:+.3f} ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})"
            base = f"{np.corrcoef(y, q)[0, 1]:.3f}"
        m = r["map"]
        lines.append(f"| {s} | {np.corrcoef(y, p)[0, 1]:.3f} ({lo:.3f}–{hi:.3f}) | {base} | {diff} | "
                     f"{m['voxel_r']:.3f} ({m['voxel_r_ci95'][0]:.3f}–{m['voxel_r_ci95'][1]:.3f}) | "
                     f"{m['within_exam_voxel_r_median']:.3f} | {m['region_r']:.3f} ({m['region_r_ci95'][0]:.3f}–"
                     f"{m['region_r_ci95'][1]:.3f}) | {m['bias_kpa']:+.3f} | {m['within_20_percent']:.2f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-labelled", type=int, default=300)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated, of " + ", ".join(CONDITIONS))
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    ap.add_argument("--generator", default="default", choices=("default", "other"),
                    help="synthesiser configuration (other: the one the project never tunes on)")
    ap.add_argument("--table-only", action="store_true", help="only rewrite the table from the rows.jsonl kept")
    a = ap.parse_args()
    work = work_dir(a.generator)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work.mkdir(parents=True, exist_ok=True)
    if not a.table_only:
        manifests = make_cohorts(a.n_labelled, a.generator)
        _load(manifests["labelled"], a.n_labelled, workers=a.jobs)    # preprocessed once, before the runs share it
        _load(manifests["test"], workers=a.jobs)
        jobs = [(c, int(s), manifests, a.n_labelled) for s in a.seeds.split(",") for c in a.conditions.split(",")]
        with ProcessPoolExecutor(a.jobs) as pool:
            list(pool.map(train_job, jobs))
    rows = [json.loads(line) for line in open(work / "rows.jsonl")]
    latest = {(r["condition"], r["seed"]): r for r in rows if r["n_labelled"] == a.n_labelled}   # a rerun replaces
    from bench.results_md import write_section

    write_section(summarise(list(latest.values()), a.generator),
                  mark="bench_dense_maps" + ("" if a.generator == "default" else f"_{a.generator}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
