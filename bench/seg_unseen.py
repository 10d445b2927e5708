"""The liver mask model on real labelled cases that none of its networks trained on (not a timed test).

Cross-validation (``bench/seg_bench.py``) scores each training case by the networks that held it out, two
of the shipped ten. This scores what a user runs, the whole folder as ``segment`` runs it, on cases from
outside its training data: the five CHAOS T2-SPIR training cases that the model's 15 training cases leave
out (34, 36, 37, 38, 39), from the same public copy (the Q-Net repository's
``data/CHAOST2/chaos_MR_T2_normalized``, CC BY-SA 4.0; its other 15 cases are byte for byte the model's
training cases). They are a test set: nothing is trained or tuned on them. A folder of ``image_N`` / ``label_N``
pairs; an image that is a training image (``--seen``) in another file or scale is refused before anything is scored.

Beside the ensemble, to tell how much is the ensemble and how much the cases: each single network, each
run's five networks, the five pairs (run 0 and run 1 of one fold index: two networks, as cross-validation
scores a case), and the slice-chain post-processing of ``experiments/seg_error_budget.py`` on the ensemble's
probability (chosen on the 15 training cases, not shipped; here scored once on cases it was not chosen on).

    .venv/bin/python bench/seg_unseen.py --data DIR --seen DIR [--seen DIR ...] [--model DIR] [--update-model [--about TEXT]]
        [--out bench/seg_results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from liverstiffness.errors import EXIT_BAD_INPUT, InputError
from liverstiffness.segmentation.infer import LiverSegmenter
from liverstiffness.segmentation.metrics import dice, json_ready
from liverstiffness.segmentation.model_card import record_metrics
from liverstiffness.segmentation.model_folder import DEFAULT_SEG_MODEL_DIR
from liverstiffness.segmentation.postprocess import clean_mask
from liverstiffness.segmentation.train import summarise
from liverstiffness.segmentation.unseen import (
    PROTOCOL,
    UnseenCase,
    segment_unseen,
    unseen_pairs,
    unseen_row,
)

ROOT = Path(__file__).resolve().parents[1]


# The post-processing variant that experiments/seg_error_budget.py chose on the 15 training cases (not shipped);
# defined here, where a benchmark uses it, and imported from here by that experiment.
def slice_chain(prob: np.ndarray, overlap: float) -> np.ndarray:
    """The shipped mask, then from its largest slice outwards each slice keeps only the 2-D pieces of which
    more than ``overlap`` lies on the kept liver of the slice before (thin leaks below the tip or into bowel)."""
    mask = clean_mask(prob)
    if not mask.any():
        return mask
    centre = int(np.argmax(mask.sum(axis=(1, 2))))
    for order in (range(centre - 1, -1, -1), range(centre + 1, mask.shape[0])):
        prev = centre
        for k in order:
            pieces, n = ndimage.label(mask[k])
            keep = np.zeros_like(mask[k])
            for i in range(1, n + 1):
                piece = pieces == i
                if (piece & mask[prev]).sum() > overlap * piece.sum():
                    keep |= piece
            mask[k], prev = keep, k
    return mask


def subsets(seg: LiverSegmenter) -> dict[str, list[int]]:
    """Network subsets by index: each single network, each run, and each fold index's pair across runs."""
    folds = seg.meta.folds
    out = {f["file"]: [i] for i, f in enumerate(folds)}
    runs = sorted({f.get("run", 0) for f in folds})
    for r in runs:
        out[f"run {r}"] = [i for i, f in enumerate(folds) if f.get("run", 0) == r]
    if len(runs) == 2:
        per_run = [out[f"run {r}"] for r in runs]
        for k, (a, b) in enumerate(zip(*per_run)):
            out[f"pair {k}"] = [a, b]
    return out


def decomposition(seg: LiverSegmenter, cases: list[UnseenCase]) -> dict:
    """Mean Dice over the cases of each network subset, and of the slice chain on the whole ensemble's
    probability (the cases as the whole ensemble segmented them)."""
    labels = {c.case_id: sitk.GetArrayFromImage(c.liver) > 0 for c in cases}
    scores = {}
    for name, idx in subsets(seg).items():
        sub = LiverSegmenter(seg.meta, [seg.networks[i] for i in idx], seg.model_dir, seg.device)
        scores[name] = {c.case_id: dice(sitk.GetArrayFromImage(sub.segment(c.image, require_liver=False).mask),
                                        labels[c.case_id]) for c in cases}
    chain = {c.case_id: dice(slice_chain(sitk.GetArrayFromImage(c.result.probability), 0.5), labels[c.case_id])
             for c in cases}
    mean = {k: round(float(np.mean(list(v.values()))), 4) for k, v in scores.items()}
    kinds = {"single networks": [k for k in scores if k.endswith(".pt")],
             "runs (one run's networks)": [k for k in scores if k.startswith("run ")],
             "pairs (2 networks, one per run)": [k for k in scores if k.startswith("pair ")]}
    return {"mean_dice": mean,
            "by_kind": {kind: {"mean": round(float(np.mean([mean[k] for k in keys])), 4),
                               "min": min(mean[k] for k in keys), "max": max(mean[k] for k in keys)}
                        for kind, keys in kinds.items() if keys},
            "slice_chain_half": {"per_case": {c: round(v, 4) for c, v in chain.items()},
                                 "mean": round(float(np.mean(list(chain.values()))), 4)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder of image_N / label_N pairs (label 1: liver) no network trained on")
    ap.add_argument("--model", default=str(DEFAULT_SEG_MODEL_DIR))
    ap.add_argument("--seen", action="append", required=True,
                    help="a folder of the model's training pairs (refused as test cases), e.g. the folder of the "
                         "15 CHAOS T2-SPIR cases (image_N.nii.gz / label_N.nii.gz); may be repeated")
    ap.add_argument("--about", default="", help="where the cases come from, for the model card")
    ap.add_argument("--update-model", action="store_true", help="write the scores into the model folder and its card")
    ap.add_argument("--out", default=str(ROOT / "bench" / "seg_results.json"))
    args = ap.parse_args()
    seen = args.seen
    try:
        pairs = unseen_pairs(args.data, seen)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    seg = LiverSegmenter.load(args.model, "cpu")
    cases = list(segment_unseen(seg, pairs))
    rows = [unseen_row(c) for c in cases]
    for r in rows:
        print(r["case_id"], r["dice"], r["hd95_mm"], r["volume_ml"], r["reference_volume_ml"], r["fold_agreement_dice"],
              "low confidence" if r["low_confidence"] else "", flush=True)
    result = {"protocol": PROTOCOL, "data": args.about, "summary": summarise(rows)["real"], "cases": rows,
              "networks": decomposition(seg, cases)}
    net = result["networks"]
    print(json.dumps({"summary": result["summary"], "by_kind": net["by_kind"], "slice_chain_half": net["slice_chain_half"]},
                     indent=1))
    out = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    out["unseen"] = result
    Path(args.out).write_text(json.dumps(json_ready(out), indent=1, allow_nan=False) + "\n")
    if args.update_model:
        record_metrics(args.model, "unseen", {"protocol": PROTOCOL, "data": args.about, "real": result["summary"],
                                              "cases": {r["case_id"]: r["dice"] for r in rows}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
