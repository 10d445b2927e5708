"""The browser front end (`liverstiffness serve`), driven in a real headless Chromium.

Nothing is mocked between the page and liverstiffness' own code: the real launcher starts a real
trame-slicer process per browser session, which reads the files, checks the mask and runs
`liverstiffness predict` in the background. Chromium is Debian's (`make test` / `.ci/run`
install it); Playwright only drives it.
"""
import json
import os
import re
import shutil
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
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
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
    assert roles == {"t1w.nii.gz": "t1w", "t2w.nii.gz": "t2w", "dwi.nii.gz": "dwi", "mask.nii.gz": "mask",
                     "truth_labels.nii.gz": ""}
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


# ---------------------------------------------------------------------------------------------- server

def _copy_exam(rec, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in ("t1w.nii.gz", "t2w.nii.gz", "dwi.nii.gz", "mask.nii.gz"):
        shutil.copy2(rec.t1w.parent / f, dest / f)
    (dest / "dwi.bval").write_text(" ".join(f"{b:g}" for b in rec.dwi_b))
    return dest


@pytest.fixture(scope="module")
def web_data(small_cohort, tmp_path_factory):
    """--data: a clean exam, and one whose mask has a planted defect (a piece split off)."""
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
    return data, rec, clean


@pytest.fixture(scope="module")
def server(web_data, tiny_model, tmp_path_factory):
    data, _, _ = web_data
    tmp = tmp_path_factory.mktemp("serve_tmp")
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "liverstiffness", "serve", "--data", str(data), "--model", str(tiny_model),
           "--port", str(port), "--idle", "5", "--device", "cpu", "--max-upload-mb", "5"]
    child = ChildProcess(cmd, env=env, keep=2000)
    base = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        assert child.poll() is None, "\n".join(child.tail)
        if any("is served at" in line for line in child.new_lines()):
            break
        time.sleep(0.2)
    yield {"base": base, "tmp": tmp, "child": child}
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
    page.uncheck("#liver-only")
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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


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
        for query in ("", "?token=wrong-but-long-enough"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{query}", timeout=30)
            assert err.value.code == 401
        # the right token opens a session: its own process and folder
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(f"http://127.0.0.1:{port}/?token=a-long-enough-secret", timeout=240)
        assert err.value.code == 302 and re.match(r"/s/[\w-]+/index\.html$", err.value.headers["Location"])
        assert "HttpOnly" in err.value.headers["Set-Cookie"]
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
