"""Shared by the experiments: the data_size_ablation cohorts, one split, site-E scoring."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "LiverStiffness"))
WORK = ROOT / "build" / "data_size"


def cohorts(n: int, spec, options):
    """(first ``n`` A–D exams, site E) as ``CohortArrays``, from the preprocessing caches."""
    from liverstiffness.cohort_data import load_cohort
    from liverstiffness.manifest import read_manifest

    manifests = sorted(WORK.glob("train_cohort_*/manifest.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    if not manifests:
        raise SystemExit("run bench/data_size_ablation.py first (it makes build/data_size/)")
    train = load_cohort(read_manifest(manifests[-1], require_label=True)[:n], spec, options, WORK / "cache", 1, False)
    ext = ROOT / "build" / "demo_model"
    test = load_cohort(read_manifest(ext / "external_E" / "manifest.csv", require_label=True), spec, options,
                       ext / "eval_E" / "cache", 1, False)
    return train, test


def train_and_score(train, test, cfg, seed: int, tag: str, extra: dict) -> dict:
    """One patient-grouped early-stopping split, then r on site E (full, without image tokens)."""
    import torch
    from scipy.stats import pearsonr

    import liverstiffness.train as T
    from liverstiffness.ensemble import predict_log
    from liverstiffness.folds import inner_split

    torch.set_num_threads(1)
    tr, va = inner_split(train.records, cfg.val_fraction, seed)
    t = time.perf_counter()
    net, info = T.train_fold(train.subset(tr), train.subset(va), cfg, seed, torch.device("cpu"), T.DistInfo(), tag,
                             lambda entry: None)
    row = {"experiment": tag, "n": len(train.records), "seed": seed, **extra, "best_epoch": info["best_epoch"],
           "minutes": round((time.perf_counter() - t) / 60, 1)}
    for variant in ("full", "without_image_tokens"):
        pred = predict_log([net], test.images, test.cov, test.known, torch.device("cpu"), variant=variant)[0]
        row[variant] = round(float(pearsonr(test.log_kpa, pred)[0]), 3)
    print(json.dumps(row), flush=True)
    with open(WORK / "experiments.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row
