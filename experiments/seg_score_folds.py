"""Score the finished fold networks of a ``train-seg`` folder that was stopped before it wrote seg_model.json.

``train-seg`` scores its networks only once every fold has trained. A long run (e.g. ``--folds 15``,
leave-one-out: fifteen networks, three waves of five workers here) can be stopped after some waves; this
scores the networks it saved, each on the real CHAOS cases it held out, as ``train-seg`` would have (the
folder's config, ``train.score_held_out``: the shipped test-time scales and post-processing, on each
image's own grid). The held-out cases are dealt again by ``train.assign_folds`` from the folder's
config.json: the real cases are dealt first, so their folds do not depend on the synthetic exams.

    .venv/bin/python -m experiments.seg_score_folds RUN_DIR --chaos DIR
    (from the repository root, as a module: it imports ``bench/seg_bench.py``)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.seg_bench import held_out_cases  # the cases seg_bench.py scores
from liverstiffness.segmentation.config import SegTrainConfig
from liverstiffness.segmentation.train import assign_folds, folder_meta, score_held_out, split, weights_file
from liverstiffness.stiffness.checkpoint import sha256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a train-seg --out folder with config.json and some foldK.pt")
    ap.add_argument("--chaos", type=Path, required=True,
                    help="folder of the 15 CHAOS T2-SPIR cases (image_N.nii.gz / label_N.nii.gz)")
    args = ap.parse_args()
    if not (args.run / "config.json").is_file():
        sys.exit(f"{args.run}: not a train-seg --out folder (no config.json)")
    d = json.loads((args.run / "config.json").read_text())
    cfg = SegTrainConfig.from_dict(d)
    cases = held_out_cases(args.chaos, [], cfg.spec)
    folds = []
    for r in range(cfg.runs):
        fold_of = assign_folds(cases, cfg.folds, cfg.seed + r)
        for k in range(cfg.folds):
            path = args.run / weights_file(cfg.runs, r, k)
            if path.is_file():
                folds.append({"file": path.name, "sha256": sha256(path), "run": r,
                              "held_out": [c.case_id for c in split(cases, fold_of, k)[1]]})
    if not folds:
        sys.exit(f"{args.run}: no finished fold networks yet")
    meta = folder_meta(cfg, folds, {})    # the folder's seg_model.json as train-seg writes it, for the networks there
    scored = [c for c in cases if meta.networks_holding_out(c.case_id)]
    rows = score_held_out(args.run, meta, scored)
    print(f"{args.run.name}: {len(folds)} of {cfg.folds * cfg.runs} networks, {len(rows)} real cases held out")
    for row in rows:
        print(f"  {row['case_id']:20s} Dice {row['dice']:.4f}  HD95 {row['hd95_mm']:.1f} mm")
    print(f"  mean Dice {np.mean([r['dice'] for r in rows]):.4f}")


if __name__ == "__main__":
    main()
