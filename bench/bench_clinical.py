"""Memory and time of `liverstiffness predict` at clinical resolution, and over a long batch.

1. One exam at clinical resolution (synthetic, Siemens 3 T-like): a 3-D T1w of 512 × 512 × 160
   voxels at 0.75 × 0.75 × 1.5 mm, a T2w at 1.0 × 1.0 × 5 mm, a 4-D DWI with four b-values
   (0, 50, 400, 800 s/mm²) at 2 × 2 × 5 mm. `predict` with the default maps and the montage,
   each run a fresh process: wall time, stages, and the process's peak resident memory.
2. A batch of N (default 200) small synthetic exams from sites A–E: `predict --manifest` in one
   process, one case at a time: wall time per exam, peak memory, and the resident memory sampled
   every second (so that growth over the batch, a leak, would show).

Target (issue 12): below 4 GB peak on the CPU. Writes its section of bench/RESULTS.md.

Usage: .venv/bin/python bench/bench_clinical.py [--runs 2] [--batch 200] [--skip-exam] [--skip-batch]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from measure import run_measured

HERE = Path(__file__).resolve().parent
MARK = "bench_clinical"
GB = 2 ** 30


def clinical_site():
    from liverstiffness.phantom.sites import SITES, SequenceGrid

    return replace(SITES["B"], name="K",
                   t1w=SequenceGrid((0.75, 0.75, 1.5), (384.0, 384.0, 240.0)),      # 512 × 512 × 160
                   t2w=SequenceGrid((1.0, 1.0, 5.0), (380.0, 300.0, 240.0)),
                   dwi=SequenceGrid((2.0, 2.0, 5.0), (380.0, 300.0, 240.0)),
                   b_values=(0.0, 50.0, 400.0, 800.0))


def exam_section(work: Path, runs: int) -> list[str]:
    from liverstiffness.manifest import read_manifest
    from liverstiffness.phantom import generate_cohort
    from liverstiffness.phantom.sites import SITES

    SITES["K"] = clinical_site()
    t = time.perf_counter()
    try:
        rec = read_manifest(generate_cohort(work / "clinical", n=1, seed=7, sites=("K",), size="normal", progress=False))[0]
    finally:
        del SITES["K"]
    gen_s = time.perf_counter() - t
    import SimpleITK as sitk
    sizes = {k: sitk.ImageFileReader() for k in ("t1w", "t2w", "dwi")}
    dims = {}
    for k, r in sizes.items():
        r.SetFileName(str(getattr(rec, k)))
        r.ReadImageInformation()
        dims[k] = "×".join(str(s) for s in r.GetSize())
    cli = [sys.executable, "-m", "liverstiffness", "predict", "--t1w", str(rec.t1w), "--t2w", str(rec.t2w),
           "--dwi", str(rec.dwi), "--dwi-b", ",".join(f"{b:g}" for b in rec.dwi_b), "--mask", str(rec.mask),
           "--age", "55", "--sex", "F", "--bmi", "29", "--device", "cpu"]
    res = []
    for i in range(runs):
        r = run_measured(cli + ["--out", str(work / f"clinical_run{i}")])
        r["report"] = json.loads((work / f"clinical_run{i}" / "report.json").read_text())
        res.append(r)
    wall = statistics.median(r["wall_s"] for r in res)
    peak = max(r["peak_bytes"] for r in res)
    stages = {k: statistics.median(r["report"]["timings_s"][k] for r in res) for k in res[0]["report"]["timings_s"]}
    voxels = sum(_voxels(getattr(rec, k)) for k in ("t1w", "t2w", "dwi", "mask"))
    return [
        "## One exam at clinical resolution", "",
        f"T1w {dims['t1w']} voxels at 0.75×0.75×1.5 mm (3-D GRE), T2w {dims['t2w']} at 1.0×1.0×5 mm, DWI {dims['dwi']} "
        f"(b = {', '.join(f'{b:g}' for b in rec.dwi_b)} s/mm²) at 2×2×5 mm, mask on the T1w grid: {voxels / 1e6:.0f} M voxels "
        f"in all. Synthetic (Siemens 3 T-like profile; generating it took {gen_s:.0f} s). `predict` with the default maps "
        f"and the montage on the CPU, {runs} run(s), each a fresh process.", "",
        "| measure | value |", "|---|---|",
        f"| peak resident memory | **{peak / GB:.2f} GB** (target < 4 GB: {'met' if peak < 4 * GB else 'NOT met'}) |",
        f"| end to end (median) | {wall:.1f} s |",
        *[f"| stage: {k} | {v:.2f} s |" for k, v in stages.items() if k != "total"],
        f"| estimate | {res[0]['report']['stiffness_kpa']:.2f} kPa, {len(res[0]['report']['warnings'])} warning(s) |", "",
        f"Memory per voxel read: {(peak - 0.9 * GB) / voxels:.0f} bytes beyond ~0.9 GB for the libraries and the model "
        "(`input_checks.BYTES_PER_VOXEL` is set from this, with margin, to refuse exams that cannot fit).", "",
    ]


def _voxels(path: Path) -> int:
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.ReadImageInformation()
    n = 1
    for s in r.GetSize():
        n *= s
    return n


def batch_section(work: Path, n: int) -> list[str]:
    from liverstiffness.phantom import generate_cohort

    t = time.perf_counter()
    manifest = generate_cohort(work / "batch", n=n, seed=200, sites=("A", "B", "C", "D", "E"), size="small", progress=False)
    gen_s = time.perf_counter() - t
    cli = [sys.executable, "-m", "liverstiffness", "predict", "--manifest", str(manifest), "--device", "cpu",
           "--quiet", "--out", str(work / "batch_out")]
    r = run_measured(cli, sample=True)
    rows = (work / "batch_out" / "predictions.csv").read_text().splitlines()[1:]
    ok = sum(",ok," in row for row in rows)
    reports = [json.loads(p.read_text()) for p in (work / "batch_out").glob("*/report.json")]
    per_exam = statistics.median(rep["timings_s"]["total"] for rep in reports)
    rss = [b for _, b in r["samples"]]
    tenth = max(1, len(rss) // 10)
    return [
        f"## A batch of {n} exams", "",
        f"{n} small synthetic exams from sites A–E (generated in {gen_s:.0f} s), `predict --manifest` in one process, "
        "one case at a time, default maps and montage, CPU.", "",
        "| measure | value |", "|---|---|",
        f"| cases done | {ok} of {len(rows)} |",
        f"| wall time, start-up included | {r['wall_s']:.0f} s ({r['wall_s'] / n:.2f} s per exam) |",
        f"| in-process time per exam (median of the reports) | {per_exam:.2f} s |",
        f"| peak resident memory | **{r['peak_bytes'] / GB:.2f} GB** |",
        f"| resident memory, first / last tenth of the run (mean) | {statistics.mean(rss[:tenth]) / GB:.2f} / "
        f"{statistics.mean(rss[-tenth:]) / GB:.2f} GB |" if rss else "| resident memory samples | none |", "",
    ]


def write_section(lines: list[str]) -> None:
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.is_file() else ""
    block = f"<!-- {MARK} -->\n" + "\n".join(lines).rstrip() + f"\n<!-- /{MARK} -->\n"
    pattern = re.compile(rf"<!-- {MARK} -->.*?<!-- /{MARK} -->\n", re.S)
    text = pattern.sub(lambda m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--skip-exam", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lsclinical-"))
    lines = ["# Memory and time at clinical resolution (`bench/bench_clinical.py`)", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores (no GPU), each number one process's "
             "own peak resident memory (wait4). The machine was shared with other jobs: times vary between runs, "
             "memory does not.", ""]
    if not args.skip_exam:
        lines += exam_section(work, args.runs)
        print("\n".join(lines), flush=True)
    if not args.skip_batch:
        lines += batch_section(work, args.batch)
    write_section(lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
