"""The browser front end (`liverstiffness serve`), driven in a real headless Chromium.

Nothing is mocked between the page and liverstiffness' own code: the real launcher starts a real
trame-slicer process per browser session, which reads the files, checks the mask and runs
`liverstiffness predict` in the background. Chromium is Debian's (`make test` / `.ci/run`
install it); Playwright only drives it.
"""
import ast
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk


def missing(why: str):
    """Skip when a tool of the browser tests is not installed here; in CI (where `.ci/run` installs
    them) a missing tool is a failure, so the browser tests can never be skipped there unseen."""
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI installs it (.ci/run: make web-deps test)", pytrace=False)
    pytest.skip(f"{why} (make web-deps test installs it)", allow_module_level=True)


for _module, _what in (("aiohttp", "aiohttp"), ("trame_slicer", "trame-slicer (the 'web' extra)")):
    try:
        __import__(_module)
    except ImportError:
        missing(f"{_what} is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from liverstiffness.errors import InputError  # noqa: E402
from LiverStiffnessLib.process import ChildProcess  # noqa: E402
from LiverStiffnessWeb import exams  # noqa: E402
from LiverStiffnessWeb.launcher import ServeOptions, check_options, free_port, is_loopback  # noqa: E402

pytestmark = pytest.mark.slow   # drives Chromium against the served page

ROOT = Path(__file__).resolve().parents[2]
SHOTS = os.environ.get("LIVERSTIFFNESS_SCREENSHOTS")  # a folder: save the README's screenshots there
# attacker.example resolves to this machine, as a DNS-rebinding attacker's name would; no proxy, so
# it is this machine that answers.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-proxy-server",
                 "--host-resolver-rules=MAP attacker.example 127.0.0.1"]
T = 240_000  # ms: generous for a loaded 2-core CI machine


# ---------------------------------------------------------------------------------------------- units

def test_a_missing_browser_tool_fails_in_ci_and_only_skips_outside(monkeypatch):
    """`.ci/run` exports CI: there a missing tool is a failure, never a silent skip."""
    assert 'export CI="${CI:-true}"' in (ROOT / ".ci" / "run").read_text()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is not installed; CI installs it"):
        missing("chromium is not installed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"chromium is not installed \(make web-deps"):
        missing("chromium is not installed")


def test_paths_outside_the_data_folder_are_refused(tmp_path):
    data = tmp_path / "data"
    (data / "exam").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (data / "link").symlink_to(tmp_path / "secret")
    assert exams.resolve_inside(data, "exam") == (data / "exam").resolve()
    for bad in ("..", "../secret", "/etc", "exam/../../secret", "link"):
        with pytest.raises(InputError, match="outside the data folder"):
            exams.resolve_inside(data, bad)


def test_exam_listing_roles_and_b_values_from_the_manifest(one_case):
    root = one_case.t1w.parent.parent
    assert one_case.case_id in exams.list_exams(root)
    exam = exams.scan_exam(root, one_case.t1w.parent)
    roles = {s.name: s.role for s in exam.series}
    # the phantom's tissue labels (its ground truth) are no series of the exam
    assert (one_case.t1w.parent / "truth_labels.nii.gz").is_file()
    assert roles == {"t1w.nii.gz": "t1w", "t2w.nii.gz": "t2w", "dwi.nii.gz": "dwi", "mask.nii.gz": "mask"}
    dwi = next(s for s in exam.series if s.role == "dwi")
    assert dwi.b_values == tuple(one_case.dwi_b)
    assert float(exam.facts["age"]) == pytest.approx(one_case.facts.age)
    assert exams.guess_role("T2 HASTE ax") == "t2w" and exams.guess_role("ep2d_diff_b50_800") == "dwi"
    assert exams.guess_role("liver_mask") == "mask" and exams.guess_role("series 7") == ""


def test_uploads_are_size_limited_and_names_cannot_escape(tmp_path):
    dest = tmp_path / "up"
    with pytest.raises(InputError, match="over the limit"):
        exams.save_uploads([{"name": "a.nii.gz", "content": b"x" * 2000}], dest, max_bytes=1000)
    assert not dest.exists()
    written = exams.save_uploads([{"name": "../../evil.nii.gz", "content": [b"ab", b"cd"]}], dest, max_bytes=1000)
    assert written == [dest / "evil.nii.gz"] and written[0].read_bytes() == b"abcd"
    assert exams.safe_upload_name("..\\x/..") == "upload"


def test_a_server_off_this_machine_always_needs_a_token(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and not is_loopback("0.0.0.0")
    opts = check_options(ServeOptions(host="0.0.0.0", data=str(tmp_path)))
    assert opts.token and len(opts.token) >= 24
    assert check_options(ServeOptions(host="127.0.0.1")).token is None
    with pytest.raises(InputError, match="at least 12"):
        check_options(ServeOptions(host="0.0.0.0", token="short"))
    with pytest.raises(InputError, match="not a folder"):
        check_options(ServeOptions(data=str(tmp_path / "missing")))


def test_host_names_a_server_answers_and_the_addresses_it_prints(tmp_path):
    from LiverStiffnessWeb.guard import allowed_host_names, host_name, machine_names
    from LiverStiffnessWeb.launcher import served_urls

    assert allowed_host_names("127.0.0.1") == {"localhost", "127.0.0.1", "::1"}   # loopback names only
    assert "ws7.hospital.org" in allowed_host_names("ws7.hospital.org")
    assert {"proxy.example", "10.0.0.5"} <= allowed_host_names("127.0.0.1", ["Proxy.Example.", "10.0.0.5"])
    assert set(machine_names()) <= allowed_host_names("0.0.0.0")
    assert host_name("[::1]:8080") == "::1" and host_name("Attacker.Example:80") == "attacker.example"
    assert host_name("a/b") is None and host_name("") is None
    opts = check_options(ServeOptions(host="0.0.0.0", port=8765, token="a-long-enough-secret"))
    urls = served_urls(opts, "http")
    assert urls and not any("0.0.0.0" in u for u in urls), urls    # no other machine can use 0.0.0.0
    assert all(u.endswith(":8765/?token=a-long-enough-secret") for u in urls)
    assert any(socket.gethostname().lower() in u or host_name(u.split("//")[1].split("/")[0]) in machine_names()
               for u in urls)
    assert served_urls(check_options(ServeOptions(port=8765)), "http") == ["http://127.0.0.1:8765/"]
    with pytest.raises(InputError, match="needs a token"):
        check_options(ServeOptions(allowed_hosts=("*",)))
    with pytest.raises(InputError, match="is not a host name"):
        check_options(ServeOptions(allowed_hosts=("a/b",)))


def test_messages_on_the_page_name_files_never_server_paths():
    from LiverStiffnessWeb.messages import public

    data = Path("/srv/My Exams")
    cases = {
        't1w.nii.gz /tmp/liverstiffness-session-x/uploads/001/t1w.nii.gz: cannot be read as an image '
        '(sitk::ERROR: Unable to determine ImageIO reader for "/tmp/liverstiffness-session-x/uploads/001/t1w.nii.gz")':
            "t1w.nii.gz t1w.nii.gz: cannot be read as an image: not a NIfTI, NRRD, MetaImage or DICOM file, or a damaged one",
        "mask /tmp/s/liverstiffness-1/inputs/mask.nii.gz: failed QA: X": "mask mask.nii.gz: failed QA: X",
        "exam /srv/My Exams/a/t1w.nii.gz: bad": "exam a/t1w.nii.gz: bad",
        "b-values 0/50/800 s/mm², ADC in 10^-3 mm2/s": "b-values 0/50/800 s/mm², ADC in 10^-3 mm2/s",
        "--model C:\\models\\demo: no": "--model demo: no",
    }
    for text, shown in cases.items():
        assert public(text, data) == shown


def test_a_patch_map_is_drawn_interpolated_between_patch_centres():
    """Rollout holds one value per patch: drawn linearly between the patches' centres, exactly
    the patch value at a centre, the mean of two neighbours half-way, 0 outside the crop."""
    from LiverStiffnessLib.map_display import interpolate_patches

    rng = np.random.default_rng(0)
    grid, per = (3, 2, 4), (4, 4, 4)                           # patches and voxels per patch, z y x
    values = rng.uniform(0.2, 3.0, grid).astype(np.float32)
    crop = sitk.GetImageFromArray(np.kron(values, np.ones(per, np.float32)))
    crop.SetSpacing((2.0, 3.0, 4.0))
    crop.SetOrigin((10.0, -5.5, 7.0))
    t1w = sitk.Image((60, 40, 70), sitk.sitkFloat32)            # the finer T1w grid the map file is on
    t1w.SetOrigin((0.0, -15.0, 0.0))
    written = sitk.Resample(crop, t1w, sitk.Transform(), sitk.sitkLinear, 0.0)   # as predict writes it
    geometry = {"size": list(crop.GetSize()), "spacing_mm": list(crop.GetSpacing()),
                "origin_lps_mm": list(crop.GetOrigin()), "direction": list(crop.GetDirection())}
    shown, size = interpolate_patches(written, geometry, grid)
    assert size == "8×12×16 mm"
    arr = sitk.GetArrayFromImage(shown)

    def at(*crop_index):
        i = shown.TransformPhysicalPointToIndex(crop.TransformContinuousIndexToPhysicalPoint(crop_index))
        return arr[i[2], i[1], i[0]]

    assert at(1.5, 1.5, 1.5) == pytest.approx(values[0, 0, 0])                            # a centre
    assert at(3.5, 1.5, 1.5) == pytest.approx((values[0, 0, 0] + values[0, 0, 1]) / 2)   # half-way along x
    assert at(5.5, 5.5, 9.5) == pytest.approx(values[2, 1, 1])
    assert arr[0, 0, 0] == 0 and arr.max() <= values.max() + 1e-5
    assert len(np.unique(arr)) > 10 * values.size          # smooth, not blocks


def test_the_slicer_panel_offers_the_maps_of_the_web_page():
    """The panel's MAP_KINDS (translatable literals) are the logic's, which the web page shows:
    rollout and saliency (they point at a planted signal), GradCAM only with its caveat."""
    from LiverStiffnessLib.logic import MAP_KINDS
    from LiverStiffnessWeb.page import MAP_KINDS as WEB_KINDS

    module = ast.parse((ROOT / "LiverStiffness" / "LiverStiffness.py").read_text())
    node = next(n.value for n in module.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "MAP_KINDS")
    panel = tuple((kind.value, label.args[0].value) for label, kind in (e.elts for e in node.elts))
    assert panel == MAP_KINDS == tuple((k["value"], k["title"]) for k in WEB_KINDS)
    assert [k for k, _ in MAP_KINDS] == ["rollout", "saliency", "gradcam"]
    assert "did not point" in dict(MAP_KINDS)["gradcam"]


# ---------------------------------------------------------------------------------------------- server

def _copy_exam(rec, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in ("t1w.nii.gz", "t2w.nii.gz", "dwi.nii.gz", "mask.nii.gz"):
        shutil.copy2(rec.t1w.parent / f, dest / f)
    (dest / "dwi.bval").write_text(" ".join(f"{b:g}" for b in rec.dwi_b))
    return dest


@pytest.fixture(scope="module")
def web_data(small_cohort, tmp_path_factory):
    """--data: a clean exam, one whose mask has a planted defect (a piece split off), and one whose
    patient facts a manifest gives (sex M)."""
    from scipy import ndimage  # noqa: F401 - the QA's own dependency; imported here to fail early

    rec = small_cohort[1][0]
    data = tmp_path_factory.mktemp("webdata")
    clean = _copy_exam(rec, data / "clean")
    bad = _copy_exam(rec, data / "defect")
    img = sitk.ReadImage(str(bad / "mask.nii.gz"))
    m = sitk.GetArrayFromImage(img) > 0
    xs = np.argwhere(m)[:, 2]
    cut = int(np.percentile(xs, 85))
    m[:, :, cut:cut + 2] = False          # through the left lobe: the tip becomes a separate piece
    out = sitk.GetImageFromArray(m.astype(np.uint8))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(bad / "mask.nii.gz"))
    shutil.copy2(rec.t1w.parent / "truth_labels.nii.gz", _copy_exam(rec, data / "facts"))   # a phantom's ground truth
    (data / "manifest.csv").write_text("case_id,t1w,t2w,dwi,dwi_b,mask,age,sex,bmi,pdff\n"
                                       "facts,facts/t1w.nii.gz,facts/t2w.nii.gz,facts/dwi.nii.gz,,facts/mask.nii.gz,"
                                       "61,M,27.5,4\n")
    return data, rec, clean


@pytest.fixture(scope="module")
def server(web_data, tiny_model, tmp_path_factory):
    data, _, _ = web_data
    yield from serve(data, tiny_model, tmp_path_factory.mktemp("serve_tmp"), "--max-upload-mb", "5")


def serve(data, model, tmp, *options):
    """`liverstiffness serve --data DATA --model MODEL` on a free port, ``tmp`` its TMPDIR: yields
    the server's facts once it says it is served, and ends it (with its sessions) afterwards."""
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "liverstiffness", "serve", "--data", str(data), "--model", str(model),
           "--port", str(port), "--idle", "5", "--device", "cpu", *options]
    child = ChildProcess(cmd, env=env, keep=20000)
    base = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        assert child.poll() is None, "\n".join(child.tail)
        if any("is served at" in line for line in child.new_lines()):
            break
        time.sleep(0.2)
    yield {"base": base, "tmp": tmp, "child": child, "port": port, "data": data}
    child.kill_tree(grace_s=30)  # time for the launcher to end its sessions


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright's Python API is not installed (the 'webtest' extra)")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        missing("Debian's chromium is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


_CONTEXTS: list = []


@pytest.fixture(autouse=True)
def _close_pages():
    """A failed test's pages are closed too: an open page keeps its session alive."""
    yield
    while _CONTEXTS:
        try:
            _CONTEXTS.pop().close()
        except Exception:  # noqa: BLE001 - closed already
            pass


def wait(page, server, js: str):
    """Wait for ``js`` on the page; on a timeout, say what the page and the server said."""
    try:
        page.wait_for_function(js, timeout=T)
    except Exception:
        shot(page, "failed_wait.png", force=True)
        log = "\n".join(list(server["child"].tail)[-30:])
        raise AssertionError(f"waited for {js}: error={state(page, 'error')!r} status={state(page, 'status')!r}\n"
                             f"server log:\n{log}") from None


def new_page(browser, server):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950}, accept_downloads=True)
    _CONTEXTS.append(ctx)
    page = ctx.new_page()
    page.set_default_timeout(T)
    page.goto(server["base"], timeout=T)
    page.wait_for_selector("#exam-select", timeout=T)
    assert re.search(r"/s/[\w-]+/index\.html$", page.url)
    return page


def open_exam(page, name):
    page.click(".ls-exam-select")
    page.get_by_role("option", name=name, exact=True).click()
    page.click("#open-exam")
    try:
        page.wait_for_function("() => window.trame.state.get('t1w') && !window.trame.state.get('busy')", timeout=T)
    except Exception:
        shot(page, f"failed_open_{name}.png", force=True)
        raise AssertionError(f"{name} did not open: error={state(page, 'error')!r} status={state(page, 'status')!r}") from None
    page.wait_for_selector("#check-mask", timeout=T)


def state(page, key):
    return page.evaluate(f"() => window.trame.state.get({key!r})")


def shot(page, name, force=False):
    if SHOTS or force:
        Path(SHOTS or "build/test-screenshots").mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(1500)  # let the views' last frames arrive
        page.screenshot(path=str(Path(SHOTS or "build/test-screenshots") / name))


START = {"X-LiverStiffness-Start": "1"}   # what the start page's script sends with POST /start


def http(url, method="GET", headers=None, timeout=30) -> tuple[int, dict, str]:
    """(status, headers, body) of one request, errors included (no redirect is followed)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"" if method == "POST" else None)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode(errors="replace")


def ws_status(url, headers) -> int:
    """The HTTP status a WebSocket handshake to ``url`` gets (101: opened)."""
    import aiohttp

    async def go():
        async with aiohttp.ClientSession() as client:
            try:
                async with client.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                    await ws.close()
                    return 101
            except aiohttp.WSServerHandshakeError as err:
                return err.status

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:   # Playwright's own event loop runs on this thread
        return pool.submit(asyncio.run, go()).result()


def session_process(server, page) -> tuple[str, int, int, str]:
    """The session behind ``page``: its id, process id, private port and secret (which only this
    machine's same account can read, from the process's environment)."""
    sid = re.search(r"/s/([\w-]+)/index\.html", page.url).group(1)
    line = next(x for x in list(server["child"].tail) if f"session {sid[:6]}: started" in x)
    pid = int(re.search(r"pid (\d+)", line).group(1))
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    port = int(args[args.index(b"--port") + 1])
    env = dict(x.split(b"=", 1) for x in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in x)
    return sid, pid, port, env.get(b"LIVERSTIFFNESS_SESSION_SECRET", b"").decode()


def server_log(server) -> str:
    return "\n".join(server["child"].tail)


def assert_no_server_path(page, server):
    """Neither the rendered page nor the session's state names a folder of the server."""
    text = page.inner_text("body")
    whole_state = page.evaluate("() => JSON.stringify(Object.fromEntries(window.trame.state.getAllKeys()"
                                ".map(k => [k, window.trame.state.get(k)])))")
    for where, content in (("page", text), ("state", whole_state)):
        for folder in (server["data"], server["tmp"], Path(sys.prefix), Path.home()):
            assert str(folder) not in content, f"the {where} shows the server folder {folder}"
    paths = re.findall(r"(?<![\w.~@+-])/(?:[\w.-]+/)+[\w.-]*", text)
    assert paths == [], f"the page shows server paths: {paths}"


def test_estimate_in_the_browser_equals_the_command_line(browser, server, web_data, tiny_model, tmp_path):
    data, rec, clean = web_data
    page = new_page(browser, server)
    open_exam(page, "clean")
    assert state(page, "dwi_b") == ",".join(f"{b:g}" for b in rec.dwi_b)   # from dwi.bval
    page.fill("#age", f"{rec.facts.age:g}")
    page.click("#check-mask")
    page.wait_for_selector("#qa-text", timeout=T)
    assert page.inner_text("#qa-text").startswith("Mask OK")
    page.click("#estimate")
    page.wait_for_selector("#stage", timeout=T)           # progress and stage while it runs
    page.wait_for_selector("#kpa", timeout=T)
    kpa_page = page.inner_text("#kpa")
    assert "interval" in page.inner_text("#interval") and page.inner_text("#category")
    wait(page, server, "() => window.trame.state.get('map_note') && window.trame.state.get('applied_opacity') === 0.5")
    assert "times the uniform share" in page.inner_text("#map-note") or "near-uniform" in page.inner_text("#map-note")
    assert "× uniform share" in page.inner_text("#legend")

    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "liverstiffness", "predict", "--t1w", str(clean / "t1w.nii.gz"),
                        "--t2w", str(clean / "t2w.nii.gz"), "--dwi", str(clean / "dwi.nii.gz"),
                        "--dwi-b", ",".join(f"{b:g}" for b in rec.dwi_b), "--mask", str(clean / "mask.nii.gz"),
                        "--age", f"{rec.facts.age:g}", "--model", str(tiny_model), "--device", "cpu", "--out", str(out),
                        "--quiet"], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    cli = json.loads((out / "report.json").read_text())
    assert kpa_page == f"{cli['stiffness_kpa']:.2f}"

    # The maps offered: rollout and saliency, which point at a planted signal, and GradCAM only
    # with what that test measured. Rollout over the liver by default, drawn smoothly between its
    # patches; the whole crop one click away.
    assert state(page, "liver_only") is True and page.is_checked("#liver-only")
    assert re.search(r"Drawn smoothly: interpolated between its [\d.×]+ mm patches", page.inner_text("#map-note"))
    page.click(".ls-map-kind")
    assert [o.inner_text() for o in page.get_by_role("option").all()] == [
        "Attention rollout", "Saliency (gradient × input), per sequence",
        "GradCAM: did not point at a planted signal (see the note)"]
    page.get_by_role("option", name="Saliency (gradient × input), per sequence").click()
    wait(page, server, "() => (window.trame.state.get('map_note') || '').includes('Saliency of the T2w only')")
    page.click(".ls-map-seq")
    page.get_by_role("option", name="DWI", exact=True).click()
    wait(page, server, "() => (window.trame.state.get('map_note') || '').includes('Saliency of the DWI only')")
    page.click(".ls-map-kind")
    page.get_by_role("option", name="GradCAM: did not point at a planted signal (see the note)").click()
    wait(page, server, "() => (window.trame.state.get('map_note') || '').includes('did not point at the signal')")
    page.click(".ls-map-kind")
    page.get_by_role("option", name="Attention rollout", exact=True).click()
    wait(page, server, "() => (window.trame.state.get('map_note') || '').includes('Drawn smoothly')")
    page.uncheck("#liver-only")
    page.wait_for_function("() => window.trame.state.get('liver_only') === false", timeout=T)

    # the opacity slider reaches the slice views (read back from the MRML slice composite nodes)
    assert page.inner_text("#applied-opacity").endswith("0.5")
    page.locator(".ls-opacity [role=slider]").focus()   # the slider's thumb, as a keyboard user moves it
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => window.trame.state.get('applied_opacity') === 0.55", timeout=T)
    page.check("#liver-only")
    page.wait_for_function("() => window.trame.state.get('liver_only') === true", timeout=T)

    with page.expect_download(timeout=T) as dl:
        page.click("#download-json")
    report = json.loads(Path(dl.value.path()).read_text())
    assert f"{report['stiffness_kpa']:.2f}" == kpa_page
    with page.expect_download(timeout=T) as dl:
        page.click("#download-maps")
    import zipfile
    assert "attention.nii.gz" in zipfile.ZipFile(dl.value.path()).namelist()
    assert_no_server_path(page, server)
    shot(page, "web_result.png")
    page.context.close()


def test_planted_defect_is_flagged_and_a_click_moves_the_slices(browser, server):
    page = new_page(browser, server)
    open_exam(page, "defect")
    before = page.inner_text("#slice-positions")
    page.click("#check-mask")
    page.wait_for_selector(".ls-flag", timeout=T)
    flags = page.inner_text("#flags")
    assert "MULTIPLE_COMPONENTS" in flags
    page.click(".ls-flag")
    page.wait_for_function(f"() => window.trame.state.get('slice_positions') !== {json.dumps(before)}", timeout=T)
    wait(page, server, "() => (window.trame.state.get('status') || '').startsWith('Showing MULTIPLE_COMPONENTS')")
    shot(page, "web_mask_check.png")
    page.context.close()


def test_cancel_stops_the_run_and_leaves_nothing(browser, server):
    page = new_page(browser, server)
    open_exam(page, "clean")
    page.click("#estimate")
    page.wait_for_selector("#cancel", timeout=T)
    page.wait_for_function("() => ['read', 'qa', 'preprocess', 'model'].includes(window.trame.state.get('stage'))",
                           timeout=T)
    page.click("#cancel")
    page.wait_for_function("() => window.trame.state.get('status').startsWith('Cancelled')", timeout=T)
    assert page.locator("#kpa").count() == 0
    runs = list(Path(server["tmp"]).glob("liverstiffness-session-*/liverstiffness-*"))
    assert runs == [], f"a cancelled run left {runs}"
    page.context.close()


def test_uploads_bad_too_big_and_good_and_a_path_outside_data(browser, server, web_data, tmp_path):
    uploaded = lambda: list(Path(server["tmp"]).glob("liverstiffness-session-*/uploads/*/*"))  # noqa: E731
    page = new_page(browser, server)
    bad = tmp_path / "t1w.nii.gz"
    bad.write_bytes(b"this is not an image" * 10)
    page.set_input_files("#upload", [str(bad)])
    page.wait_for_selector("#error", timeout=T)
    assert "cannot be read as an image" in page.inner_text("#error")
    assert uploaded() == [], "an unreadable upload was kept"
    big = tmp_path / "big.nii.gz"
    big.write_bytes(b"0" * 6_000_000)  # over the server's --max-upload-mb 5
    page.evaluate("() => window.trame.state.set('error', '')")
    page.set_input_files("#upload", [str(big)])
    wait(page, server, "() => (window.trame.state.get('error') || '').includes('over the limit')")

    page.evaluate("() => window.trame.state.set('exam', '../..')")   # what a hand-made request could send
    page.click("#open-exam")
    wait(page, server, "() => (window.trame.state.get('error') || '').includes('outside the data folder')")
    assert page.locator("#check-mask").count() == 0

    # a good exam uploaded from the browser: into this session's folder, sequences assigned by name
    clean = web_data[2]
    page.evaluate("() => window.trame.state.set('error', '')")
    page.set_input_files("#upload", [str(clean / f) for f in ("t1w.nii.gz", "t2w.nii.gz", "dwi.nii.gz", "dwi.bval",
                                                                  "mask.nii.gz")])
    page.wait_for_function("() => window.trame.state.get('t1w') && !window.trame.state.get('busy')", timeout=T)
    assert [state(page, k) for k in ("t1w", "t2w", "dwi", "mask")] == ["t1w.nii.gz", "t2w.nii.gz", "dwi.nii.gz", "mask.nii.gz"]
    assert state(page, "dwi_b") == ",".join(f"{b:g}" for b in web_data[1].dwi_b) and not state(page, "error")
    assert sorted(p.name for p in uploaded()) == ["dwi.bval", "dwi.nii.gz", "mask.nii.gz", "t1w.nii.gz", "t2w.nii.gz"]
    page.context.close()


def test_two_sessions_are_separate_processes_that_cannot_see_each_other(browser, server):
    a = new_page(browser, server)
    b = new_page(browser, server)
    assert a.url != b.url
    open_exam(a, "clean")
    assert state(b, "series_items") == [] and b.locator("#check-mask").count() == 0
    # b's browser cannot reach a's session, even knowing its address
    resp = b.request.get(a.url)
    assert resp.status == 404
    # and nobody without the session's cookie can
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(a.url, timeout=30)
    assert err.value.code == 404
    folders = list(Path(server["tmp"]).glob("liverstiffness-session-*"))
    assert len(folders) >= 2
    a.context.close()
    b.context.close()
    # the browser is gone: the sessions end and their folders go
    deadline = time.time() + 120
    while time.time() < deadline and list(Path(server["tmp"]).glob("liverstiffness-session-*")):
        time.sleep(1)
    assert list(Path(server["tmp"]).glob("liverstiffness-session-*")) == []


# ---------------------------------------------------------------------------------------------- who may connect

def wait_log(server, text: str, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline and text not in server_log(server):
        time.sleep(0.3)
    assert text in server_log(server), f"the server did not log {text!r}"


def test_a_page_under_a_foreign_host_name_is_refused_and_no_get_starts_a_session(browser, server):
    """DNS rebinding: attacker.example resolves to this machine (Chromium's --host-resolver-rules),
    as a name an attacker controls would. The page under that name is refused, and starts nothing."""
    port = server["port"]
    started = lambda: server_log(server).count(": started (pid")  # noqa: E731
    before = started()
    ctx = browser.new_context()
    _CONTEXTS.append(ctx)
    page = ctx.new_page()
    resp = page.goto(f"http://attacker.example:{port}/", timeout=T)
    assert resp.status == 403 and page.locator("#exam-select").count() == 0
    assert "refused" in page.inner_text("body")
    wait_log(server, f"refused GET / from 127.0.0.1: Host 'attacker.example:{port}'")
    assert http(server["base"] + "start", "POST", {**START, "Host": f"attacker.example:{port}"})[0] == 403
    # Under this machine's name, GET / is the start page only: a link, a prefetch or a crawler
    # starts no session; its script's POST /start does, and nothing else: not a form (no header),
    # not another site's page (its Origin).
    for _ in range(3):
        status, _, body = http(server["base"])
        assert status == 200 and 'fetch("start"' in body
    assert http(server["base"] + "start", "POST")[0] == 403
    assert http(server["base"] + "start", "POST", {**START, "Origin": "http://evil.example"})[0] == 403
    assert started() == before


def test_a_websocket_from_a_foreign_origin_is_refused_by_the_launcher(browser, server):
    page = new_page(browser, server)
    sid = session_process(server, page)[0]
    port = server["port"]
    client = next(c["value"] for c in page.context.cookies() if c["name"] == "liverstiffness_client")
    url = f"ws://127.0.0.1:{port}/s/{sid}/ws"
    own = {"Cookie": f"liverstiffness_client={client}"}
    # the launcher: the session's own browser cookie from the page's own origin opens it; from another origin, refused
    assert ws_status(url, {**own, "Origin": f"http://127.0.0.1:{port}"}) == 101
    assert ws_status(url, {**own, "Origin": "http://evil.example"}) == 403
    # a script on another web site's page, in the browser, is refused too (and the launcher says why)
    evil = page.context.new_page()
    evil.route("http://evil.example/**", lambda r: r.fulfill(status=200, content_type="text/html", body="<p>a web site</p>"))
    evil.goto("http://evil.example/")
    outcome = evil.evaluate("""url => new Promise(done => { const ws = new WebSocket(url);
        ws.onopen = () => done('opened'); ws.onerror = () => done('refused'); setTimeout(() => done('no answer'), 60000); })""",
                            url)
    assert outcome == "refused"
    wait_log(server, f"refused websocket /s/{sid}/ws from 127.0.0.1: Origin 'http://evil.example'")
    page.context.close()


def test_a_session_port_refuses_whoever_lacks_the_session_secret(browser, server):
    """The session's own port, which every account on this machine can reach: nothing without the
    secret only the launcher holds (not even the page), nor under a foreign name or origin."""
    page = new_page(browser, server)
    sid, _, session_port, secret = session_process(server, page)
    direct = page.context.new_page()
    assert direct.goto(f"http://127.0.0.1:{session_port}/index.html", timeout=T).status == 403
    base = f"http://127.0.0.1:{session_port}/"
    assert http(base + "index.html")[0] == 403
    assert ws_status(base + "ws", {}) == 403
    key = "X-LiverStiffness-Session"
    assert ws_status(base + "ws", {key: secret, "Origin": "http://evil.example"}) == 403
    assert http(base + "index.html", headers={key: secret, "Host": f"attacker.example:{session_port}"})[0] == 403
    assert http(base + "index.html", headers={key: "not-the-secret"})[0] == 403
    assert http(base + "index.html", headers={key: secret})[0] == 200      # the launcher's way in
    wait_log(server, f"session {sid[:6]}| refused GET /index.html from 127.0.0.1: no session secret")
    open_exam(page, "clean")     # the session's own page, through the launcher, still works
    page.context.close()


# ---------------------------------------------------------------------------------------------- what the page shows

def test_the_sex_field_shows_the_value_of_the_exams_facts(browser, server):
    page = new_page(browser, server)
    open_exam(page, "facts")                                   # its manifest row says sex M
    assert state(page, "sex") == "M" and state(page, "age") == "61"
    value = page.locator(".v-field:has(#sex) .v-select__selection-text")
    assert value.inner_text() == "M"
    # drawn where it can be read: not squeezed to nothing by the chooser's icons
    assert value.is_visible() and value.bounding_box()["width"] >= 6
    assert value.evaluate("e => e.scrollWidth <= Math.ceil(e.getBoundingClientRect().width) + 1")
    label = page.locator(".v-field:has(#sex) label.v-field-label--floating")
    assert label.inner_text() == "Sex" and label.is_visible() and label.bounding_box()["width"] >= 15
    assert_no_server_path(page, server)
    page.context.close()


def test_the_page_names_no_server_folder(browser, server):
    page = new_page(browser, server)
    assert_no_server_path(page, server)                       # not the --data folder either
    assert page.inner_text("#exams-note") == "3 exam(s) on this server"
    open_exam(page, "facts")
    assert_no_server_path(page, server)
    # the phantom's ground truth beside the exam is no series of it
    assert [i["value"] for i in state(page, "series_items")] == ["dwi.nii.gz", "mask.nii.gz", "t1w.nii.gz", "t2w.nii.gz"]
    page.context.close()


def test_upload_errors_name_the_file_and_what_is_wrong_in_one_short_line(browser, server, web_data, tmp_path):
    """An empty, a random and a NaN upload: each named by its file name, in the page's words, in one
    short banner, with no server path anywhere on the page; the hint says why the T1w is missing."""
    page = new_page(browser, server)
    empty = tmp_path / "empty" / "t1w.nii.gz"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    page.set_input_files("#upload", [str(empty)])
    wait(page, server, "() => (window.trame.state.get('error') || '').includes('t1w.nii.gz')")
    assert page.inner_text("#error") == "t1w.nii.gz: the file is empty (0 bytes)"
    assert_no_server_path(page, server)
    # beside readable series: they open, and the hint under Estimate says why there is no T1w
    clean = web_data[2]
    page.evaluate("() => window.trame.state.set('error', '')")
    page.set_input_files("#upload", [str(empty)] + [str(clean / f) for f in ("t2w.nii.gz", "dwi.nii.gz", "dwi.bval",
                                                                             "mask.nii.gz")])
    wait(page, server, "() => window.trame.state.get('t2w') && (window.trame.state.get('error') || '').includes('empty')")
    # (the estimate may run without a T1w: the note under Estimate says why it has none)
    wait(page, server, "() => (window.trame.state.get('sequences_note') || '').includes('no T1w')")
    assert state(page, "t1w") is None and not state(page, "missing")
    assert page.inner_text("#sequences-note") == ("The estimate uses T2w, DWI only (no T1w: t1w.nii.gz was refused: "
                                                  "the file is empty (0 bytes)).")
    box, height = page.locator("#error").bounding_box(), page.viewport_size["height"]
    assert box["height"] < 0.12 * height, f"the error banner is {box['height']:.0f} px high"
    assert_no_server_path(page, server)
    # random bytes, and an image with a NaN voxel
    noise = tmp_path / "noise" / "t1w.nii.gz"
    noise.parent.mkdir()
    noise.write_bytes(np.random.default_rng(1).bytes(3000))
    nan = tmp_path / "nan" / "t1w.nii.gz"
    nan.parent.mkdir()
    arr = np.ones((8, 8, 8), np.float32)
    arr[4, 4, 4] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(nan))
    for f, says in ((noise, "t1w.nii.gz: cannot be read as an image: not a NIfTI, NRRD, MetaImage or DICOM file"),
                    (nan, "t1w.nii.gz: has 1 NaN/Inf voxel(s)")):
        page.evaluate("() => window.trame.state.set('error', '')")
        page.set_input_files("#upload", [str(f)])
        wait(page, server, "() => (window.trame.state.get('error') || '').includes('t1w.nii.gz')")
        error = page.inner_text("#error")
        assert error.startswith(says) and "sitk::" not in error and "ERROR" not in error, error
        assert_no_server_path(page, server)
    page.context.close()


def test_a_rejected_upload_or_a_changed_input_takes_the_result_away(browser, server, tmp_path):
    """A result never sits beside inputs it was not computed from."""
    page = new_page(browser, server)

    def estimate():
        open_exam(page, "clean")
        page.click("#estimate")
        page.wait_for_selector("#kpa", timeout=T)
        wait(page, server, "() => window.trame.state.get('status') === 'Done.'")

    estimate()
    empty = tmp_path / "t1w.nii.gz"
    empty.write_bytes(b"")
    page.set_input_files("#upload", [str(empty)])              # refused: the exam and its result go
    wait(page, server, "() => window.trame.state.get('error')")
    assert page.locator("#kpa").count() == 0 and state(page, "result") is None
    assert state(page, "series_items") == [] and state(page, "t1w") is None
    assert state(page, "status") != "Done." and page.locator("#check-mask").count() == 0
    page.evaluate("() => window.trame.state.set('error', '')")
    estimate()
    page.fill("#age", "50")                                     # a patient fact changed
    wait(page, server, "() => !window.trame.state.get('result')")
    assert page.locator("#kpa").count() == 0 and state(page, "status").startswith("The inputs changed")
    page.context.close()


def test_a_server_on_every_interface_prints_addresses_other_machines_can_use(browser, tmp_path, web_data):
    port = free_port()
    child = ChildProcess([sys.executable, "-m", "liverstiffness", "serve", "--data", str(web_data[0]), "--port", str(port),
                          "--host", "0.0.0.0", "--token", "a-long-enough-secret", "--device", "cpu", "--idle", "5"],
                         env=dict(os.environ, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1"), keep=2000)
    lines: list[str] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any("plain HTTP" in x for x in lines):   # printed after the addresses
            lines += child.new_lines()
            time.sleep(0.2)
        urls = [re.search(r"is served at (\S+)", x).group(1) for x in lines if "is served at" in x]
        assert urls and not any("0.0.0.0" in u for u in urls), lines     # no other machine can use 0.0.0.0
        from urllib.parse import urlsplit
        for u in urls:   # each printed name or address is one the server answers to
            assert u.endswith(f":{port}/?token=a-long-enough-secret"), u
            assert http(f"http://127.0.0.1:{port}/?token=a-long-enough-secret", headers={"Host": urlsplit(u).netloc})[0] == 200
        assert http(f"http://127.0.0.1:{port}/?token=a-long-enough-secret",
                    headers={"Host": f"attacker.example:{port}"})[0] == 403
        # Chromium opens the printed address (this machine's own, not loopback) and gets the page
        def is_ip(name):
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
                return True
            except OSError:
                return False
        url = next((u for u in urls if is_ip(urlsplit(u).hostname)), urls[0])
        ctx = browser.new_context()
        _CONTEXTS.append(ctx)
        page = ctx.new_page()
        page.goto(url, timeout=T)
        page.wait_for_selector("#exam-select", timeout=T)
        assert "token" not in page.url
    finally:
        child.kill_tree(grace_s=30)



def test_token_required_and_sessions_end_with_a_killed_launcher(tmp_path, web_data):
    port = free_port()
    child = ChildProcess([sys.executable, "-m", "liverstiffness", "serve", "--data", str(web_data[0]), "--port", str(port),
                          "--token", "a-long-enough-secret", "--max-sessions", "1", "--device", "cpu"],
                         env=dict(os.environ, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1"), keep=2000)
    lines: list[str] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any("is served at" in x for x in lines):
            lines += child.new_lines()
            time.sleep(0.2)
        assert any(f"http://127.0.0.1:{port}/?token=a-long-enough-secret" in x for x in lines), lines
        base = f"http://127.0.0.1:{port}/"
        for query in ("", "?token=wrong-but-long-enough"):
            assert http(base + query)[0] == 401
        assert http(base + "start", method="POST", headers=START)[0] == 401
        # the right token: the start page, the token kept in an HttpOnly cookie; no session yet
        status, headers, _ = http(base + "?token=a-long-enough-secret")
        assert status == 200 and "liverstiffness_token=" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
        assert list(tmp_path.glob("liverstiffness-session-*")) == []
        # the start page's request opens a session: its own process and folder
        cookie = {"Cookie": "liverstiffness_token=a-long-enough-secret"}
        status, headers, body = http(base + "start", method="POST", headers={**START, **cookie}, timeout=240)
        assert status == 200 and re.match(r"/s/[\w-]+/index\.html$", json.loads(body)["url"])
        assert "HttpOnly" in headers["Set-Cookie"]
        folders = list(tmp_path.glob("liverstiffness-session-*"))
        assert len(folders) == 1
        lines += child.new_lines()
        session_pid = int(next(re.search(r"pid (\d+)", x).group(1) for x in lines if "started (pid" in x))
        # the launcher dies without ending its session (killed): the session ends by itself
        child.proc.kill()
        child.proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and (folders[0].exists() or _alive(session_pid)):
            time.sleep(0.5)
        assert not folders[0].exists() and not _alive(session_pid), "an orphaned session outlived its launcher"
    finally:
        child.kill_tree()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True
