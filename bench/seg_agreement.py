"""Agreement between independently trained liver-mask models on real cases none of them saw.

The calibration behind ``segmentation/infer.LOW_AGREEMENT``. On a new image the shipped model's fold
agreement is the mean pairwise Dice of networks that never saw that image; on the held-out CHAOS cases
each model folder has one such network, so several folders trained by the recipe (other seeds or step
counts) give several per case. For each real case: each folder's held-out fold network at a single
scale, mask = probability ≥ the folder's threshold on the image's own grid, the mean pairwise Dice of
those masks, beside the first folder's held-out Dice (its cv_cases.csv).

    .venv/bin/python bench/seg_agreement.py LiverStiffness/liverstiffness/models/liver_seg RUN_F RUN_H

(the RESULTS.md figures: the shipped folder and two 3000-step runs of ``make seg-model``'s recipe,
``--steps 3000`` with ``--seed 0`` and ``--seed 1``).
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LiverStiffness"))

from liverstiffness.segmentation.data import find_pairs  # noqa: E402
from liverstiffness.segmentation.infer import LiverSegmenter  # noqa: E402
from liverstiffness.segmentation.metrics import dice  # noqa: E402
from liverstiffness.segmentation.model_folder import read_meta  # noqa: E402


def held_out_mask(model_dir: Path, case_id: str, image: sitk.Image) -> np.ndarray:
    """The mask of ``image`` by the one fold network of ``model_dir`` that never saw ``case_id``."""
    seg = LiverSegmenter.load(model_dir, "cpu", folds=[read_meta(model_dir).fold_holding_out(case_id)])
    seg.meta.inference = replace(seg.meta.inference, tta_scales=(1.0,))   # as the fold agreement: one scale
    prob = sitk.GetArrayFromImage(seg.segment(image, case_id, require_liver=False).probability)
    return prob >= seg.meta.inference.threshold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="two or more segmentation model folders (the first is scored)")
    ap.add_argument("--chaos", type=Path, default=ROOT.parent / "shared" / "data" / "real" / "chaos_t2spir")
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("give at least two model folders")
    first_dice = {r["case_id"]: float(r["dice"]) for r in csv.DictReader(open(args.models[0] / "cv_cases.csv"))}
    rows = []
    for case_id, image_path, _ in find_pairs(args.chaos):
        image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
        masks = [held_out_mask(m, case_id, image) for m in args.models]
        agreement = float(np.mean([dice(a, b) for a, b in combinations(masks, 2)]))
        rows.append((agreement, first_dice.get(case_id, float("nan")), case_id))
    print("agreement  held-out Dice (first folder)  case")
    for agreement, d, case_id in sorted(rows):
        print(f"{agreement:9.3f}  {d:28.3f}  {case_id}")


if __name__ == "__main__":
    main()
