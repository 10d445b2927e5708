"""Agreement between independently trained liver-mask networks on real cases none of them saw.

The calibration behind ``segmentation/infer.LOW_AGREEMENT``. On a new image the shipped model's fold
agreement is the mean pairwise Dice of networks that never saw that image; on a held-out CHAOS case a
model folder has one such network per training run, so a folder of several runs (``train-seg --runs``),
or several folders trained by the recipe, give several per case. For each real case: every held-out
network of the given folders at a single scale, mask = probability ≥ the folder's threshold on the
image's own grid, the mean pairwise Dice of those masks, beside the first folder's held-out Dice (its
cv_cases.csv).

    .venv/bin/python -m experiments.seg_agreement --chaos DIR LiverStiffness/liverstiffness/shipped_models/liver_seg [DIR ...]
    (from the repository root, as a module, as every script in experiments/)

(the RESULTS.md figures: the shipped folder, whose two runs are ``make seg-model``'s recipe with seeds 0
and 1, and a third run of that recipe with ``--seed 2``).
"""
from __future__ import annotations

import argparse
import csv
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from liverstiffness.segmentation.data import find_pairs
from liverstiffness.segmentation.infer import LiverSegmenter
from liverstiffness.segmentation.metrics import dice
from liverstiffness.segmentation.model_folder import read_meta


def held_out_masks(model_dir: Path, case_id: str, image: sitk.Image) -> list[np.ndarray]:
    """The masks of ``image`` by each network of ``model_dir`` that never saw ``case_id``."""
    masks = []
    for k in read_meta(model_dir).networks_holding_out(case_id):
        seg = LiverSegmenter.load(model_dir, "cpu", folds=[k])
        seg.meta.inference = replace(seg.meta.inference, tta_scales=(1.0,))   # as the fold agreement: one scale
        prob = sitk.GetArrayFromImage(seg.segment(image, case_id, require_liver=False).probability)
        masks.append(prob >= seg.meta.inference.threshold)
    return masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path,
                    help="segmentation model folders (the first is scored), two or more networks per case in all")
    ap.add_argument("--chaos", type=Path, required=True,
                    help="folder of the 15 CHAOS T2-SPIR cases (image_N.nii.gz / label_N.nii.gz)")
    args = ap.parse_args()
    if sum(read_meta(m).runs for m in args.models) < 2:
        ap.error("give model folders with at least two runs in all (one network per case each)")
    first_dice = {r["case_id"]: float(r["dice"]) for r in csv.DictReader(open(args.models[0] / "cv_cases.csv"))}
    rows = []
    for case_id, image_path, _ in find_pairs(args.chaos):
        image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
        masks = [mask for m in args.models for mask in held_out_masks(m, case_id, image)]
        agreement = float(np.mean([dice(a, b) for a, b in combinations(masks, 2)]))
        rows.append((agreement, first_dice.get(case_id, float("nan")), case_id))
    print("agreement  held-out Dice (first folder)  case")
    for agreement, d, case_id in sorted(rows):
        print(f"{agreement:9.3f}  {d:28.3f}  {case_id}")


if __name__ == "__main__":
    main()
