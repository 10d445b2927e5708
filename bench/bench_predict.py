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
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
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
    """Wall time (s) and peak RSS (MB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) // 1024


def machine() -> str:
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
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"GPU: {gpu}")


def model_numbers(case, model, device: str) -> dict | None:
    """Model + attention per exam (preprocessed input already on the device) and the model's
    throughput on batches of 64 exams, on ``device``; None for CUDA without a GPU."""
    import numpy as np
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return None
    from liverstiffness.attention import compute_maps
    from liverstiffness.ensemble import Ensemble, predict_log
    from liverstiffness.model.covariates import encode
    from liverstiffness.preprocess import prepare, read_exam

    ens = Ensemble.load(model, device)
    sync = torch.cuda.synchronize if ens.device.type == "cuda" else (lambda: None)
    prep = prepare(read_exam(case["t1w"], case["t2w"], case["dwi"], case["mask"], case["dwi_b"]), ens.meta.spec, ens.meta.preprocess)
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lsbench-"))
    from liverstiffness.manifest import read_manifest
    from liverstiffness.phantom import generate_cohort

    rec = read_manifest(generate_cohort(work / "case", n=1, seed=2026, sites=("A",), size="normal", progress=False))[0]
    b = ",".join(f"{v:g}" for v in rec.dwi_b)
    files = [str(rec.t1w), str(rec.t2w), str(rec.dwi), str(rec.mask)]
    cli = [sys.executable, "-m", "liverstiffness", "predict", "--t1w", files[0], "--t2w", files[1], "--dwi", files[2],
           "--dwi-b", b, "--mask", files[3], "--age", "55", "--sex", "F", "--bmi", "29", "--device", "cpu"]
    if args.model:
        cli += ["--model", args.model]
    floor, e2e, peaks, stages = [], [], [], []
    _run([sys.executable, "-c", FLOOR_CODE, *files, b])  # warm the file cache once
    for i in range(args.runs):
        floor.append(_run([sys.executable, "-c", FLOOR_CODE, *files, b])[0])
        wall, peak = _run(cli + ["--out", str(work / f"run{i}")])
        e2e.append(wall)
        peaks.append(peak)
        stages.append(json.loads((work / f"run{i}" / "report.json").read_text())["timings_s"])
    med = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    f, e = statistics.median(floor), statistics.median(e2e)
    case = {"t1w": files[0], "t2w": files[1], "dwi": files[2], "mask": files[3], "dwi_b": rec.dwi_b, "facts": rec.facts}
    cpu, gpu = model_numbers(case, args.model, "cpu"), model_numbers(case, args.model, "cuda")
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    lines = [
        "# Benchmark: `liverstiffness predict` on a normal-size exam", "",
        f"Measured {time.strftime('%Y-%m-%d')} by `make bench` (bench/bench_predict.py), median of {args.runs} runs, each a fresh process.", "",
        f"- Machine: {machine()}",
        f"- Case: synthetic site A exam, T1w {rec.t1w.name} on a 257×203×40 grid (1.48×1.48×6 mm), T2w 272×215×40, "
        f"DWI 128×102×40×{len(rec.dwi_b)}; default maps (rollout, GradCAM, per-sequence saliency), montage, mask QA on.", "",
        "| measure | seconds |", "|---|---|",
        f"| floor: import the libraries predict uses (torch, MONAI, SimpleITK, SciPy, matplotlib, ...) + read the inputs | {f:.2f} |",
        f"| end to end (`predict` command) | {e:.2f} |",
        *[f"| stage: {k} | {v:.3f} |" for k, v in med.items() if k != "total"],
        f"| in-process total (report) | {med['total']:.2f} |", "",
        f"Peak resident memory of the predict process: {max(peaks)} MB.", "",
        "## Targets", "",
        f"- CPU end to end ≤ 2× floor ({2 * f:.2f} s): {e:.2f} s — {ok(e <= 2 * f)}.",
        f"- CPU end to end ≤ 10 s: {e:.2f} s — {ok(e <= 10)}.",
    ]
    if gpu:
        lines += [f"- GPU model + attention ≤ 0.2 s per exam: {gpu['model_attention_s']:.3f} s — {ok(gpu['model_attention_s'] <= 0.2)}.",
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
              "Mask QA registers T2w and DWI to T1w and fits the mask to the liver (three SimpleITK registrations); "
              "preprocessing reuses QA's registrations rather than repeating them. The GPU numbers need a CUDA device: "
              "`make bench` measures them when one is present."]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
