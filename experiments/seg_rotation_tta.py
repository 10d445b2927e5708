"""In-plane rotation as test-time augmentation for the liver mask: does it add to the test-time scales?

    .venv/bin/python -m experiments.seg_rotation_tta [MODEL_DIR] --chaos DIR [--synthetic-manifest CSV ...]
    (from the repository root, as a module: it imports ``bench/seg_bench.py``)

Each held-out case (CHAOS, and the synthetic exams of the manifests) is segmented by the folder's networks
that never saw it, on network grids at the shipped test-time scales (0.9×, 1.0×, 1.1× the in-plane spacing)
and on grids turned by ±6° and ±12° about the image's axial axis (the training augmentation rotates by up to
±15°). Every probability goes back onto the case's own grid, each combination of passes is averaged and
post-processed as the product does (``clean_mask``), and the mean Dice is printed per source. At 0° the
grid is exactly the product's (``grid.network_grid``), so "scales" reproduces the folder's held-out Dice.
"""
from __future__ import annotations

import argparse
from itertools import product
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bench.seg_bench import held_out_cases  # the cases seg_bench.py scores
from liverstiffness import spatial
from liverstiffness.segmentation.grid import normalise
from liverstiffness.segmentation.infer import LiverSegmenter
from liverstiffness.segmentation.metrics import compare
from liverstiffness.segmentation.model_folder import DEFAULT_SEG_MODEL_DIR, read_meta
from liverstiffness.segmentation.postprocess import clean_mask

SCALES = [(0.9, 0), (1.0, 0), (1.1, 0)]
COMBINATIONS = {"scales (shipped)": SCALES,
                "scales + ±6°": SCALES + [(1.0, -6), (1.0, 6)],
                "scales + ±12°": SCALES + [(1.0, -12), (1.0, 12)],
                "scales + ±6° + ±12°": SCALES + [(1.0, a) for a in (-12, -6, 6, 12)],
                "0°, ±12° (no scales)": [(1.0, -12), (1.0, 0), (1.0, 12)],
                "one pass": [(1.0, 0)]}


def turned_grid(image: sitk.Image, spacing_mm, degrees: float) -> sitk.Image:
    """``grid.network_grid`` turned by ``degrees`` about the axial axis through the image box's centre."""
    lo, hi = spatial.bbox_mm(image)
    centre, t = (lo + hi) / 2, np.deg2rad(degrees)
    turn = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    local = (np.array(list(product(*zip(lo, hi)))) - centre) @ turn      # the box's corners on the turned axes
    spacing = np.asarray(spacing_mm, float)
    size = np.maximum(np.ceil((local.max(0) - local.min(0)) / spacing - 1e-6).astype(int), 1)
    origin = centre + turn @ (local.min(0) + spacing / 2)                # at 0°: network_grid's origin
    return spatial.grid_image(origin, spacing, size, turn.flatten())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", type=Path, default=DEFAULT_SEG_MODEL_DIR)
    ap.add_argument("--chaos", type=Path, required=True,
                    help="folder of the 15 CHAOS T2-SPIR cases (image_N.nii.gz / label_N.nii.gz)")
    ap.add_argument("--synthetic-manifest", action="append", default=[])
    args = ap.parse_args()
    meta = read_meta(args.model)
    passes = sorted({p for ps in COMBINATIONS.values() for p in ps})
    segmenters, scores = {}, {}
    for case in held_out_cases(args.chaos, args.synthetic_manifest, meta.spec):
        image, label = case.originals()
        held = tuple(meta.networks_holding_out(case.case_id))
        if held not in segmenters:          # loaded once per set of networks (setdefault would load every time)
            segmenters[held] = LiverSegmenter.load(args.model, "cpu", folds=list(held))
        seg = segmenters[held]
        probs = {}
        for scale, degrees in passes:
            x, y, z = meta.spec.spacing_mm
            grid = turned_grid(image, (x * scale, y * scale, z), degrees)
            arr = sitk.GetArrayFromImage(spatial.resample_like(sitk.Cast(image, sitk.sitkFloat32), grid))
            p = sitk.GetImageFromArray(np.mean(seg.fold_probabilities(normalise(arr, meta.spec.percentiles)), axis=0))
            p.CopyInformation(grid)
            probs[(scale, degrees)] = sitk.GetArrayFromImage(spatial.resample_like(p, image, antialias=False))
        row = {}
        for name, combo in COMBINATIONS.items():
            mask = sitk.GetImageFromArray(clean_mask(np.mean([probs[p] for p in combo], axis=0)).astype(np.uint8))
            mask.CopyInformation(image)
            row[name] = compare(mask, label)["dice"]
        scores.setdefault(case.source, []).append(row)
        print(case.case_id, {k: round(v, 4) for k, v in row.items()}, flush=True)
    for source, rows in scores.items():
        print(f"{source} (n = {len(rows)}): mean Dice (min)")
        for name in COMBINATIONS:
            d = [r[name] for r in rows]
            print(f"  {name:24s} {np.mean(d):.4f} ({min(d):.3f})")


if __name__ == "__main__":
    main()
