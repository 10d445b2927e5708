"""Where a liver-mask model loses its Dice on the real CHAOS cases it never saw, and what post-processing recovers.

For every CHAOS case the model folder's networks that never saw it give the mask (as ``bench/seg_bench.py``
scores it: their mean probability, the folder's test-time scales, the shipped post-processing). The errors
are split by where they lie:

- by in-plane distance from the manual outline (slice by slice, as an annotator sees it): within one
  native voxel (1.25 mm), within 2.5 mm (one network voxel), within 5 mm, and beyond (gross errors: bowel,
  stomach, missed dark liver);
- in slices the manual label leaves empty (liver called below the tip or above the dome) or the mask
  leaves empty (missed slices).

Each is a fraction of the manual liver volume; the Dice lost is about half of the false-positive plus
false-negative total. Then the Dice of alternative post-processing on the same probabilities (measured,
not shipped unless RESULTS.md says so): 6-connected instead of 26-connected largest component,
in-plane opening, and a slice-by-slice rule that drops a 2-D piece unless most of it lies on the
liver of the slice next to it towards the liver's largest slice.

``--seen`` scores each case by the folder's networks that *did* train on it instead: how well the recipe fits
the livers it learnt from. Against the held-out figures, this separates what generalisation to a new liver
costs from what the grid, the network's capacity and the labels' own noise cost.

    .venv/bin/python -m experiments.seg_error_budget [MODEL_DIR] --chaos DIR [--seen]    (default: the shipped model, held out)
    (from the repository root, as a module: it imports ``bench/seg_bench.py`` and ``bench/seg_unseen.py``)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from bench.seg_bench import held_out_cases  # the cases seg_bench.py scores
from bench.seg_unseen import slice_chain  # defined there: seg_unseen.py scores it on unseen cases
from liverstiffness.segmentation.infer import LiverSegmenter
from liverstiffness.segmentation.metrics import dice
from liverstiffness.segmentation.model_folder import DEFAULT_SEG_MODEL_DIR, load_networks, read_meta
from liverstiffness.segmentation.postprocess import clean_mask, fill_holes, largest_component

BANDS_MM = (1.25, 2.5, 5.0)


def in_plane_distance(mask: np.ndarray, spacing_yx) -> np.ndarray:
    """Per slice, each voxel's in-plane distance (mm) to ``mask`` (0 inside; inf on slices without it)."""
    out = np.full(mask.shape, np.inf)
    for k, s in enumerate(mask):
        if s.any():
            out[k] = ndimage.distance_transform_edt(~s, sampling=spacing_yx)
    return out


def budget(mask: np.ndarray, label: np.ndarray, spacing_yx) -> dict:
    """The false positives and negatives of ``mask`` by where they lie, as fractions of the label volume."""
    fp, fn, n = mask & ~label, label & ~mask, label.sum()
    outside = in_plane_distance(label, spacing_yx)        # a false positive's distance to the liver
    inside = in_plane_distance(~label, spacing_yx)        # a false negative's distance to the outline
    row = {"dice": dice(mask, label)}
    for t in BANDS_MM:
        row[f"fp<={t:g}mm"] = (fp & (outside <= t)).sum() / n
        row[f"fn<={t:g}mm"] = (fn & (inside <= t)).sum() / n
    row["fp_all"], row["fn_all"] = fp.sum() / n, fn.sum() / n
    row["fp_empty_slices"] = fp[~label.any(axis=(1, 2))].sum() / n     # below the tip, above the dome
    row["fn_missed_slices"] = fn[~mask.any(axis=(1, 2))].sum() / n
    return row


def disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= r * r)[None]


def opened(prob: np.ndarray, r: int) -> np.ndarray:
    return fill_holes(largest_component(ndimage.binary_opening(prob >= 0.5, structure=disk(r))))


VARIANTS = {"shipped (26-connected, holes filled)": clean_mask,
            "6-connected": lambda p: fill_holes(largest_component(p >= 0.5, connectivity=1)),
            "opening r = 2 voxels": lambda p: opened(p, 2), "opening r = 4 voxels": lambda p: opened(p, 4),
            "slice chain, any overlap": lambda p: slice_chain(p, 0.0),
            "slice chain, half on the slice before": lambda p: slice_chain(p, 0.5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", type=Path, default=DEFAULT_SEG_MODEL_DIR)
    ap.add_argument("--chaos", type=Path, required=True,
                    help="folder of the 15 CHAOS T2-SPIR cases (image_N.nii.gz / label_N.nii.gz)")
    ap.add_argument("--seen", action="store_true", help="score each case by the networks that trained on it")
    args = ap.parse_args()
    meta = read_meta(args.model)
    rows, variants = [], {name: [] for name in VARIANTS}
    networks = load_networks(args.model, meta, "cpu")      # every network once; each case picks its own
    for case in held_out_cases(args.chaos, [], meta.spec):
        image, label_img = case.originals()
        held = meta.networks_holding_out(case.case_id)
        nets = [i for i in range(len(networks)) if (i in held) != args.seen]
        seg = LiverSegmenter(meta, [networks[i] for i in nets], args.model, torch.device("cpu"))
        prob = sitk.GetArrayFromImage(seg.segment(image, case.case_id, require_liver=False).probability)
        label = sitk.GetArrayFromImage(label_img) > 0
        spacing_yx = image.GetSpacing()[1::-1]
        rows.append({"case": case.case_id, **budget(clean_mask(prob), label, spacing_yx)})
        for name, post in VARIANTS.items():
            variants[name].append(dice(post(prob), label))
    keys = [k for k in rows[0] if k != "case"]
    scored_by = "the networks that trained on each case" if args.seen else "the networks that never saw each case"
    print(f"{args.model.name}, scored by {scored_by}: errors as fractions of the manual liver volume, "
          f"{len(rows)} real cases")
    print("case                " + " ".join(f"{k:>16s}" for k in keys))
    for r in rows + [{"case": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in keys}}]:
        print(f"{r['case']:20s}" + " ".join(f"{r[k]:16.3f}" for k in keys))
    print("\npost-processing of the same probabilities: real Dice mean (min)")
    for name, d in variants.items():
        print(f"  {name:40s} {np.mean(d):.4f} ({min(d):.3f})")


if __name__ == "__main__":
    main()
