"""The stiffness map of a model trained on elastograms on the web page and in the HTML report, in a
real headless Chromium against the real launcher and session (the servers and helpers of
test_web.py; the shared tiny model has a map decoder): the Result card lists the report's regional
means with the note that the map is a model estimate, not a measurement; "Stiffness map (kPa)"
draws the map written by `predict` over the views in the elastograms' 0–8 kPa scale, with its kPa
colour bar; and a model without a map shows none of it.
"""
import json
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

# The fixtures (one served --data with the exam "clean", one Chromium) and the page helpers of the
# browser tests: imported, so every file drives the page the same way.
import test_web
from test_web import T, assert_no_server_path, new_page, open_exam, shot, state, wait

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from liverstiffness.report import Report  # noqa: E402
from liverstiffness.report_page import write_report_page  # noqa: E402
from LiverStiffnessLib.logic import STIFFNESS_MAP_COLOR_NAME  # noqa: E402
from LiverStiffnessWeb import stiffness_map  # noqa: E402
from LiverStiffnessWeb.result_view import stiffness_map_card  # noqa: E402

browser, server, web_data, _close_pages = test_web.browser, test_web.server, test_web.web_data, test_web._close_pages

ATTENTION, STIFFNESS = "Where the model looked (attention maps)", "Stiffness map (kPa)"


# ---------------------------------------------------------------------------------------------- units

def test_the_views_colour_scale_is_the_elastograms_jet_from_0_to_8_kpa():
    """The bar beside the views is the views' colour table (the logic's) and the montage's scale."""
    from matplotlib import colormaps

    from liverstiffness.montage import MRE_STYLE

    assert stiffness_map.RANGE_KPA == MRE_STYLE.value_range == (0.0, 8.0) and MRE_STYLE.cmap == "jet"
    assert stiffness_map.LEGEND_TICKS_KPA == (0, 2, 4, 6, 8)
    bar = stiffness_map.legend_gradient()
    stops = [tuple(int(v) for v in part.split(")")[0].split(",")) for part in bar.split("rgb(")[1:]]
    assert len(stops) == 9 and bar.endswith(" 100%)")
    for i, rgb in enumerate(stops):
        assert np.array(rgb) == pytest.approx(255 * np.array(colormaps["jet"](i / 8)[:3]), abs=5)   # its 256 steps


def test_the_card_lists_the_regions_of_a_map_and_nothing_without_one():
    plain = SimpleNamespace(stiffness_map=None, outputs={"attention_maps": {}})
    assert stiffness_map_card(plain) is None
    with_map = SimpleNamespace(outputs={"stiffness_map": "stiffness_map.nii.gz"}, stiffness_map={
        "file": "stiffness_map.nii.gz", "unit": "kPa", "note": "a model estimate, not a measurement",
        "liver_mean_kpa": 3.1, "regions_kpa": {"right lobe": 3.256, "left lobe": 2.9}, "regions_by": "geometry"})
    card = stiffness_map_card(with_map)
    assert card["regions"] == [{"region": "right lobe", "kpa": "3.26"}, {"region": "left lobe", "kpa": "2.90"}]
    assert card["note"] == "A model estimate, not a measurement." and card["liver_mean"] == "3.10"
    with_map.outputs = {}                       # a report naming a map its folder lacks: none shown
    assert stiffness_map_card(with_map) is None


# ---------------------------------------------------------------------------------------------- helpers

def estimate(page, server):
    page.click("#estimate")
    page.wait_for_selector("#kpa", timeout=T)
    wait(page, server, "() => window.trame.state.get('status') === 'Done.' && window.trame.state.get('overlay_shown')")


def download(page, button) -> Path:
    with page.expect_download(timeout=T) as dl:
        page.click(button)
    return Path(dl.value.path())


def choose_overlay(page, server, title: str, kind_js: str):
    page.click(".ls-overlay")
    page.get_by_role("option", name=title, exact=True).click()
    wait(page, server, f"() => {{ const o = window.trame.state.get('overlay_shown'); return o && ({kind_js}); }}")


def set_opacity(page, server, key: str, value: float):
    """The opacity slider moved by keyboard (Home: 0, End: 1), as its user may; read back from the views."""
    page.locator(".ls-opacity [role=slider]").focus()
    page.keyboard.press(key)
    wait(page, server, f"() => window.trame.state.get('applied_opacity') === {value}")


def view_pixels(page, tmp_path: Path, name: str) -> np.ndarray:
    """[y, x, rgb] of the first slice view (the axial) as the browser shows it, once its frames settle."""
    box = page.evaluate(
        "() => { const r = [...document.querySelectorAll('img, canvas, video')].map(e => e.getBoundingClientRect())"
        ".filter(r => r.width > 150 && r.height > 150).sort((a, b) => a.left - b.left)[0];"
        " return r && {x: r.left, y: r.top, width: r.width, height: r.height}; }")
    assert box, "no slice view on the page"
    previous = None
    for _ in range(20):   # the server streams frames: wait until two shots a second apart agree
        page.wait_for_timeout(1000)
        path = tmp_path / name
        page.screenshot(path=str(path), clip=box)
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[..., :3].astype(np.float64)
        if previous is not None and np.abs(arr - previous).max() < 8:
            return arr
        previous = arr
    return arr


def nearest_on_scale(colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each colour (n × rgb, 0..255): the kPa of the nearest colour of the views' scale, and how far it is."""
    ts = np.linspace(0, 1, 801)
    scale = 255 * np.array([stiffness_map.jet(t) for t in ts])
    d = np.linalg.norm(colours[:, None, :] - scale[None], axis=2)
    i = d.argmin(axis=1)
    return 8.0 * ts[i], d[np.arange(len(i)), i]


# ---------------------------------------------------------------------------------------------- the page

@pytest.mark.slow
def test_the_stiffness_map_shows_its_regions_and_draws_in_kpa(browser, server, tmp_path):
    page = new_page(browser, server)
    open_exam(page, "clean")
    estimate(page, server)
    report = json.loads(download(page, "#download-json").read_text())
    sm = report["stiffness_map"]
    assert sm and report["outputs"]["stiffness_map"] == "stiffness_map.nii.gz"

    # The Result card: the report's regional means, in its order, and that it is no measurement.
    rows = [[c.inner_text() for c in r.locator("td").all()] for r in page.locator("#stiffness-regions tbody tr").all()]
    assert rows == [[name, f"{v:.2f}"] for name, v in sm["regions_kpa"].items()]
    assert {"right lobe", "left lobe"} <= {r[0] for r in rows} and len(rows) >= 2
    assert [h.inner_text() for h in page.locator("#stiffness-regions th").all()] == ["Region", "Mean kPa"]
    note = page.inner_text("#stiffness-map-note")
    assert "model estimate" in note and "not a measurement" in note
    assert page.inner_text("#stiffness-map-mean") == f"Liver mean {sm['liver_mean_kpa']:.2f} kPa"

    # Where the model looked, by default; the stiffness map one choice away.
    shown = state(page, "overlay_shown")
    assert shown["kind"] == "rollout" and "× uniform share" in page.inner_text("#legend")
    assert page.locator("#stiffness-legend").count() == 0
    page.click(".ls-overlay")
    assert [o.inner_text() for o in page.get_by_role("option").all()] == [ATTENTION, STIFFNESS]
    page.keyboard.press("Escape")
    choose_overlay(page, server, STIFFNESS, "o.kind === 'stiffness_map'")

    # Its colour bar: the elastograms' scale in kPa, 0 to 8; the attention's controls are gone.
    legend = page.locator("#stiffness-legend")
    assert legend.is_visible()
    assert [t.inner_text() for t in legend.locator(".ls-stiffness-tick").all()] == ["0", "2", "4", "6", "8 kPa"]
    bar = page.locator("#stiffness-legend-bar").evaluate("e => getComputedStyle(e).backgroundImage")
    assert bar.startswith("linear-gradient(to right, rgb(0, 0, 128) 0%") and bar.endswith("rgb(128, 0, 0) 100%)")
    for gone in ("#legend", "#map-kind", "#liver-only"):
        assert page.locator(gone).count() == 0, gone
    map_note = page.inner_text("#map-note")
    assert "kPa" in map_note and "0–8 kPa" in map_note and "not a measurement" in map_note

    # What the views draw is the map predict wrote: read back from the views' own MRML nodes.
    with zipfile.ZipFile(download(page, "#download-maps")) as z:
        z.extract("stiffness_map.nii.gz", tmp_path)
    kpa = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "stiffness_map.nii.gz")))
    inside = kpa[kpa > 0]
    shown = state(page, "overlay_shown")
    assert shown["colours"] == STIFFNESS_MAP_COLOR_NAME and shown["window"] == [0.0, 8.0]
    assert 0 < shown["threshold"][0] < inside.min()          # transparent outside the liver only
    assert shown["voxels_above_zero"] == inside.size
    assert shown["mean_above_zero"] == pytest.approx(float(inside.mean()), rel=1e-4)
    assert "stiffness map (kPa)" in shown["name"]

    # ... and in the browser's pixels: at opacity 1 against 0, the pixels the overlay changes are
    # colours of the 0–8 kPa scale, at the map's values.
    set_opacity(page, server, "End", 1.0)
    on = view_pixels(page, tmp_path, "on.png")
    set_opacity(page, server, "Home", 0.0)
    off = view_pixels(page, tmp_path, "off.png")
    changed = np.linalg.norm(on - off, axis=2) > 40
    assert changed.sum() > 300, f"the overlay changed {changed.sum()} pixels"
    at_kpa, distance = nearest_on_scale(on[changed])
    assert np.mean(distance < 60) > 0.9, np.percentile(distance, [50, 90])
    lo, hi = np.percentile(inside, [0.5, 99.5])
    assert np.mean((at_kpa > lo - 0.5) & (at_kpa < hi + 0.5)) > 0.9, (lo, hi, np.percentile(at_kpa, [5, 50, 95]))
    assert np.median(at_kpa) == pytest.approx(np.median(inside), abs=1.0)
    set_opacity(page, server, "End", 1.0)
    legend.scroll_into_view_if_needed()
    shot(page, "web_stiffness_map.png")

    # Back to where the model looked: its map, legend and controls.
    choose_overlay(page, server, ATTENTION, "o.kind === 'rollout'")
    assert "× uniform share" in page.inner_text("#legend") and page.locator("#stiffness-legend").count() == 0
    assert page.locator("#map-kind").count() == 1

    # The HTML report: the map's montage embedded, its regional table and the note.
    html = download(page, "#download-html").read_text()
    assert 'id=stiffness-map-montage alt="Stiffness map (kPa, 0–8)' in html
    assert 'src="data:image/png;base64,' in html.split("id=stiffness-map-montage")[1][:200]
    for name, v in sm["regions_kpa"].items():
        assert f"<tr><td>{name}</td><td>{v:.2f}</td></tr>" in html
    assert "not a measurement" in html.split("id=stiffness-map-note")[1][:400]
    assert_no_server_path(page, server)
    page.context.close()


# ---------------------------------------------------------------------------------------------- the HTML report

def test_the_report_page_embeds_the_map_montage_and_its_regional_table(tiny_model, one_case, tmp_path):
    from liverstiffness.cli.main import main

    out = tmp_path / "res"
    assert main(["predict", "--model", str(tiny_model), "--t1w", str(one_case.t1w), "--t2w", str(one_case.t2w),
                 "--dwi", str(one_case.dwi), "--dwi-b", ",".join(str(b) for b in one_case.dwi_b), "--mask",
                 str(one_case.mask), "--no-qa", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    report = Report.read(out)
    sm = report.stiffness_map
    html = (out / report.outputs["report_page"]).read_text()
    import base64

    montage = base64.b64encode((out / report.outputs["stiffness_map_montage"]).read_bytes()).decode("ascii")
    assert f'src="data:image/png;base64,{montage}"' in html       # the montage itself, embedded
    assert "Attention rollout over the T1w" in html                # beside the attention montage
    table = html.split("<table id=stiffness-regions>")[1].split("</table>")[0]
    assert table.count("<tr>") == len(sm["regions_kpa"]) + 1
    for name, v in sm["regions_kpa"].items():
        assert f"<tr><td>{name}</td><td>{v:.2f}</td></tr>" in table
    note = html.split("id=stiffness-map-note>")[1].split("</p>")[0]
    assert note.startswith("A model estimate of the MRE stiffness map") and "not a measurement" in note
    assert f"Liver mean {sm['liver_mean_kpa']:.2f} kPa." in note

    # A report without a map (a model without a decoder): no section, no empty table.
    report.stiffness_map = None
    report.outputs = {k: v for k, v in report.outputs.items() if not k.startswith("stiffness_map")}
    plain = write_report_page(tmp_path / "plain.html", report, out).read_text()
    assert "Stiffness map" not in plain and "stiffness-regions" not in plain and "Attention rollout" in plain


# ---------------------------------------------------------------------------------------------- a model without a map

@pytest.fixture(scope="module")
def plain_server(web_data, model_without_maps, tmp_path_factory):
    """The same --data served with a model trained without elastograms (no map decoder)."""
    model = model_without_maps
    assert json.loads((model / "model.json").read_text())["architecture"]["map_decoder"] is False
    yield from test_web.serve(web_data[0], model, tmp_path_factory.mktemp("plain_serve_tmp"))


@pytest.mark.slow
def test_a_model_without_a_map_shows_no_map_table_or_choice(browser, plain_server):
    page = new_page(browser, plain_server)
    open_exam(page, "clean")
    estimate(page, plain_server)
    assert state(page, "result")["stiffness_map"] is None
    for gone in ("#stiffness-map", "#stiffness-regions", "#stiffness-map-note", "#overlay", "#stiffness-legend"):
        assert page.locator(gone).count() == 0, gone
    assert state(page, "overlay_shown")["kind"] == "rollout"
    assert "× uniform share" in page.inner_text("#legend") and page.locator("#map-kind").count() == 1
    page.click(".ls-map-kind")                       # the attention maps only, as before
    assert STIFFNESS not in [o.inner_text() for o in page.get_by_role("option").all()]
    page.keyboard.press("Escape")
    html = download(page, "#download-html").read_text()
    assert "Stiffness map" not in html and "stiffness-regions" not in html
    page.context.close()
