"""The shipped demo model on real T2w-only scans: healthy liver donors (CHAOS T2-SPIR).

    python -m experiments.chaos_t2w_only [--data DIR] [--automatic-mask]
    (from the repository root, as a module: it writes bench/RESULTS.md with ``bench/results_md.py``)

CHAOS cases are potential living liver donors: their MRE would be expected in the normal range
(about 1.5–2.9 kPa). The demo model was trained on phantoms only, so it may be far off; what
matters is that it says so. Each case runs as a site without T1w and DWI would run it
(``predict --t2w image_N.nii.gz --mask label_N.nii.gz --mask-label 1``, the manual liver label;
no patient facts), and the table lists the estimate, interval, category and every warning. The
check: no case gets a fibrosis category (above the normal bands) without an out-of-distribution
warning. ``--data``: a folder of image_N.nii.gz / label_N.nii.gz (default: the 15 cases in
../shared/data/real/chaos_t2spir, else the 7 in Testing/Data/chaos_t2spir).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = [ROOT.parent / "shared" / "data" / "real" / "chaos_t2spir", ROOT / "Testing" / "Data" / "chaos_t2spir"]
NORMAL_BANDS = ("normal", "normal or inflammation")   # mayo-60hz below 2.9 kPa


def run(data: Path, automatic: bool) -> list[dict]:
    from liverstiffness.manifest import ExamRecord, PatientFacts
    from liverstiffness.predict import PredictOptions, predict_exam
    from liverstiffness.stiffness.ensemble import Ensemble

    ens = Ensemble.load(None, "cpu")
    cases = sorted((int(m.group(1)), p) for p in data.glob("image_*.nii.gz") if (m := re.match(r"image_(\d+)", p.name)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, image in cases:
            exam = ExamRecord(case_id=f"chaos_{n}", patient_id=f"chaos_{n}", t1w=None, t2w=image, dwi=None,
                              mask=None if automatic else data / f"label_{n}.nii.gz", dwi_b=(), facts=PatientFacts(),
                              mask_label=None if automatic else 1)
            rep = predict_exam(exam, ens, Path(tmp) / exam.case_id,
                               PredictOptions(gradient_maps=False, montage=False))
            dist = (rep.input_range or {}).get("feature_distance") or {}
            rows.append({"case": n, "kpa": rep.stiffness_kpa, "interval": rep.interval_kpa, "category": rep.category,
                         "ratio": dist.get("ratio_to_threshold"), "in_range": rep.input_range.get("in_range"),
                         "warnings": rep.warnings})
            print(rows[-1], flush=True)
    return rows


def phantom_control(manifest: Path) -> dict[str, float]:
    """The same feature-distance check on phantom exams of the development site E (not trained on):
    the share flagged, per subset (T2w only and all three), which should stay small."""
    from dataclasses import replace

    import numpy as np
    import torch

    from liverstiffness.manifest import read_manifest
    from liverstiffness.stiffness import embedding_ood
    from liverstiffness.stiffness.augment import SUBSET_VARIANTS, ablation_inputs
    from liverstiffness.stiffness.data import load_cohort
    from liverstiffness.stiffness.ensemble import Ensemble

    ens = Ensemble.load(None, "cpu")
    parts = ens.feature_distribution()
    records = read_manifest(manifest, require_label=True)
    out = {}
    for subset in ("t1w+t2w+dwi", "t2w"):
        # T2w only is preprocessed as a site without T1w and DWI would (reference and body region change).
        recs = records if subset != "t2w" else [replace(r, t1w=None, dwi=None) for r in records]
        data = load_cohort(recs, ens.meta.spec, ens.meta.preprocess, manifest.parent / "cache", progress=False)
        ratios = []
        for k, net in enumerate(ens.models):
            with torch.no_grad():
                available = net.sequences_present(torch.as_tensor(data.images)).numpy()
            present, _ = ablation_inputs(available, SUBSET_VARIANTS[subset])
            feats = embedding_ood.head_features(net, data.images, data.cov, data.known, ens.device, present)
            ratios.append(embedding_ood.score_fold(parts[(subset, k)], feats) / float(parts[(subset, k)]["threshold"]))
        out[subset] = float(np.mean(np.mean(ratios, axis=0) > 1.0))
    out["n"] = len(records)
    return out


def write(rows: list[dict], data: Path, automatic: bool, control: dict | None = None) -> None:
    from bench.results_md import write_section

    def ood(row) -> bool:
        return any(w.startswith(("out of distribution", "inputs outside")) for w in row["warnings"])

    from liverstiffness.cutoffs import CATEGORY_WITHHELD

    unflagged_fibrosis = [r["case"] for r in rows
                          if r["category"] not in (*NORMAL_BANDS, CATEGORY_WITHHELD) and not ood(r)]
    mask = "automatic liver mask (shipped segmenter)" if automatic else "manual liver label"
    command = "python -m experiments.chaos_t2w_only" + (" --automatic-mask" if automatic else "")
    lines = [f"# Real T2w-only scans: CHAOS healthy donors (`{command}`)", "",
             f"{len(rows)} CHAOS T2-SPIR cases ({data.name}), T2w only, {mask}, no patient facts; shipped demo model "
             "(phantom-trained). Expected: normal MRE (about 1.5–2.9 kPa). \"feature distance\": the exam's distance "
             "from held-out training exams with the same sequences in the model's own feature space, as a multiple "
             "of their 99th percentile (> 1: out of distribution).", "",
             "| case | estimate (kPa) | 90 % interval (kPa) | category | feature distance | out-of-distribution warning |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['case']} | {r['kpa']:.2f} | {r['interval'][0]:.2f}–{r['interval'][1]:.2f} | {r['category']} | "
                     f"{ratio} | {'yes' if ood(r) else 'no'} |")
    normal = sum(r["category"] in NORMAL_BANDS for r in rows)
    withheld = sum(r["category"] == CATEGORY_WITHHELD for r in rows)
    in_normal_range = sum(r["kpa"] < 2.9 for r in rows)
    which = f" (cases {', '.join(map(str, unflagged_fibrosis))})" if unflagged_fibrosis else ""
    lines += ["", f"Estimates below 2.9 kPa: {in_normal_range} of {len(rows)}. Category: in the normal bands {normal}, "
              f"not assessed {withheld} (too few sequences for one, see the model card), a fibrosis category "
              f"{len(rows) - normal - withheld}. Out-of-distribution warning: {sum(ood(r) for r in rows)} of {len(rows)}. "
              f"A fibrosis category without a warning: {len(unflagged_fibrosis)}{which}."]
    if control:
        lines.append(f"Control, phantom exams of development site E (n = {control['n']}, never trained on): flagged out of "
                     f"distribution {control['t2w']:.0%} with T2w only, {control['t1w+t2w+dwi']:.0%} with all three "
                     "sequences (T2w-only checked as above; the intensity-range check not included here).")
    write_section(lines, mark="bench_chaos_t2w_only" + ("_auto" if automatic else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=next((d for d in DEFAULT_DATA if d.is_dir()), DEFAULT_DATA[-1]))
    ap.add_argument("--automatic-mask", action="store_true", help="segment the liver instead of the manual label")
    ap.add_argument("--control", type=Path, default=ROOT / "build" / "demo_model" / "external_E" / "manifest.csv",
                    help="phantom manifest for the false-alarm control (recipes.train_demo_model synthesises it)")
    a = ap.parse_args()
    rows = run(a.data, a.automatic_mask)
    control = phantom_control(a.control) if a.control.is_file() else None
    write(rows, a.data, a.automatic_mask, control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
