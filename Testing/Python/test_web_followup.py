"""Follow-up on the web page (issue 36), in a real headless Chromium against the real launcher
and session (the servers and helpers of test_web.py): after two exams are estimated in one
session, the second result is compared with the first in the one line of the Slicer panel; an
uploaded earlier report.json is compared too, a change beyond repeatability says so, and a report
of another model is refused in one line until "Compare anyway" is ticked, which then warns.
"""
import json
import sys
from pathlib import Path

import pytest

# The fixtures (one served --data with the exams "clean" and "facts", one Chromium) and the page
# helpers of the browser tests: imported, so every file drives the page the same way.
import test_web
from test_web import T, assert_no_server_path, new_page, open_exam, shot, state, wait

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from liverstiffness.report import Report  # noqa: E402
from LiverStiffnessLib.followup_nodes import compare_reports  # noqa: E402

browser, server, web_data, _close_pages = test_web.browser, test_web.server, test_web.web_data, test_web._close_pages

pytestmark = pytest.mark.slow   # drives Chromium against the served page


def estimate(page, server):
    page.click("#estimate")
    page.wait_for_selector("#kpa", timeout=T)
    wait(page, server, "() => window.trame.state.get('status') === 'Done.'")


def report_json(page) -> dict:
    with page.expect_download(timeout=T) as dl:
        page.click("#download-json")
    return json.loads(Path(dl.value.path()).read_text())


def choose_earlier(page, name_starts: str) -> None:
    page.click(".ls-followup-select")
    page.get_by_role("option").filter(has_text=name_starts).first.click()


def upload_earlier(page, server, path: Path) -> None:
    page.set_input_files("#followup-upload", [str(path)])
    wait(page, server, f"() => (window.trame.state.get('followup_items') || []).some(i => i.title.startsWith({path.name!r}))"
                       " && window.trame.state.get('followup')")


def test_two_exams_of_a_session_are_compared_and_another_model_is_refused(browser, server, tmp_path):
    page = new_page(browser, server)
    open_exam(page, "clean")
    estimate(page, server)
    first = report_json(page)
    # nothing earlier yet: the chooser says to upload a report
    page.click(".ls-followup-select")
    page.wait_for_selector("text=No other result in this session: upload its report.json", timeout=T)
    page.keyboard.press("Escape")

    # the follow-up exam (the same patient's, with the manifest's facts): its result is the later one
    open_exam(page, "facts")
    wait(page, server, "() => (window.trame.state.get('status') || '').startsWith('Opened exam facts')")
    assert page.locator("#kpa").count() == 0                  # the first result went with its exam
    estimate(page, server)
    second = report_json(page)
    assert page.locator("#followup-text").count() == 0       # nothing is compared until the user picks
    choose_earlier(page, f"exam clean: {first['stiffness_kpa']:.2f} kPa")
    page.wait_for_selector("#followup-text", timeout=T)
    expected = compare_reports(Report.from_dict(first), Report.from_dict(second))
    assert expected.comparison is not None
    assert page.inner_text("#followup-text") == expected.text
    assert f"from {first['stiffness_kpa']:.2f} to {second['stiffness_kpa']:.2f} kPa: " in expected.text
    assert "repeatability (MRE 22 %" in expected.text
    assert page.locator("#followup-refused").count() == 0

    # the earlier exam's report.json, uploaded: 30 % lower than this result is a change beyond repeatability
    earlier = dict(first, stiffness_kpa=round(second["stiffness_kpa"] / 1.30, 4))
    (tmp_path / "earlier_report.json").write_text(json.dumps(earlier))
    upload_earlier(page, server, tmp_path / "earlier_report.json")
    wait(page, server, "() => (window.trame.state.get('followup') || {}).beyond === true")
    line = page.inner_text("#followup-text")
    assert line == compare_reports(Report.from_dict(earlier), Report.from_dict(second)).text
    assert f"(+30 %) from {earlier['stiffness_kpa']:.2f} to {second['stiffness_kpa']:.2f} kPa: " \
           "an increase beyond repeatability (MRE 22 %" in line
    assert page.inner_text(".ls-followup-select").find("earlier_report.json (uploaded)") >= 0

    # another model's report: refused in one line until "Compare anyway", which then warns
    other = dict(first, model={**first["model"], "name": "another-model", "version": "9"})
    (tmp_path / "other_model.json").write_text(json.dumps(other))
    upload_earlier(page, server, tmp_path / "other_model.json")
    page.wait_for_selector("#followup-refused", timeout=T)
    refused = page.inner_text("#followup-refused")
    assert refused.startswith("Not compared: the later result was estimated by another model")
    assert "(another-model 9)" in refused and "Compare anyway" in refused and "\n" not in refused
    assert page.locator("#followup-text").count() == 0 and not state(page, "error")
    page.click("#followup-anyway")
    page.wait_for_selector("#followup-text", timeout=T)
    assert page.inner_text("#followup-text").startswith(f"{second['stiffness_kpa'] - other['stiffness_kpa']:+.2f} kPa")
    assert "different models" in page.inner_text("#followup-warnings")
    page.locator("#followup").scroll_into_view_if_needed()
    shot(page, "web_followup.png")

    # not a report: one line naming the file, no server path anywhere
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    page.set_input_files("#followup-upload", [str(tmp_path / "notes.json")])
    wait(page, server, "() => ((window.trame.state.get('followup') || {}).text || '').includes('notes.json')")
    assert page.inner_text("#followup-refused") == "Not compared: notes.json: is not a LiverStiffness report (no stiffness_kpa)"
    assert_no_server_path(page, server)
    page.context.close()
