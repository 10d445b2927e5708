"""Shared by the experiments: the data_size_ablation cohorts, one split, site-E scoring (``experiments.common``)."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "data_size"


def cohorts(n: int, spec, options):
    """(first ``n`` A–D exams, site E) as ``CohortArrays``, from the preprocessing caches."""
    from liverstiffness.manifest import read_manifest
    from liverstiffness.stiffness.data import load_cohort

    manifests = sorted(WORK.glob("train_cohort_*/manifest.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    if not manifests:
        raise SystemExit("run python -m experiments.data_size_ablation first (it makes build/data_size/)")
    train = load_cohort(read_manifest(manifests[-1], require_label=True)[:n], spec, options, WORK / "cache", 1, False)
    ext = ROOT / "build" / "demo_model"
    test = load_cohort(read_manifest(ext / "external_E" / "manifest.csv", require_label=True), spec, options,
                       ext / "eval_E" / "cache", 1, False)
    return train, test


def train_and_score(train, test, cfg, seed: int, tag: str, extra: dict) -> dict:
    """One split (``experiments/one_split.py``, no ridge), printed and appended to build/data_size/experiments.jsonl."""
    from experiments.one_split import train_and_score as one_split

    row = {"experiment": tag, "n": len(train.records), "seed": seed, **extra,
           **{k: round(v, 3) if isinstance(v, float) else v
              for k, v in one_split(train, test, cfg, seed, tag, ridge=False).items()}}
    print(json.dumps(row), flush=True)
    with open(WORK / "experiments.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row
