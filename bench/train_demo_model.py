"""Re-create the shipped demo model and its README numbers (`make demo-model`).

1. `liverstiffness synth`: 320 small exams from sites A–D (training) and 80 from site E (external).
2. `liverstiffness train` on A–D (5 folds), timed.
3. `liverstiffness evaluate` on site E: the held-out-site validation, with the ridge baseline.
4. Copy the model folder (without its preprocessing cache) to
   LiverStiffness/liverstiffness/models/demo and print the numbers for the README.
Synthetic data only: the model card says so.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "demo_model"
DEST = ROOT / "LiverStiffness" / "liverstiffness" / "models" / "demo"


def run(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "liverstiffness", *args], check=True)
    return time.perf_counter() - t


def main() -> int:
    train, ext, model, ev = BUILD / "train_cohort", BUILD / "external_E", BUILD / "model", BUILD / "eval_E"
    if not (train / "manifest.csv").is_file():
        run("synth", "--out", str(train), "--n", "320", "--seed", "1", "--sites", "A,B,C,D", "--quiet")
    if not (ext / "manifest.csv").is_file():
        run("synth", "--out", str(ext), "--n", "80", "--seed", "2", "--sites", "E", "--quiet")
    seconds = run("train", "--manifest", str(train / "manifest.csv"), "--out", str(model), "--folds", "5",
                  "--epochs", "40", "--patience", "10", "--seed", "0", "--name", "liverstiffness-vit-demo")
    run("evaluate", "--model", str(model), "--manifest", str(ext / "manifest.csv"), "--out", str(ev), "--quiet")
    if DEST.exists():
        shutil.rmtree(DEST)
    shutil.copytree(model, DEST, ignore=shutil.ignore_patterns("cache"))
    shutil.copy(ev / "metrics.json", DEST / "external_site_E_metrics.json")
    m = json.loads((ev / "metrics.json").read_text())
    print(json.dumps({"train_seconds": round(seconds), "external": {k: m[k] for k in ("transformer", "baseline")}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
