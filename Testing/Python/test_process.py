"""The background-process handling shared by the Slicer panel and the web page, outside Slicer,
with a real tree of processes (a launcher whose child does the work, as PythonSlicer is); and the
dependency list both the check and the install read."""
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from LiverStiffnessLib import dependencies  # noqa: E402
from LiverStiffnessLib.process import ChildProcess  # noqa: E402

pytestmark = pytest.mark.slow   # starts and kills process trees

ROOT = Path(__file__).resolve().parents[2]

# A launcher that starts a worker (its child) and waits for it, as PythonSlicer does.
LAUNCHER = textwrap.dedent("""
    import subprocess, sys
    worker = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    print("launcher", flush=True)
    sys.exit(worker.wait())
""")
WORKER = textwrap.dedent("""
    import os, sys, time
    open(sys.argv[1] if len(sys.argv) > 1 else {pidfile!r}, "w").write(str(os.getpid()))
    print("STAGE read", flush=True)
    print("a warning on stderr", file=sys.stderr, flush=True)
    time.sleep(120)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def wait_for(cond, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX process groups")
def test_cancel_kills_the_whole_tree_and_output_is_read_without_blocking(tmp_path):
    pidfile = tmp_path / "worker.pid"
    child = ChildProcess([sys.executable, "-c", LAUNCHER, WORKER.format(pidfile=str(pidfile))])
    assert wait_for(pidfile.exists) and wait_for(lambda: pidfile.read_text().strip() != "")
    worker = int(pidfile.read_text())
    seen: list[str] = []
    assert wait_for(lambda: seen.extend(child.new_lines()) or "a warning on stderr" in seen)
    t = time.perf_counter()
    assert child.poll() is None and time.perf_counter() - t < 0.5       # polling never blocks
    assert {"launcher", "STAGE read", "a warning on stderr"} <= set(seen)  # stderr merged into the stream
    assert alive(child.pid) and alive(worker)
    child.kill_tree(grace_s=2)
    assert wait_for(lambda: not alive(worker), 10), "the worker (grandchild) survived Cancel"
    assert not alive(child.pid) and child.killed and child.poll() is not None


def test_killing_only_the_launcher_would_leave_the_worker(tmp_path):
    """Why the tree kill is needed: Popen.kill() stops the launcher alone."""
    pidfile = tmp_path / "worker.pid"
    child = ChildProcess([sys.executable, "-c", LAUNCHER, WORKER.format(pidfile=str(pidfile))])
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    worker = int(pidfile.read_text())
    child.proc.kill()
    child.proc.wait()
    try:
        assert alive(worker)
    finally:
        child.kill_tree(grace_s=1)
    assert wait_for(lambda: not alive(worker), 10)


def test_exit_code_and_one_line_error_from_merged_output():
    code = "import sys; print('STAGE qa'); print('error: mask m.nii.gz: is empty', file=sys.stderr); sys.exit(2)"
    child = ChildProcess([sys.executable, "-c", code])
    assert child.wait(60) == 2
    assert child.new_lines() == ["STAGE qa", "error: mask m.nii.gz: is empty"]
    assert child.last_error() == "mask m.nii.gz: is empty"
    assert not child.killed
    child.kill_tree()  # harmless after the end


def test_one_requirements_list_matches_pyproject_and_versions_are_checked():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+ (tomllib)")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d.split(">")[0].split("<")[0].split("=")[0].strip().lower(): d for d in project}
    for req in dependencies.REQUIREMENTS:
        assert req.dist.lower() in pins, f"{req.dist} missing from pyproject.toml"
        assert pins[req.dist.lower()].replace(" ", "") == req.pip, (req.pip, pins[req.dist.lower()])
    assert dependencies.problems() == {}, "this environment should meet every requirement"
    assert dependencies.version_ok("2.13.0+cpu", ">=2.2") and not dependencies.version_ok("1.3.2", ">=1.4,<1.7")
    assert not dependencies.version_ok("1.7.0", ">=1.4,<1.7")


def test_install_never_pip_installs_what_slicer_ships_and_routes_torch_through_pytorchutils(monkeypatch):
    import slicer

    calls = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda reqs: calls.append(reqs), raising=False)
    assert dependencies.BY_MODULE["SimpleITK"].route == dependencies.SLICER
    assert not dependencies.installable(["SimpleITK", "monai"])
    with pytest.raises(RuntimeError, match="with Slicer and cannot be installed"):
        dependencies.install(["SimpleITK", "monai"])
    assert calls == []
    with pytest.raises(RuntimeError, match="PyTorch extension"):  # no PyTorchUtils here: no pip fallback
        dependencies.install(["torch"])
    assert calls == []
    dependencies.install(["monai", "einops"])
    assert calls == [["monai>=1.4,<1.7", "einops>=0.7"]]
    text = dependencies.describe(["torch", "SimpleITK"])
    assert "PyTorch extension" in text and "never installed" in text


# A stand-in for `liverstiffness predict` run by BackgroundRun: it prints stages as predict does,
# starts a grandchild, writes part of its result, and then ends as told (done, fail or hang).
FAKE_PREDICT = textwrap.dedent("""
    import json, os, subprocess, sys, time
    work, how = sys.argv[1], sys.argv[2]
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open(os.path.join(work, "grandchild.pid"), "w").write(str(grandchild.pid))
    for stage in ("read", "qa", "preprocess"):
        print("STAGE " + stage, flush=True)
    os.makedirs(os.path.join(work, "result"), exist_ok=True)
    open(os.path.join(work, "result", "attention.nii.gz"), "wb").write(b"half")
    print("a note on stderr", file=sys.stderr, flush=True)
    if how == "hang":
        time.sleep(120)
    if how == "fail":
        print("error: model m: is broken", file=sys.stderr, flush=True)
        sys.exit(2)
    print("STAGE write", flush=True)
    json.dump({"stiffness_kpa": 2.5}, open(os.path.join(work, "result", "report.json"), "w"))
    grandchild.kill()
""")


def _background_run(tmp_path, how):
    from LiverStiffnessLib.logic import BackgroundRun

    work = tmp_path / f"liverstiffness-{how}"
    (work / "inputs").mkdir(parents=True)
    (work / "inputs" / "t1w.nii.gz").write_bytes(b"input")
    run = BackgroundRun([sys.executable, "-c", FAKE_PREDICT, str(work), how], work, nodes=None, logic=None)
    return run, work


def _poll_until(run, states, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if run.poll() in states:
            return run.state
        time.sleep(0.05)
    raise AssertionError(f"run still {run.state} (stage {run.stage}): {run.log}")


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX process groups")
def test_background_run_cancel_kills_the_tree_and_removes_its_folder(tmp_path):
    run, work = _background_run(tmp_path, "hang")
    assert wait_for(lambda: run.poll() == "running" and "a note on stderr" in run.log)
    assert run.stage == "preprocess" and 0 < run.progress < 1
    grandchild = int((work / "grandchild.pid").read_text())
    assert alive(grandchild) and (work / "result" / "attention.nii.gz").exists()
    run.cancel()
    assert run.poll() == "cancelled"
    assert not work.exists(), "a cancelled run left its folder (half-written results)"
    assert wait_for(lambda: not alive(grandchild), 10), "the predict's own child survived Cancel"


def test_background_run_failure_leaves_nothing_half_written(tmp_path):
    run, work = _background_run(tmp_path, "fail")
    assert _poll_until(run, ("done", "failed", "cancelled")) == "failed"
    assert run.error() == "model m: is broken"
    assert "a note on stderr" in run.log                # stderr reached the log, merged
    assert not work.exists()


def test_background_run_done_keeps_the_result_until_cleanup(tmp_path):
    run, work = _background_run(tmp_path, "done")
    assert _poll_until(run, ("done", "failed", "cancelled")) == "done"
    assert run.stage == "write"
    assert not (work / "inputs").exists(), "the converted inputs stay only while the run needs them"
    assert (work / "result" / "report.json").is_file()
    run.cleanup()
    assert not work.exists()
