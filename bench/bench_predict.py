"""Benchmark of `liverstiffness predict` on a normal-size exam (not a timed test).

Measures, each in a fresh process as a user runs it, the median of several runs of:
  * the floor: importing the libraries and reading the same input files (nothing else);
  * end to end: the predict command, split by stage from its report (read, qa, preprocess,
    model, attention, write), and the peak resident memory of the process;
and model + attention per exam and batched model throughput, on the CPU and, when CUDA is
available, on the GPU.
Targets (from the issue): CPU end-to-end ≤ 2× floor and ≤ 10 s; GPU model + attention ≤ 0.2 s
per exam and ≥ 10 exams/s in batches. Writes bench/RESULTS.md.

Usage: .venv/bin/python bench/bench_predict.py [--runs 5] [--model DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import run_measured
from results_md import write_section

# The floor imports the third-party libraries `predict` uses (nothing of ours but the reader)
# and reads the same files: what any tool built on these libraries pays before doing work.
FLOOR_CODE = """
import sys
import torch, monai.networks.blocks, monai.transforms, monai.visualize, SimpleITK, numpy  # noqa
import scipy.ndimage, scipy.stats, matplotlib.pyplot, tqdm, pydicom  # noqa
from liverstiffness.preprocess import read_exam
read_exam(*sys.argv[1:5], tuple(float(b) for b in sys.argv[5].split(',')))
"""


def _run(cmd) -> tuple[float, int]:
    """Wall time (s) and the child's own peak RSS (MB)."""
    r = run_measured(cmd)
    return r["wall_s"], r["peak_bytes"] // 2 ** 20


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine(load_at_start: float) -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    omp = os.environ.get("OMP_NUM_THREADS")
    load_at_end = _load()
    shared = max(load_at_start, load_at_end) > (os.cpu_count() or 1)
    note = " (more than the cores: other jobs competed for them)" if shared else ""
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"GPU: {gpu}; load average {load_at_start:.1f} at the start, {load_at_end:.1f} at the end{note}"
            + (f"; OMP_NUM_THREADS={omp}" if omp else ""))


def model_numbers(case, model, device: str) -> dict | None:
    """Model + attention per exam (preprocessed input already on the device) and the model's
    throughput on batches of 64 exams, on ``device``; None for CUDA without a GPU."""
    import numpy as np
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return None
    from liverstiffness.preprocess import prepare, read_exam
    from liverstiffness.stiffness.attention import compute_maps
    from liverstiffness.stiffness.covariates import encode
    from liverstiffness.stiffness.ensemble import Ensemble, predict_log

    ens = Ensemble.load(model, device)
    sync = torch.cuda.synchronize if ens.device.type == "cuda" else (lambda: None)
    prep = prepare(read_exam(case["t1w"], case["t2w"], case["dwi"], case["mask"], case["dwi_b"]),
                   ens.meta.spec, ens.meta.preprocess)
    cov, known = encode(case["facts"])
    x = torch.as_tensor(prep.tensor[None], device=ens.device)
    c, k = torch.as_tensor(cov[None], device=ens.device), torch.as_tensor(known[None], device=ens.device)
    times = []
    for i in range(12):
        sync()
        t = time.perf_counter()
        predict_log(ens.models, prep.tensor[None], cov[None], known[None], ens.device)
        compute_maps(ens.models, x, c, k, ens.meta.spec.channels)
        sync()
        if i >= 2:
            times.append(time.perf_counter() - t)
    batch = np.repeat(prep.tensor[None], 64, axis=0)
    covb, knownb = np.repeat(cov[None], 64, 0), np.repeat(known[None], 64, 0)
    predict_log(ens.models, batch, covb, knownb, ens.device, batch=64)
    sync()
    t = time.perf_counter()
    for _ in range(5):
        predict_log(ens.models, batch, covb, knownb, ens.device, batch=64)
    sync()
    return {"model_attention_s": statistics.median(times), "batch_exams_per_s": 5 * 64 / (time.perf_counter() - t)}


def site_case(work: Path, site: str):
    from liverstiffness.manifest import read_manifest
    from liverstiffness.phantom import generate_cohort

    return read_manifest(generate_cohort(work / site, n=1, seed=2026, sites=(site,), size="normal", progress=False))[0]


def measure_site(rec, work: Path, runs: int, model) -> dict:
    """Floor and end-to-end runs, interleaved, on one exam."""
    b = ",".join(f"{v:g}" for v in rec.dwi_b)
    files = [str(rec.t1w), str(rec.t2w), str(rec.dwi), str(rec.mask)]
    cli = [sys.executable, "-m", "liverstiffness", "predict", "--t1w", files[0], "--t2w", files[1], "--dwi", files[2],
           "--dwi-b", b, "--mask", files[3], "--age", "55", "--sex", "F", "--bmi", "29", "--device", "cpu"]
    if model:
        cli += ["--model", model]
    floor, e2e, peaks, stages = [], [], [], []
    _run([sys.executable, "-c", FLOOR_CODE, *files, b])  # warm the file cache once
    for i in range(runs):
        floor.append(_run([sys.executable, "-c", FLOOR_CODE, *files, b])[0])
        out = work / f"{rec.site}_run{i}"
        wall, peak = _run(cli + ["--out", str(out)])
        e2e.append(wall)
        peaks.append(peak)
        stages.append(json.loads((out / "report.json").read_text())["timings_s"])
    return {"floor": statistics.median(floor), "e2e": statistics.median(e2e), "peak_mb": max(peaks),
            "stages": {k: statistics.median(s[k] for s in stages) for k in stages[0]},
            "ratios": [e / f for e, f in zip(e2e, floor)], "files": files, "b": b}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", default=None)
    ap.add_argument("--sites", default="A,B,C,D,E", help="site profiles to time (one normal-size exam each)")
    args = ap.parse_args()
    load_at_start = _load()
    work = Path(tempfile.mkdtemp(prefix="lsbench-"))
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    results = {}
    for site in sites:
        rec = site_case(work, site)
        results[site] = (rec, measure_site(rec, work, args.runs, args.model))
        r = results[site][1]
        print(f"site {site}: floor {r['floor']:.2f} s, predict {r['e2e']:.2f} s ({r['e2e'] / r['floor']:.2f}×), "
              f"peak {r['peak_mb']} MB", flush=True)
    rec, first = results[sites[0]]
    f, e, med = first["floor"], first["e2e"], first["stages"]
    case = {"t1w": first["files"][0], "t2w": first["files"][1], "dwi": first["files"][2], "mask": first["files"][3],
            "dwi_b": rec.dwi_b, "facts": rec.facts}
    cpu, gpu = model_numbers(case, args.model, "cpu"), model_numbers(case, args.model, "cuda")
    ok = lambda c: "met" if c else "NOT met"
    lines = [
        "# Benchmark: `liverstiffness predict` on a normal-size exam of every site profile", "",
        f"Measured {time.strftime('%Y-%m-%d')} by `make bench` (bench/bench_predict.py), median of {args.runs} runs per site, "
        "each a fresh process; the floor and `predict` runs alternate, so both see the same machine load.", "",
        f"- Machine: {machine(load_at_start)}",
        "- Cases: one synthetic normal-size exam per site profile (phantom/sites.py); default maps (rollout, GradCAM, "
        "per-sequence saliency), montage, mask QA, input checks and the bounded registration on.", "",
        "| site | floor: import + read (s) | `predict` end to end (s) | ratio (median; range) | qa (s) | peak memory (MB) |",
        "|---|---|---|---|---|---|",
        *[f"| {s} ({rr.vendor} {rr.field_strength:g} T) | {r['floor']:.2f} | {r['e2e']:.2f} | {r['e2e'] / r['floor']:.2f}× "
          f"({min(r['ratios']):.2f}–{max(r['ratios']):.2f}) | {r['stages']['qa']:.2f} | {r['peak_mb']} |"
          for s, (rr, r) in results.items()], "",
        f"Stages on site {sites[0]} (median, seconds, in-process):", "",
        "| stage | seconds |", "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in med.items() if k != "total"],
        f"| in-process total (report) | {med['total']:.2f} |", "",
        "## Targets", "",
        *[f"- Site {s}: end to end ≤ 2× floor ({2 * r['floor']:.2f} s): {r['e2e']:.2f} s — {ok(r['e2e'] <= 2 * r['floor'])}."
          for s, (rr, r) in results.items()],
        f"- CPU end to end ≤ 10 s on site {sites[0]}: {e:.2f} s — {ok(e <= 10)}.",
    ]
    if gpu:
        lines += [f"- GPU model + attention ≤ 0.2 s per exam: {gpu['model_attention_s']:.3f} s — "
                  f"{ok(gpu['model_attention_s'] <= 0.2)}.",
                  f"- GPU batch throughput ≥ 10 exams/s: {gpu['batch_exams_per_s']:.1f} — {ok(gpu['batch_exams_per_s'] >= 10)}."]
    else:
        lines += ["- GPU targets: not measured on this machine (no CUDA device)."]
    lines += ["", "The same two measures on this CPU (for comparison; the targets are for a GPU): model + attention "
              f"{cpu['model_attention_s']:.3f} s per exam; model alone on batches of 64 preprocessed exams "
              f"{cpu['batch_exams_per_s']:.1f} exams/s."]
    top = sorted(((v, k) for k, v in med.items() if k != "total"), reverse=True)[:2]
    lines += ["", "## Where the time goes", "",
              f"Process start-up and imports take about the floor minus reading ({f - med['read']:.1f} s). Inside the "
              f"process the largest stages are {top[0][1]} ({top[0][0]:.2f} s) and {top[1][1]} ({top[1][0]:.2f} s). "
              "Mask QA registers T2w and DWI to T1w (bounded translation on bias-flattened 4 mm images, checked by "
              "normalised gradient fields, and an FFT search for displaced sequences) and fits the mask to the liver; "
              "preprocessing reuses QA's registrations rather than repeating them. The GPU numbers need a CUDA device: "
              "`make bench` measures them when one is present."]
    write_section(lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
