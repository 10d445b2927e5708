"""The browser front end with some of T1w, T2w and DWI unassigned (issue 36), in a real headless
Chromium against the real launcher and session (the servers and helpers of test_web.py): the
estimate runs, the Result card and the HTML report say which sequences were used and why the
others were not, and the slice views show the reference volume (the first used of T1w, T2w, DWI).
"""
import json
from pathlib import Path

import pytest

# The fixtures (one served --data with a clean exam, one Chromium) and the page helpers of the
# browser tests: imported, so both files drive the page the same way.
import test_web
from test_web import T, new_page, open_exam, state, wait

browser, server, web_data, _close_pages = test_web.browser, test_web.server, test_web.web_data, test_web._close_pages

pytestmark = pytest.mark.slow   # drives Chromium against the served page


def unassign(page, server, role):
    """Clear a sequence chooser with its own clear button, as a user does."""
    page.locator(f".ls-pick-{role} .v-field__clearable .v-icon").click()
    wait(page, server, f"() => !window.trame.state.get('{role}')")


def estimate(page, server):
    page.click("#estimate")
    page.wait_for_selector("#kpa", timeout=T)
    wait(page, server, "() => window.trame.state.get('status') === 'Done.'")


def download(page, button) -> str:
    with page.expect_download(timeout=T) as dl:
        page.click(button)
    return Path(dl.value.path()).read_text()


def test_without_the_dwi_the_estimate_uses_t1w_and_t2w_and_says_so(browser, server):
    page = new_page(browser, server)
    open_exam(page, "clean")
    assert page.inner_text("#sequences-note") == "The estimate uses T1w, T2w, DWI."
    unassign(page, server, "dwi")
    wait(page, server, "() => (window.trame.state.get('sequences_note') || '').includes('no DWI')")
    assert page.inner_text("#sequences-note") == "The estimate uses T1w, T2w only (no DWI: not assigned)."
    assert not state(page, "missing") and page.is_enabled("#estimate")
    estimate(page, server)
    assert float(page.inner_text("#kpa")) > 0 and "interval" in page.inner_text("#interval")
    assert page.inner_text("#sequences") == "Sequences used: T1w, T2w only (no DWI: not given)"
    assert state(page, "background") == "t1w" and page.inner_text("#background-name") == "Background: t1w.nii.gz"
    report = json.loads(download(page, "#download-json"))
    assert report["sequences_used"] == ["t1w", "t2w"] and report["sequences_missing"] == {"dwi": "not given"}
    assert report["preprocessing"]["reference_sequence"] == "t1w" and "dwi" not in report["inputs"]
    html = download(page, "#download-html")
    assert "<b>Sequences used:</b> T1w, T2w" in html and "no DWI: not given" in html
    page.context.close()


def test_t2w_alone_runs_on_the_t2w_and_no_sequence_at_all_is_refused(browser, server):
    page = new_page(browser, server)
    open_exam(page, "clean")
    unassign(page, server, "dwi")
    unassign(page, server, "t1w")
    # "Slice views show: T1w" with no T1w assigned: the views show the reference, the T2w
    assert state(page, "background") == "t1w"
    wait(page, server, "() => window.trame.state.get('background_name') === 't2w.nii.gz'")
    assert page.inner_text("#sequences-note") == "The estimate uses T2w only (no T1w: not assigned; no DWI: not assigned)."
    page.click("#check-mask")                                 # mask QA on the T2w's grid
    page.wait_for_selector("#qa-text", timeout=T)
    assert page.inner_text("#qa-text").startswith("Mask OK")
    estimate(page, server)
    assert page.inner_text("#sequences") == "Sequences used: T2w only (no T1w: not given; no DWI: not given)"
    assert state(page, "background") == "t2w" and page.inner_text("#background-name") == "Background: t2w.nii.gz"
    wait(page, server, "() => window.trame.state.get('map_note')")
    warnings = page.inner_text("#warnings")
    assert "estimated without T1w, DWI" in warnings
    html = download(page, "#download-html")
    assert "<b>Sequences used:</b> T2w" in html and "no T1w: not given; no DWI: not given" in html
    assert "Attention rollout over the T2w" in html
    # no sequence at all: the result goes, the button is disabled and one line says why
    unassign(page, server, "t2w")
    wait(page, server, "() => !window.trame.state.get('result')")
    wait(page, server, "() => (window.trame.state.get('missing') || '').startsWith('Select at least one')")
    assert page.inner_text("#missing") == "Select at least one of the T1w, T2w and DWI volumes."
    assert page.is_disabled("#estimate") and page.locator("#kpa").count() == 0
    assert not state(page, "error")
    page.context.close()
