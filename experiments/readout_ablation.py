"""Which part of the architecture makes the image tokens earn their place? One split, held-out site.

    python -m experiments.readout_ablation [--build build/demo_model] [--n-train 300] [--epochs 40] [--seeds 0] [--jobs 2]
    (from the repository root, as a module: it imports ``recipes/train_demo_model.py`` and ``bench/results_md.py``)

On the demo model's cohorts (`make demo-model` makes them; this script synthesises them with the
same function when they are missing): train on the first 300 of its A–D exams (the whole demo
cohort when this was measured) with the shipped training recipe (one patient-grouped
early-stopping split, `train.train_fold`), test on the held-out site E, for each variant of the
readout and the stem's input:

- ``mean``: the estimate read from the mean of all tokens (the architecture before);
- ``attention``: attention pooling (a learned query over the tokens);
- ``attention + liver-relative``: and the stem also reads log intensities relative to the liver's;
- ``attention_max``: attention pooling beside each feature's maximum over the tokens;
- ``attention_max + liver-relative``: both (the shipped architecture).

Each row gives Pearson r on site E of the full model and of the same model without its image
tokens (``without_image_tokens``, an input the model saw in training), and the ridge baseline
trained on the same exams. One split and few seeds: differences under ~0.05 are noise. Writes the
table into bench/RESULTS.md (section ``bench_readout_ablation``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from recipes.train_demo_model import layout, synth_cohorts  # the demo model's cohorts and folders

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "mean": dict(readout="mean", liver_relative=False),
    "attention": dict(readout="attention", liver_relative=False),
    "attention + liver-relative": dict(readout="attention", liver_relative=True),
    "attention_max": dict(readout="attention_max", liver_relative=False),
    "attention_max + liver-relative (shipped)": dict(readout="attention_max", liver_relative=True),
}


def run_variant(job: tuple) -> dict:
    """Train one variant on A–D (single-threaded: the jobs run side by side) and score it on E."""
    name, arch, seed, epochs, build, n_train = job
    from experiments.one_split import train_and_score
    from liverstiffness.manifest import read_manifest
    from liverstiffness.preprocess import PreprocessOptions
    from liverstiffness.stiffness.data import load_cohort
    from liverstiffness.stiffness.network import ModelConfig
    from liverstiffness.stiffness.train import TrainConfig

    train_dir, ext_dir, model_dir, eval_dir = layout(build)
    cfg = TrainConfig(epochs=epochs, batch_size=8, model=ModelConfig(**arch))   # the shipped recipe otherwise
    options = PreprocessOptions(register=cfg.register, n4=cfg.n4)
    # The same preprocessing caches as `make demo-model` (train and evaluate keep theirs in their out folder).
    train = load_cohort(read_manifest(train_dir / "manifest.csv", require_label=True)[:n_train], cfg.spec, options,
                        model_dir / "cache", 1, False)
    test = load_cohort(read_manifest(ext_dir / "manifest.csv", require_label=True), cfg.spec, options,
                       eval_dir / "cache", 1, False)
    row = {"variant": name, "seed": seed, **train_and_score(train, test, cfg, seed, name)}
    print(json.dumps(row), flush=True)
    with open(build / "readout_ablation.jsonl", "a") as fh:      # every run's rows, for the table
        fh.write(json.dumps({**row, "epochs": epochs}) + "\n")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=ROOT / "build" / "demo_model")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--n-train", type=int, default=300, help="the first N exams of the demo model's A–D cohort")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--jobs", type=int, default=2, help="variants trained side by side, one thread each")
    ap.add_argument("--table-only", action="store_true",
                    help="only rewrite the RESULTS.md table from the rows earlier runs left in BUILD/readout_ablation.jsonl")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not a.table_only:
        synth_cohorts(a.build)
        jobs = [(name, arch, int(s), a.epochs, a.build, a.n_train) for s in a.seeds.split(",") for name, arch in VARIANTS.items()]
        with ProcessPoolExecutor(a.jobs) as pool:
            list(pool.map(run_variant, jobs))
    # The table holds every seed run so far at these epochs (runs of other seeds add up).
    rows = [json.loads(line) for line in open(a.build / "readout_ablation.jsonl")]
    write_results([r for r in rows if r["epochs"] == a.epochs], a)
    return 0


def write_results(rows: list[dict], a) -> None:
    """The mean over seeds of each variant's r (full, without image tokens, ridge) as a table."""
    import numpy as np

    from bench.results_md import write_section

    seeds = sorted({r["seed"] for r in rows})
    cmd = f"python -m experiments.readout_ablation --seeds {','.join(map(str, seeds))}"
    lines = [f"# Readout and stem-input ablation (`{cmd}`)", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores (about 4–5 min per variant and seed). "
             f"Trained on the first {a.n_train} exams of the demo model's sites A–D (one patient-grouped "
             "early-stopping split, the shipped "
             f"recipe, {a.epochs} epochs, batch 8), tested on the held-out site E (n = 90). Pearson r; "
             "a seed sets both the training seed and the early-stopping split; one split, so differences "
             "under ~0.05 are noise.", "",
             "| variant | seeds | full | without image tokens | full − without (per seed) | ridge baseline |",
             "|---|---|---|---|---|---|"]
    for name in VARIANTS:
        mine = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["seed"])
        if not mine:
            continue
        full, blind = np.mean([r["full"] for r in mine]), np.mean([r["without_image_tokens"] for r in mine])
        per_seed = ", ".join(f"{r['full'] - r['without_image_tokens']:+.3f}" for r in mine)
        lines.append(f"| {name} | {len(mine)} | {full:.3f} | {blind:.3f} | {full - blind:+.3f} ({per_seed}) | "
                     f"{np.mean([r['ridge'] for r in mine]):.3f} |")
    write_section(lines, mark="bench_readout_ablation")


if __name__ == "__main__":
    sys.exit(main())
