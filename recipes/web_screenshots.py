"""Screenshots of the real web page for the README, taken by Playwright in Debian's headless chromium.

Serves two synthetic exams (normal size; a clean one and the same with a planted mask defect) with
the shipped demo model, as `make serve` does, and photographs the page after an estimate, during
one, and after a mask check. `make screenshots` runs it (writes Resources/Screenshots/web_*.png):

    .venv/bin/python recipes/web_screenshots.py [--model DIR] [--work DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from liverstiffness.manifest import read_manifest
from liverstiffness.phantom import generate_cohort
from LiverStiffnessLib.process import ChildProcess
from LiverStiffnessWeb.launcher import free_port

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
T = 600_000  # ms


def make_data(root: Path) -> tuple[Path, object]:
    """root/clean and root/defect (a slab cut through the left lobe of the mask: a separate piece)."""
    cohort = root / "cohort"
    if not (cohort / "manifest.csv").is_file():
        generate_cohort(cohort, n=1, seed=2026, sites=("A",), size="normal", progress=False)
    rec = read_manifest(cohort / "manifest.csv")[0]
    data = root / "exams"
    shutil.rmtree(data, ignore_errors=True)
    for name in ("clean", "defect"):
        (data / name).mkdir(parents=True)
        for f in ("t1w.nii.gz", "t2w.nii.gz", "dwi.nii.gz", "mask.nii.gz"):
            shutil.copy2(rec.t1w.parent / f, data / name / f)
        (data / name / "dwi.bval").write_text(" ".join(f"{b:g}" for b in rec.dwi_b))
    img = sitk.ReadImage(str(data / "defect" / "mask.nii.gz"))
    m = sitk.GetArrayFromImage(img) > 0
    cut = int(np.percentile(np.argwhere(m)[:, 2], 85))
    m[:, :, cut:cut + 2] = False
    out = sitk.GetImageFromArray(m.astype(np.uint8))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(data / "defect" / "mask.nii.gz"))
    return data, rec


def stand_in_model(root: Path) -> Path:
    """A small model trained here in a minute on 16 small synthetic exams (as the tests' ``tiny_model``),
    for when the shipped demo model cannot be loaded by this code (its format is older)."""
    from liverstiffness.stiffness.network import ModelConfig
    from liverstiffness.stiffness.train import TrainConfig, train_cv

    out = root / "stand_in_model"
    if not (out / "model.json").is_file():
        manifest = generate_cohort(root / "train", n=16, seed=11, sites=("A", "B", "C"), size="small", progress=False)
        cfg = TrainConfig(folds=2, epochs=2, seed=0, register=False, workers=1, batch_size=4,
                          model=ModelConfig(hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2))
        train_cv(manifest, out, cfg, progress=False)
    return out


def choose_model(given: str | None, root: Path) -> Path | None:
    from liverstiffness.errors import InputError
    from liverstiffness.stiffness.checkpoint import DEMO_MODEL_DIR, read_meta

    if given:
        return Path(given)
    try:
        read_meta(DEMO_MODEL_DIR)
        return None  # the shipped demo model, as `make serve` uses
    except InputError as exc:
        print(f"the shipped demo model cannot be used ({exc}): training a small stand-in model")
        return stand_in_model(root)


def open_exam(page, name: str) -> None:
    page.click(".ls-exam-select")
    page.get_by_role("option", name=name, exact=True).click()
    page.click("#open-exam")
    page.wait_for_function("() => window.trame.state.get('t1w') && !window.trame.state.get('busy')", timeout=T)


def check(page) -> None:
    error = page.evaluate("() => window.trame.state.get('error')")
    if error:
        raise SystemExit(f"the page says: {error}")


def settle(page) -> None:
    page.wait_for_timeout(2500)  # the slice views' last frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", default=str(ROOT / "build" / "screenshots"))
    p.add_argument("--out", default=str(ROOT / "Resources" / "Screenshots"))
    p.add_argument("--model", help="model folder (default: the shipped demo model, or a small stand-in when it cannot be used)")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, rec = make_data(Path(args.work))
    model = choose_model(args.model, Path(args.work))
    port = free_port()
    cmd = [sys.executable, "-m", "liverstiffness", "serve", "--data", str(data), "--port", str(port)]
    server = ChildProcess(cmd + (["--model", str(model)] if model else []), keep=2000)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any("is served at" in x for x in server.new_lines()):
            if server.poll() is not None:
                raise SystemExit("\n".join(server.tail))
            time.sleep(0.2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1250})
            page.set_default_timeout(T)
            page.goto(f"http://127.0.0.1:{port}/")
            open_exam(page, "clean")
            page.fill("#age", f"{rec.facts.age:g}")
            if rec.facts.sex:
                page.evaluate(f"() => window.trame.state.set('sex', {rec.facts.sex!r})")
            page.click("#check-mask")
            page.wait_for_selector("#qa-text")
            page.click("#estimate")
            page.wait_for_function("() => window.trame.state.get('progress') > 0 || window.trame.state.get('error')")
            check(page)
            page.screenshot(path=str(out / "web_running.png"))
            page.wait_for_function("() => window.trame.state.get('result') || window.trame.state.get('error')")
            check(page)
            settle(page)
            page.screenshot(path=str(out / "web_result.png"))
            print(f"estimate on the page: {page.inner_text('#kpa')} kPa")
            page.close()

            page = browser.new_page(viewport={"width": 1500, "height": 1250})
            page.set_default_timeout(T)
            page.goto(f"http://127.0.0.1:{port}/")
            open_exam(page, "defect")
            page.click("#check-mask")
            page.wait_for_selector(".ls-flag")
            page.click(".ls-flag")
            page.wait_for_function("() => (window.trame.state.get('status') || '').startsWith('Showing')")
            settle(page)
            page.screenshot(path=str(out / "web_mask_check.png"))
            browser.close()
    finally:
        server.kill_tree(grace_s=30)
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
