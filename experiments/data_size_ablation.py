"""Does the image part learn with more training exams? One split per size, held-out site E.

    python -m experiments.data_size_ablation [--sizes 300,600,1200] [--seeds 0] [--epochs 40] [--jobs 2]
    (from the repository root, as a module: it imports ``recipes/train_demo_model.py`` and ``bench/results_md.py``)

The A–D training cohort is synthesised once at the largest size (seed 1; the synthesiser draws
patients in order, so the first N exams of it are the N-exam cohort, and its first 300 are the
cohort the demo model was trained on before). For each size N: train the shipped architecture
and recipe on the first N exams (one patient-grouped early-stopping split, ``train.train_fold``,
one thread), test on the demo model's held-out site E; the ridge baseline is fitted on the same
N exams. Each row: Pearson r on site E of the full model, of the same model without its image
tokens (``without_image_tokens``, seen in training) and of the ridge. One split per seed, and
single splits vary a lot: every run is a row of its own. Writes the table into bench/RESULTS.md
(section ``bench_data_size``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from recipes.train_demo_model import layout, run, synth_cohorts  # the demo model's cohorts and folders

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "data_size"


def train_cohort(n_max: int) -> Path:
    """The seed-1 A–D cohort of ``n_max`` exams (synthesised once)."""
    out = WORK / f"train_cohort_{n_max}"
    if not (out / "manifest.csv").is_file():
        run("synth", "--out", str(out), "--n", str(n_max), "--seed", "1", "--sites", "A,B,C,D", "--workers", "2",
            "--quiet")
    return out / "manifest.csv"


def run_size(job: tuple) -> dict:
    """Train on the first ``n`` exams (single-threaded: the jobs run side by side) and score on E."""
    n, seed, epochs, manifest, build = job
    from experiments.one_split import train_and_score
    from liverstiffness.manifest import read_manifest
    from liverstiffness.preprocess import PreprocessOptions
    from liverstiffness.stiffness.data import load_cohort
    from liverstiffness.stiffness.train import TrainConfig

    _, ext_dir, _, eval_dir = layout(build)
    cfg = TrainConfig(epochs=epochs, batch_size=8)      # the shipped architecture and recipe
    options = PreprocessOptions(register=cfg.register, n4=cfg.n4)
    train = load_cohort(read_manifest(manifest, require_label=True)[:n], cfg.spec, options, WORK / "cache", 1, False)
    test = load_cohort(read_manifest(ext_dir / "manifest.csv", require_label=True), cfg.spec, options,
                       eval_dir / "cache", 1, False)
    row = {"n": n, "seed": seed, "epochs": epochs, **train_and_score(train, test, cfg, seed, f"n={n}")}
    print(json.dumps(row), flush=True)
    with open(WORK / "rows.jsonl", "a") as fh:       # every run's rows, for the table
        fh.write(json.dumps(row) + "\n")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=ROOT / "build" / "demo_model", help="the demo model's build folder (site E)")
    ap.add_argument("--sizes", default="300,600,1200", help="comma-separated numbers of A–D training exams")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--jobs", type=int, default=2, help="sizes trained side by side, one thread each")
    ap.add_argument("--table-only", action="store_true",
                    help="only rewrite the RESULTS.md table from the rows earlier runs left in build/data_size/rows.jsonl")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    WORK.mkdir(parents=True, exist_ok=True)
    if not a.table_only:
        sizes = sorted({int(s) for s in a.sizes.split(",")}, reverse=True)   # the longest job first
        synth_cohorts(a.build)
        manifest = train_cohort(sizes[0])
        jobs = [(n, int(s), a.epochs, manifest, a.build) for n in sizes for s in a.seeds.split(",")]
        with ProcessPoolExecutor(a.jobs) as pool:
            list(pool.map(run_size, jobs))
    rows = [json.loads(line) for line in open(WORK / "rows.jsonl")]
    write_results([r for r in rows if r["epochs"] == a.epochs], a.epochs)
    return 0


def write_results(rows: list[dict], epochs: int) -> None:
    """One table row per run (size and seed): single splits vary too much for a mean to say it."""
    from bench.results_md import write_section

    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Training-set size (`python -m experiments.data_size_ablation --seeds {','.join(map(str, seeds))}`)", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores. The shipped architecture and recipe "
             f"({epochs} epochs, batch 8, one patient-grouped early-stopping split) trained on the first N exams of "
             "one seed-1 A–D cohort, tested on the held-out site E (n = 90); the ridge baseline fitted on the same "
             "N exams. Pearson r; one row per run (a seed sets the training seed and the early-stopping split).", "",
             "| A–D training exams | seed | full | without image tokens | ridge baseline | full − without "
             "| full − ridge | best epoch | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["n"], r["seed"])):
        lines.append(f"| {r['n']} | {r['seed']} | {r['full']:.3f} | {r['without_image_tokens']:.3f} | {r['ridge']:.3f} | "
                     f"{r['full'] - r['without_image_tokens']:+.3f} | {r['full'] - r['ridge']:+.3f} | "
                     f"{r['best_epoch']} | {r['minutes']:.1f} |")
    write_section(lines, mark="bench_data_size")


if __name__ == "__main__":
    sys.exit(main())
