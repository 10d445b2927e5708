"""Benchmark of the automatic liver mask (not a timed test): accuracy, effect on the estimate, time.

1. Held-out accuracy on real MRI: every CHAOS case (and synthetic training exam) segmented by
   the fold networks of the model that never saw it (one per training run, averaged), on the
   case's own grid, after post-processing: Dice, HD95 and mean surface distance (mm) against the manual label.
   ``--update-model`` writes them into the model folder (cv_cases.csv, seg_model.json, card).
2. Effect on the stiffness estimate: synthetic exams of a site the stiffness model never saw
   (site E, 3 T), predicted with the cohort's own mask and with ``--mask auto``; the change in
   kPa against the width of the 90 % interval.
3. Time: one 256 × 256 × 40 T2w volume segmented on this machine's CPU (wall and process CPU
   time, median of 3, model loaded once), and the whole ``segment`` command in a fresh process.

Usage: .venv/bin/python bench/seg_bench.py [--model DIR] --chaos DIR [--synthetic-manifest CSV ...]
       [--n-exams 10] [--update-model] [--out bench/seg_results.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from liverstiffness.segmentation.infer import LiverSegmenter
from liverstiffness.segmentation.metrics import json_ready
from liverstiffness.segmentation.model_folder import (
    DEFAULT_SEG_MODEL_DIR,
    read_meta,
)
from liverstiffness.segmentation.train import score_held_out, summarise

ROOT = Path(__file__).resolve().parents[1]


def held_out_cases(chaos: Path, synthetic: list[str], spec) -> list:
    """The labelled cases a model is scored on: the CHAOS pairs and the synthetic exams of ``synthetic``
    (imported as ``bench.seg_bench.held_out_cases`` by the segmentation run tools in experiments/)."""
    from liverstiffness.segmentation.data import load_manifest, load_pairs

    return load_pairs(chaos, 1, spec) + [c for m in synthetic for c in load_manifest(m, spec)]


def held_out(model_dir: Path, chaos: Path, synthetic: list[str]) -> list[dict]:
    meta = read_meta(model_dir)
    return score_held_out(model_dir, meta, held_out_cases(chaos, synthetic, meta.spec))


def update_model(model_dir: Path, rows: list[dict]) -> None:
    import csv

    from liverstiffness.segmentation.model_card import record_metrics

    with open(model_dir / "cv_cases.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    record_metrics(model_dir, "held_out", summarise(rows))


def stiffness_change(n: int, work: Path) -> dict:
    from liverstiffness.manifest import read_manifest
    from liverstiffness.phantom import generate_cohort
    from liverstiffness.predict import PredictOptions, predict_exam
    from liverstiffness.segmentation.metrics import dice
    from liverstiffness.stiffness.ensemble import Ensemble

    records = read_manifest(generate_cohort(work / "cohort", n=n, seed=2, sites=("E",), size="small", progress=False))
    ens = Ensemble.load(None, "cpu")
    opts = PredictOptions(gradient_maps=False, montage=False)
    rows = []
    for rec in records:
        reps = {}
        for kind, mask in (("manual", rec.mask), ("auto", None)):
            reps[kind] = predict_exam(replace(rec, mask=mask), ens, work / kind / rec.case_id, opts)
        auto = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "auto" / rec.case_id / "mask_auto.nii.gz")))
        manual = sitk.GetArrayFromImage(sitk.ReadImage(str(rec.mask))) > 0
        lo, hi = reps["manual"].interval_kpa
        rows.append({"case_id": rec.case_id, "kpa_manual": reps["manual"].stiffness_kpa,
                     "kpa_auto": reps["auto"].stiffness_kpa,
                     "delta_kpa": round(reps["auto"].stiffness_kpa - reps["manual"].stiffness_kpa, 3),
                     "interval_width_kpa": round(hi - lo, 3), "mask_dice_on_t1w": round(dice(auto, manual), 4),
                     "segment_s": reps["auto"].timings_s.get("segment"),
                     "category_same": reps["auto"].category == reps["manual"].category})
    d = np.array([r["delta_kpa"] for r in rows])
    w = np.array([r["interval_width_kpa"] for r in rows])
    return {"n": len(rows), "site": "E (synthetic, 3 T, never seen by the stiffness model)", "rows": rows,
            "mean_abs_delta_kpa": round(float(np.abs(d).mean()), 3), "max_abs_delta_kpa": round(float(np.abs(d).max()), 3),
            "mean_delta_kpa": round(float(d.mean()), 3), "median_interval_width_kpa": round(float(np.median(w)), 3),
            "max_abs_delta_over_width": round(float((np.abs(d) / w).max()), 3),
            "same_category": int(sum(r["category_same"] for r in rows)),
            "mask_dice_on_t1w_mean": round(float(np.mean([r["mask_dice_on_t1w"] for r in rows])), 4)}


def timing(model_dir: Path, chaos: Path) -> dict:
    """A 256 × 256 × 40 T2w: CHAOS case 32 (46 slices) cut to its 40 middle slices."""
    img = sitk.ReadImage(str(chaos / "image_32.nii.gz"), sitk.sitkFloat32)[:, :, 3:43]
    seg = LiverSegmenter.load(model_dir, "cpu")
    seg.segment(img)  # warm-up
    wall, cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        res = seg.segment(img)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    with tempfile.TemporaryDirectory() as tmp:
        sitk.WriteImage(img, f"{tmp}/t2w.nii.gz")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "liverstiffness", "segment", "--image", f"{tmp}/t2w.nii.gz",
                        "--out", f"{tmp}/m.nii.gz", "--device", "cpu"], check=True, capture_output=True)
        command = time.perf_counter() - t
    return {"volume": list(img.GetSize()), "torch_threads": torch.get_num_threads(),
            "segment_wall_s_median": round(statistics.median(wall), 2), "segment_cpu_s_median": round(statistics.median(cpu), 2),
            "stages_s": res.timings_s, "segment_command_wall_s": round(command, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_SEG_MODEL_DIR))
    ap.add_argument("--chaos", required=True,
                    help="folder of the 15 CHAOS T2-SPIR cases (image_N.nii.gz / label_N.nii.gz)")
    ap.add_argument("--synthetic-manifest", action="append", default=[],
                    help="a manifest of synthetic exams the model was trained with (scored too); may be repeated")
    ap.add_argument("--n-exams", type=int, default=10)
    ap.add_argument("--update-model", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: heldout,stiffness,timing")
    ap.add_argument("--out", default=str(ROOT / "bench" / "seg_results.json"))
    args = ap.parse_args()
    model, chaos, skip = Path(args.model), Path(args.chaos), set(args.skip.split(","))
    out = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    if "heldout" not in skip:
        rows = held_out(model, chaos, args.synthetic_manifest)
        out["held_out"] = {"summary": summarise(rows), "cases": rows}
        if args.update_model:
            update_model(model, rows)
        print(json.dumps(out["held_out"]["summary"], indent=1))
    if "stiffness" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            out["stiffness_change"] = stiffness_change(args.n_exams, Path(tmp))
        print(json.dumps({k: v for k, v in out["stiffness_change"].items() if k != "rows"}, indent=1))
    if "timing" not in skip:
        out["timing"] = timing(model, chaos)
        print(json.dumps(out["timing"], indent=1))
    Path(args.out).write_text(json.dumps(json_ready(out), indent=1, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
