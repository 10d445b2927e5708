"""Does self-supervised pretraining (``liverstiffness pretrain``) help a hospital-size labelled cohort?

    python -m experiments.pretrain_ablation [--n-labelled 300] [--seeds 0,1,2] [--jobs 2]
    (from the repository root, as a module: it imports ``experiments/one_split.py``, ``recipes/train_demo_model.py``
    and ``bench/results_md.py``)

Cohorts (default generator; every synthesiser seed here is one the project had not used before,
except the labelled cohort, which is the first N exams of the demo model's seed-1 A–D cohort):

- labelled: the first N exams of seed 1, sites A–D (the training exams, with their MRE labels);
- unlabelled, other sites: seed 43, sites A–D (labels thrown away);
- unlabelled, target site: seed 42, site E (the hospital's own scanner; labels thrown away);
- test: seed 41, site E, never looked at before these runs (its labels are used only to score).

Conditions, each trained with the shipped recipe (``TrainConfig()``, one patient-grouped early-stopping
split, ``train.train_fold``) from the same labelled exams: from scratch; from the encoder pretrained on
the other sites' unlabelled exams; from the encoder pretrained on the target site's unlabelled exams.
Scored on the test site: Pearson r of ln kPa (the one scale used throughout) with a 95 % bootstrap CI
resampled by patient, the same model without its image tokens, the ridge baseline on the same
labelled exams; and each pretrained condition minus scratch per training seed, with its patient
bootstrap CI. Writes bench/RESULTS.md (section ``bench_pretrain``); every run's row is kept in
build/pretrain_ablation/rows.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from recipes.train_demo_model import run  # `liverstiffness ARGS` in a subprocess, as the demo recipe runs it

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "pretrain_ablation"
COHORTS = {  # name: (synthesiser seed, sites, exams)
    "labelled": (1, "A,B,C,D", None),
    "unlabelled_other_sites": (43, "A,B,C,D", 600),
    "unlabelled_target_site": (42, "E", 300),
    "test": (41, "E", 120),
}
CONDITIONS = {"scratch": None, "pretrained_other_sites": "unlabelled_other_sites",
              "pretrained_target_site": "unlabelled_target_site"}


def make_cohorts(n_labelled: int) -> dict[str, Path]:
    paths = {}
    for name, (seed, sites, n) in COHORTS.items():
        out = WORK / name
        if not (out / "manifest.csv").is_file():
            run("synth", "--out", str(out), "--n", str(n or n_labelled), "--seed", str(seed), "--sites", sites,
                            "--workers", "2", "--quiet")
        paths[name] = out / "manifest.csv"
    return paths


def pretrain_job(job: tuple) -> str:
    name, manifest, epochs = job
    from liverstiffness.stiffness.pretrain import META_FILE, PretrainConfig, pretrain

    out = WORK / f"encoder_{name}"
    if not (out / META_FILE).is_file():
        import torch
        torch.set_num_threads(1)
        pretrain(manifest, out, PretrainConfig(epochs=epochs, workers=1), progress=False)
    return str(out)


def _load(manifest: Path, n: int | None = None, workers: int = 1):
    from liverstiffness.manifest import read_manifest
    from liverstiffness.preprocess import PreprocessOptions
    from liverstiffness.stiffness.data import load_cohort
    from liverstiffness.stiffness.train import TrainConfig

    cfg = TrainConfig()
    records = read_manifest(manifest, require_label=True)
    return load_cohort(records[:n] if n else records, cfg.spec, PreprocessOptions(register=cfg.register, n4=cfg.n4),
                       WORK / "cache", workers, False)


def train_job(job: tuple) -> dict:
    """One condition and training seed: train on the labelled exams, predict the test site."""
    condition, seed, manifests, n_labelled = job
    import numpy as np

    from experiments.one_split import train_and_score
    from liverstiffness.stiffness.pretrain import read_pretrained
    from liverstiffness.stiffness.train import TrainConfig

    cfg = TrainConfig()                                   # the shipped recipe
    init = None
    if CONDITIONS[condition]:
        model, spec, options, init = read_pretrained(WORK / f"encoder_{CONDITIONS[condition]}")
        assert model == cfg.model and spec == cfg.spec   # the same architecture as from scratch
    train, test = _load(manifests["labelled"], n_labelled), _load(manifests["test"])
    row = {"condition": condition, "seed": seed, "n_labelled": len(train.images), "n_test": len(test.images),
           **train_and_score(train, test, cfg, seed, f"{condition} seed {seed}", init_state=init, keep_predictions=True)}
    row["test_log_kpa"] = [float(v) for v in test.log_kpa]
    row["test_patients"] = [r.patient_id for r in test.records]
    row["pred_full"] = [float(v) for v in np.asarray(row.pop("predictions")["full"])]
    with open(WORK / "rows.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
    return row


def summarise(rows: list[dict]) -> list[str]:
    import numpy as np

    from liverstiffness.stiffness.evaluate import BOOTSTRAP, bootstrap_r_ci, bootstrap_r_difference

    y = np.array(rows[0]["test_log_kpa"])
    patients = rows[0]["test_patients"]
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["condition"], r["seed"]): r for r in rows}
    lines = [f"# Self-supervised pretraining with {rows[0]['n_labelled']} labelled exams "
             f"(`python -m experiments.pretrain_ablation --seeds {','.join(map(str, seeds))}`)", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores, default generator only (the `other` "
             "generator, `synth --generator other`, not run yet). Labelled: the first "
             f"{rows[0]['n_labelled']} exams of seed 1, sites A–D. Pretraining (`liverstiffness pretrain`, 30 epochs, "
             "masked-patch reconstruction): 600 unlabelled exams of sites A–D (seed 43), or 300 of the target site E "
             f"(seed 42). Test: site E, seed 41 (n = {len(y)} exams of {len(set(patients))} patients), not looked at "
             "before. Shipped recipe, one patient-grouped early-stopping split per seed. Pearson r of ln kPa; 95 % "
             f"CIs from {BOOTSTRAP} bootstrap resamples of test patients; mean over seeds with the range of the seeds.",
             "", "| condition | seeds | full r (mean, range) | without image tokens | full − without | ridge baseline "
             "| full − ridge | best epochs |", "|---|---|---|---|---|---|---|---|"]
    for cond in CONDITIONS:
        rs = [by[(cond, s)] for s in seeds if (cond, s) in by]
        if not rs:
            continue
        full = [r["full"] for r in rs]
        blind = [r["without_image_tokens"] for r in rs]
        ridge = rs[0]["ridge"]
        lines.append(f"| {cond.replace('_', ' ')} | {len(rs)} | {np.mean(full):.3f} ({min(full):.3f}–{max(full):.3f}) | "
                     f"{np.mean(blind):.3f} | {np.mean(full) - np.mean(blind):+.3f} | {ridge:.3f} | "
                     f"{np.mean(full) - ridge:+.3f} | {', '.join(str(r['best_epoch']) for r in rs)} |")
    lines += ["", "Per seed, against training from scratch on the same split (difference of r, patient-bootstrap 95 % CI):",
              "", "| condition | seed | r (95 % CI) | scratch r | difference (95 % CI) |", "|---|---|---|---|---|"]
    for cond in list(CONDITIONS)[1:]:
        for s in seeds:
            if (cond, s) not in by or ("scratch", s) not in by:
                continue
            p, q = np.array(by[(cond, s)]["pred_full"]), np.array(by[("scratch", s)]["pred_full"])
            lo, hi = bootstrap_r_ci(y, p, groups=patients)
            d = bootstrap_r_difference(y, p, q, groups=patients)
            r_p, r_q = np.corrcoef(y, p)[0, 1], np.corrcoef(y, q)[0, 1]
            lines.append(f"| {cond.replace('_', ' ')} | {s} | {r_p:.3f} ({lo:.3f}–{hi:.3f}) | {r_q:.3f} | "
                         f"{d['difference']:+.3f} ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}) |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-labelled", type=int, default=300)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    ap.add_argument("--table-only", action="store_true", help="only rewrite the table from build/pretrain_ablation/rows.jsonl")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    WORK.mkdir(parents=True, exist_ok=True)
    if not a.table_only:
        manifests = make_cohorts(a.n_labelled)
        with ProcessPoolExecutor(a.jobs) as pool:
            list(pool.map(pretrain_job, [(name, manifests[name], a.pretrain_epochs)
                                         for name in ("unlabelled_other_sites", "unlabelled_target_site")]))
            _load(manifests["labelled"], a.n_labelled, workers=a.jobs)    # preprocessed once, before the runs share it
            _load(manifests["test"], workers=a.jobs)
            jobs = [(c, int(s), manifests, a.n_labelled) for s in a.seeds.split(",") for c in CONDITIONS]
            list(pool.map(train_job, jobs))
    rows = [json.loads(line) for line in open(WORK / "rows.jsonl")]
    latest = {(r["condition"], r["seed"]): r for r in rows if r["n_labelled"] == a.n_labelled}   # a rerun replaces
    from bench.results_md import write_section

    write_section(summarise(list(latest.values())), mark="bench_pretrain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
