"""Site adaptation without labels or training: re-standardise the model's liver summary on the
target site's unlabelled exams (issue 33, item 2's "cheap second lever").

    python -m experiments.site_normalisation [--generators default,other]
    (from the repository root, as a module: it writes bench/RESULTS.md with ``bench/results_md.py``)

The network standardises its liver summary statistics (``stats_mean``/``stats_std``, set by
training from its cohort) before the summary token and the linear term read them. A new scanner
moves those statistics; recomputing the standardisation from the hospital's own unlabelled exams
is the feature-space analogue of AdaBN (Li et al., "Revisiting batch normalization for practical
domain adaptation", 2017). Its risk: a site whose patients are stiffer on average moves the
statistics too, and re-centring removes that real difference.

Models: the shipped demo model (1200 exams, sites A–D; its three fold networks). Target site E:
300 unlabelled exams (labels thrown away) to re-standardise on, and a test cohort of 120 exams
never used for anything else. Each generator configuration has its own cohorts: "default" reuses
the pretraining experiment's (seeds 42 and 41), "other" (``synth --generator other``, never tuned
on) draws seeds 52 and 51. Scored: Pearson r of ln kPa with a patient-bootstrap 95 % CI, MAE and
mean bias in kPa, as shipped and re-standardised, and their paired difference.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

from recipes.train_demo_model import run  # `liverstiffness ARGS` in a subprocess

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "site_normalisation"
COHORTS = {  # generator: {name: (folder, synthesiser seed, exams)}
    "default": {"unlabelled": (ROOT / "build" / "pretrain_ablation" / "unlabelled_target_site", 42, 300),
                "test": (ROOT / "build" / "pretrain_ablation" / "test", 41, 120)},
    "other": {"unlabelled": (WORK / "other_unlabelled_E", 52, 300), "test": (WORK / "other_test_E", 51, 120)},
}


def cohort(folder: Path, seed: int, n: int, generator: str, ens):
    from liverstiffness.manifest import read_manifest
    from liverstiffness.stiffness.data import load_cohort

    if not (folder / "manifest.csv").is_file():
        run("synth", "--out", str(folder), "--n", str(n), "--seed", str(seed), "--sites", "E",
            "--generator", generator, "--workers", "2", "--quiet")
    records = read_manifest(folder / "manifest.csv", require_label=True)
    return load_cohort(records, ens.meta.spec, ens.meta.preprocess, folder.parent / "cache", 2, False)


def liver_stats(net, images):
    import torch

    x = torch.as_tensor(images, dtype=torch.float32)
    with torch.no_grad():
        gate = net.channel_gate(net.sequences_present(x)).to(x.dtype)
        return net.liver_stats(x * gate)


def restandardised(models, images):
    """Copies of the fold networks with the summary standardised on ``images`` (unlabelled)."""
    out = []
    for net in models:
        s = liver_stats(net, images)
        m = copy.deepcopy(net)
        m.stats_mean.copy_(s.mean(0))
        m.stats_std.copy_(s.std(0).clamp_min(1e-4))
        out.append(m)
    return out


def score(models, data, device) -> tuple[dict, np.ndarray]:
    from liverstiffness.stiffness.ensemble import predict_log
    from liverstiffness.stiffness.evaluate import bootstrap_r_ci

    pred = predict_log(models, data.images, data.cov, data.known, device).mean(0)
    y = data.log_kpa.astype(float)
    groups = [r.patient_id for r in data.records]
    kpa, ref = np.exp(pred), np.exp(y)
    return {"r": float(np.corrcoef(y, pred)[0, 1]), "ci": bootstrap_r_ci(y, pred, groups=groups),
            "mae_kpa": float(np.mean(np.abs(kpa - ref))), "bias_kpa": float(np.mean(kpa - ref))}, pred


def main() -> int:
    from liverstiffness.stiffness.ensemble import Ensemble
    from liverstiffness.stiffness.evaluate import bootstrap_r_difference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generators", default="default,other")
    ap.add_argument("--rows", type=Path, help="only rewrite the RESULTS section from the JSON rows this printed")
    a = ap.parse_args()
    if a.rows:
        write([json.loads(line) for line in a.rows.read_text().splitlines() if line.startswith("{")])
        return 0
    ens = Ensemble.load(None, "cpu")
    rows = []
    for gen in a.generators.split(","):
        c = COHORTS[gen]
        unlabelled = cohort(*c["unlabelled"], gen, ens)
        test = cohort(*c["test"], gen, ens)
        shipped, p0 = score(ens.models, test, ens.device)
        adapted, p1 = score(restandardised(ens.models, unlabelled.images), test, ens.device)
        diff = bootstrap_r_difference(test.log_kpa, p1, p0, groups=[r.patient_id for r in test.records])
        rows.append({"generator": gen, "n_unlabelled": len(unlabelled.records), "n_test": len(test.records),
                     "n_patients": len({r.patient_id for r in test.records}), "shipped": shipped,
                     "restandardised": adapted, "difference": diff})
        print(json.dumps(rows[-1]), flush=True)
    write(rows)
    return 0


def write(rows: list[dict]) -> None:
    from bench.results_md import write_section

    lines = ["# Site adaptation by re-standardising the liver summary (`python -m experiments.site_normalisation`)", "",
             "Shipped demo model (sites A–D, 1200 exams). The summary statistics' standardisation recomputed from 300 "
             "unlabelled exams of the target site E, scored on 120 other site-E exams (Pearson r of ln kPa, "
             "patient-bootstrap 95 % CI). \"other\": the generator configuration never tuned on.", "",
             "| generator | test exams (patients) | as shipped: r (95 % CI), MAE, bias (kPa) | re-standardised: r (95 % CI), "
             "MAE, bias | difference of r (95 % CI) |", "|---|---|---|---|---|"]

    def cell(m):
        return f"{m['r']:.3f} ({m['ci'][0]:.3f}–{m['ci'][1]:.3f}), {m['mae_kpa']:.2f}, {m['bias_kpa']:+.2f}"

    for r in rows:
        d = r["difference"]
        lines.append(f"| {r['generator']} | {r['n_test']} ({r['n_patients']}) | {cell(r['shipped'])} | "
                     f"{cell(r['restandardised'])} | {d['difference']:+.3f} ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}) |")
    refused = [f"{r['generator']}: {COHORTS[r['generator']]['unlabelled'][2] - r['n_unlabelled']} of "
               f"{COHORTS[r['generator']]['unlabelled'][2]} unlabelled and {COHORTS[r['generator']]['test'][2] - r['n_test']} "
               f"of {COHORTS[r['generator']]['test'][2]} test exams" for r in rows]
    lines += ["", "Exams the input checks refused (left out above): " + "; ".join(refused) + "."]
    write_section(lines, mark="bench_site_normalisation")


if __name__ == "__main__":
    sys.exit(main())
