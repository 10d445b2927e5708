"""Blood tests (AST, ALT, platelets) on the web page, in a real headless Chromium against the real
launcher and session (the server and helpers of test_web.py, over a --data folder of its own): a
manifest's labs fill the fields, FIB-4 shows computed and read-only, the estimate gets the labs as
``liverstiffness predict --ast --alt --platelets`` does (same kPa, the report lists them and FIB-4),
and a value out of its range is one line naming the field.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The server, the browser and the page helpers of the browser tests: imported, so every file drives
# the page the same way. ``web_data`` below is this file's own (the server fixture takes it by name).
import test_web
from test_web import T, _copy_exam, assert_no_server_path, new_page, open_exam, state, wait

browser, server, _close_pages = test_web.browser, test_web.server, test_web._close_pages

pytestmark = pytest.mark.slow   # drives Chromium against the served page

# The manifest's row for the "labs" exam: 61 y, AST 48 U/L, ALT 25 U/L, platelets 160 × 10⁹/L:
# FIB-4 = 61 · 48 / (160 · √25) = 3.66.
MANIFEST_LABS = {"age": "61", "sex": "M", "bmi": "27.5", "pdff": "4", "ast": "48", "alt": "25", "platelets": "160"}


@pytest.fixture(scope="module")
def web_data(small_cohort, tmp_path_factory):
    """--data: an exam with no manifest row ("clean") and one whose manifest row gives the labs ("labs")."""
    rec = small_cohort[1][0]
    data = tmp_path_factory.mktemp("webdata_labs")
    clean = _copy_exam(rec, data / "clean")
    _copy_exam(rec, data / "labs")
    cols = ["case_id", "t1w", "t2w", "dwi", "dwi_b", "mask", *MANIFEST_LABS]
    row = ["labs", "labs/t1w.nii.gz", "labs/t2w.nii.gz", "labs/dwi.nii.gz", "", "labs/mask.nii.gz", *MANIFEST_LABS.values()]
    (data / "manifest.csv").write_text(",".join(cols) + "\n" + ",".join(row) + "\n")
    return data, rec, clean


def download_report(page) -> dict:
    with page.expect_download(timeout=T) as dl:
        page.click("#download-json")
    return json.loads(Path(dl.value.path()).read_text())


def test_a_manifests_labs_fill_the_fields_and_reach_the_estimate_as_on_the_command_line(
        browser, server, web_data, tiny_model, tmp_path):
    data, rec, _ = web_data
    page = new_page(browser, server)
    open_exam(page, "labs")
    assert {k: state(page, k) for k in MANIFEST_LABS} == MANIFEST_LABS
    assert [page.input_value(f"#{k}") for k in ("ast", "alt", "platelets")] == ["48", "25", "160"]
    wait(page, server, "() => window.trame.state.get('fib4') === '3.66'")
    assert page.input_value("#fib4") == "3.66" and page.locator("#fib4").get_attribute("readonly") is not None
    page.click("#estimate")
    page.wait_for_selector("#kpa", timeout=T)
    wait(page, server, "() => window.trame.state.get('status') === 'Done.'")
    kpa_page = page.inner_text("#kpa")
    report = download_report(page)
    patient = report["patient"]
    assert (patient["ast"], patient["alt"], patient["platelets"]) == (48.0, 25.0, 160.0)
    assert patient["fib4"] == pytest.approx(61 * 48 / (160 * 5)) and patient["age"] == 61.0 and patient["sex"] == "M"
    # The tiny test model is trained with the lab tokens (its model.json names them): no "not used" warning.
    assert {"ast", "alt", "platelets", "fib4"} <= set(json.loads((Path(tiny_model) / "model.json").read_text())
                                                      ["architecture"]["covariates"])
    assert not [w for w in report["warnings"] if w.startswith("blood tests given")]

    # The same exam and facts on the command line: the same number (the labs change it for this model).
    exam = data / "labs"
    out = tmp_path / "cli"
    facts = [x for k, v in MANIFEST_LABS.items() for x in (f"--{k}", v)]
    r = subprocess.run([sys.executable, "-m", "liverstiffness", "predict", "--t1w", str(exam / "t1w.nii.gz"),
                        "--t2w", str(exam / "t2w.nii.gz"), "--dwi", str(exam / "dwi.nii.gz"),
                        "--dwi-b", ",".join(f"{b:g}" for b in rec.dwi_b), "--mask", str(exam / "mask.nii.gz"),
                        *facts, "--model", str(tiny_model), "--device", "cpu", "--out", str(out), "--maps", "none",
                        "--quiet"], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    cli = json.loads((out / "report.json").read_text())
    assert kpa_page == f"{cli['stiffness_kpa']:.2f}" and cli["patient"] == patient

    # A lab changed after the estimate takes its result away, as any other patient fact does.
    page.fill("#platelets", "150")
    wait(page, server, "() => !window.trame.state.get('result')")
    assert page.locator("#kpa").count() == 0
    assert_no_server_path(page, server)
    page.context.close()


def test_typed_labs_show_fib4_and_a_bad_platelet_count_is_one_line_naming_it(browser, server):
    page = new_page(browser, server)
    open_exam(page, "clean")                                  # no manifest row: nothing filled in
    assert [state(page, k) for k in ("age", "ast", "alt", "platelets", "fib4")] == [""] * 5
    assert page.input_value("#fib4") == ""
    # 64 y, AST 36 U/L, ALT 16 U/L, platelets 144 × 10⁹/L: FIB-4 = 64 · 36 / (144 · 4) = 4.00
    for key, value in (("age", "64"), ("ast", "36"), ("alt", "16")):
        page.fill(f"#{key}", value)
    wait(page, server, "() => window.trame.state.get('alt') === '16'")
    assert state(page, "fib4") == ""                          # not yet: the platelets are missing
    page.fill("#platelets", "144")
    wait(page, server, "() => window.trame.state.get('fib4') === '4.00'")
    assert page.input_value("#fib4") == "4.00" and page.locator("#facts-problem").count() == 0

    # A count per µL (250000) instead of 10⁹/L: one line naming the field, under the fields and on Estimate.
    page.fill("#platelets", "250000")
    wait(page, server, "() => (window.trame.state.get('facts_problem') || '').includes('platelets')")
    says = "patient platelets: 250000.0 10⁹/L is outside the plausible range 1.0–2000.0 10⁹/L"
    assert page.inner_text("#facts-problem") == says and state(page, "fib4") == ""
    page.click("#estimate")
    wait(page, server, "() => (window.trame.state.get('error') || '').includes('platelets')")
    error = page.inner_text("#error")
    assert error == says and "\n" not in error and "Traceback" not in page.inner_text("body")
    assert not state(page, "running") and page.locator("#kpa").count() == 0
    box = page.locator("#error").bounding_box()
    assert box["height"] < 0.12 * page.viewport_size["height"]

    # Not a number at all: named too; a good value clears the line and FIB-4 comes back.
    page.fill("#ast", "high")
    wait(page, server, "() => (window.trame.state.get('facts_problem') || '').includes('AST')")
    assert page.inner_text("#facts-problem") == "patient AST: 'high' is not a number"
    page.fill("#ast", "36")
    page.fill("#platelets", "144")
    wait(page, server, "() => window.trame.state.get('fib4') === '4.00' && !window.trame.state.get('facts_problem')")
    assert_no_server_path(page, server)
    page.context.close()
