"""What averaging independently trained runs of the liver-mask recipe gives, on cases none of them saw.

The ablation behind ``make seg-model --runs 2``. Each model folder is one training run (or several);
for every CHAOS case (and synthetic exam) each folder's networks that never saw it give a probability
on the case's own grid (the folder's test-time scales), and every combination of folders is scored by
the mean of those probabilities after the shipped post-processing (largest component, holes filled).
The mean of probabilities commutes with the linear resampling back to the image grid, so a combination
scores exactly as one folder holding those networks would (``train-seg --runs``).

    .venv/bin/python -m experiments.seg_runs I J K --chaos DIR [--synthetic-manifest CSV ...]
    (from the repository root, as a module: it imports ``bench/seg_bench.py``)

(the RESULTS.md figures: I, J and K are ``make seg-model``'s command with ``--runs 1`` and ``--seed 0``,
``1`` and ``2``, each written to its own folder.)
"""
from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bench.seg_bench import held_out_cases  # the cases seg_bench.py scores
from liverstiffness.segmentation.infer import LiverSegmenter
from liverstiffness.segmentation.metrics import compare
from liverstiffness.segmentation.model_folder import read_meta
from liverstiffness.segmentation.postprocess import clean_mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="two or more segmentation model folders (runs)")
    ap.add_argument("--chaos", type=Path, required=True,
                    help="folder of the 15 CHAOS T2-SPIR cases (image_N.nii.gz / label_N.nii.gz)")
    ap.add_argument("--synthetic-manifest", action="append", default=[],
                    help="a manifest of synthetic exams the runs were trained with (scored too); may be repeated")
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("give at least two model folders")
    names = [m.name for m in args.models]
    metas = [read_meta(m) for m in args.models]
    cases = held_out_cases(args.chaos, args.synthetic_manifest, metas[0].spec)
    combos = [c for r in range(1, len(names) + 1) for c in combinations(range(len(names)), r)]
    segmenters: dict[tuple, LiverSegmenter] = {}   # (folder, its held-out networks): loaded once
    scores: dict[str, dict[tuple, list[dict]]] = {}
    for case in cases:
        image, label = case.originals()
        probs = []
        for i, (model, meta) in enumerate(zip(args.models, metas)):
            held = tuple(meta.networks_holding_out(case.case_id))
            if (i, held) not in segmenters:
                segmenters[(i, held)] = LiverSegmenter.load(model, "cpu", folds=list(held))
            seg = segmenters[(i, held)]
            probs.append(sitk.GetArrayFromImage(seg.segment(image, case.case_id, require_liver=False).probability))
        for combo in combos:
            mask = sitk.GetImageFromArray(clean_mask(np.mean([probs[i] for i in combo], axis=0)).astype(np.uint8))
            mask.CopyInformation(image)
            scores.setdefault(case.source, {}).setdefault(combo, []).append(compare(mask, label))
    for source, by_combo in scores.items():
        print(f"{source} (n = {len(next(iter(by_combo.values())))}): runs  Dice mean (min)  HD95 mm mean")
        for combo, rows in by_combo.items():
            dice = [r["dice"] for r in rows]
            print(f"  {' + '.join(names[i] for i in combo):30s} {np.mean(dice):.4f} ({min(dice):.3f})  "
                  f"{np.mean([r['hd95_mm'] for r in rows]):.1f}")


if __name__ == "__main__":
    main()
