"""Long batches survive faults (issue 12, item 6): kill -9 at any point and start again, two runs
on one folder, a full disk. Real subprocesses are killed with SIGKILL, as an operating system or
a scheduler would."""
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from liverstiffness import outputs
from liverstiffness.batch import predict_manifest
from liverstiffness.cli.main import main
from liverstiffness.predict import PredictOptions
from liverstiffness.stiffness.ensemble import Ensemble

pytestmark = pytest.mark.slow   # kills and resumes batch processes

N_CASES = 4


@pytest.fixture(scope="module")
def batch(small_cohort, tmp_path_factory):
    """A manifest of four exams (absolute paths) and the answers of an uninterrupted run."""
    manifest, _, _ = small_cohort
    lines = manifest.read_text().splitlines()
    cols = lines[0].split(",")
    rows = []
    for line in lines[1:N_CASES + 1]:
        row = dict(zip(cols, line.split(",")))
        for c in ("t1w", "t2w", "dwi", "mask"):
            row[c] = str((manifest.parent / row[c]).resolve())
        rows.append(row)
    folder = tmp_path_factory.mktemp("batch")
    m = folder / "manifest.csv"
    with open(m, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return m, [r["case_id"] for r in rows]


OPTS = ["--maps", "none", "--no-montage", "--quiet"]


def _cli(m, model, out):
    return [sys.executable, "-m", "liverstiffness", "predict", "--manifest", str(m), "--model", str(model), *OPTS,
            "--out", str(out)]


def _table(out):
    with open(out / "predictions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _ok_rows(out):
    try:
        return sum(r["status"] == "ok" for r in _table(out))
    except (OSError, KeyError):
        return 0


def _wait_for(condition, proc, timeout=240.0):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("the batch never got there")


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _assert_complete(out, case_ids, reference=None):
    table = _table(out)
    assert [r["case_id"] for r in table] == case_ids                       # every case once, in order
    assert all(r["status"] == "ok" for r in table), table
    leftovers = [p.name for p in out.iterdir() if ".partial-" in p.name or p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(case_ids)
    for r in table:
        rep = json.loads((out / r["case_id"] / "report.json").read_text())
        assert (out / r["case_id"] / "attention.nii.gz").is_file()
        sitk.ReadImage(str(out / r["case_id"] / "attention.nii.gz"))            # complete, readable
        assert float(r["stiffness_kpa"]) == rep["stiffness_kpa"]
        if reference is not None:
            assert rep["stiffness_kpa"] == reference[r["case_id"]], r["case_id"]


def test_sigkill_mid_case_and_between_cases_then_resume(batch, tiny_model, tmp_path):
    m, case_ids = batch
    ref = tmp_path / "reference"
    predict_manifest(m, Ensemble.load(tiny_model, "cpu"), ref, PredictOptions(gradient_maps=False, montage=False),
                     progress=False)
    reference = {r["case_id"]: float(r["stiffness_kpa"]) for r in _table(ref)}
    out = tmp_path / "out"
    cmd = _cli(m, tiny_model, out)

    # 1. killed while a case is being written (its staging folder exists)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = lambda: out.is_dir() and any(".partial-" in p.name for p in out.iterdir())
    caught_mid_write = _wait_for(staging, proc)
    _kill(proc) if proc.poll() is None else None
    # 2. killed between cases, once two are done
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: _ok_rows(out) >= 2, proc)
    _kill(proc) if proc.poll() is None else None
    done_before = {r["case_id"]: (out / r["case_id"] / "report.json").stat().st_mtime_ns
                   for r in _table(out) if r["status"] == "ok"}
    for c in case_ids:                          # after the kills: a case folder is complete or absent
        assert not (out / c).is_dir() or {"report.json", "attention.nii.gz"} <= set(os.listdir(out / c))
    # 3. started again: finishes, every case once, nothing partial, the uninterrupted answers
    assert subprocess.run(cmd, capture_output=True, text=True, check=False).returncode == 0
    _assert_complete(out, case_ids, reference)
    for cid, stamp in done_before.items():                                   # finished cases were not redone
        assert (out / cid / "report.json").stat().st_mtime_ns == stamp
    assert caught_mid_write, "the first kill did not land inside a case's write"


def test_a_case_finished_just_before_the_kill_is_not_redone(batch, tiny_model, tmp_path, monkeypatch):
    """The window between a case folder appearing and its CSV row: the folder says it is done."""
    import liverstiffness.batch as P

    m, case_ids = batch
    out = tmp_path / "out"
    ens = Ensemble.load(tiny_model, "cpu")
    opts = PredictOptions(gradient_maps=False, montage=False)
    real, calls = P._write_rows, []

    def dies_on_second_case(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:                  # 1: at start, 2: case 1, 3: case 2 → the process "dies"
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(P, "_write_rows", dies_on_second_case)
    with pytest.raises(KeyboardInterrupt):
        predict_manifest(m, ens, out, opts, progress=False)
    monkeypatch.setattr(P, "_write_rows", real)
    assert [r["case_id"] for r in _table(out)] == case_ids[:1]             # the CSV missed case 2's row
    stamp = (out / case_ids[1] / "report.json").stat().st_mtime_ns
    predict_manifest(m, ens, out, opts, progress=False)
    _assert_complete(out, case_ids)
    assert (out / case_ids[1] / "report.json").stat().st_mtime_ns == stamp


def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_runs_lock_does_not_block(
        batch, tiny_model, tmp_path, capsys):
    m, case_ids = batch
    out = tmp_path / "out"
    first = subprocess.Popen(_cli(m, tiny_model, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: (out / "predictions.csv").is_file(), first)        # it holds the lock now
    capsys.readouterr()
    assert main(["predict", "--manifest", str(m), "--model", str(tiny_model), *OPTS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"another batch run is using this folder (pid {first.pid} on " in err
    _kill(first)
    assert main(["predict", "--manifest", str(m), "--model", str(tiny_model), *OPTS, "--out", str(out)]) == 0
    _assert_complete(out, case_ids)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("how", ["oserror", "itk"])
def test_full_disk_while_writing_one_exam_is_one_line_and_leaves_nothing(one_case, tiny_model, tmp_path, capsys,
                                                                         monkeypatch, how):
    real = sitk.WriteImage

    def fills_the_disk(img, path, *a, **k):
        with open(path, "wb") as fh:                       # a part of the file, then the disk is full
            fh.write(b"\0" * 100)
        if how == "itk":
            raise RuntimeError(f"Exception thrown in SimpleITK WriteImage: ... Could not write file: {path}\n"
                               "No space left on device")
        _enospc()

    monkeypatch.setattr(sitk, "WriteImage", fills_the_disk)
    out = tmp_path / "result"
    capsys.readouterr()
    assert main(["predict", "--t1w", str(one_case.t1w), "--t2w", str(one_case.t2w), "--dwi", str(one_case.dwi),
                 "--dwi-b", ",".join(f"{b:g}" for b in one_case.dwi_b), "--mask", str(one_case.mask), "--model",
                 str(tiny_model), *OPTS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: --out {out}: cannot be written (")
    assert "no space left on device" in err.lower() and err.endswith("nothing was left half-written") and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []                      # no staging folder left either
    monkeypatch.setattr(sitk, "WriteImage", real)


def test_full_disk_in_a_batch_stops_it_keeps_the_last_complete_csv_and_resumes(batch, tiny_model, tmp_path,
                                                                              monkeypatch, capsys):
    m, case_ids = batch
    out = tmp_path / "out"
    real, writes = outputs._write_and_sync, []

    def disk_fills_at_third_table_write(path, data):
        if path.name.startswith(".predictions.csv."):
            writes.append(path)
            if len(writes) == 3:                          # start, case 1, then case 2's row: no space
                with open(path, "wb") as fh:
                    fh.write(data[: len(data) // 2])        # half of it reached the disk
                _enospc()
        real(path, data)

    monkeypatch.setattr(outputs, "_write_and_sync", disk_fills_at_third_table_write)
    capsys.readouterr()
    argv = ["predict", "--manifest", str(m), "--model", str(tiny_model), *OPTS, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err == f"error: {out / 'predictions.csv'}: cannot be written (no space left on device); nothing was left half-written"
    table = _table(out)                                   # the previous complete table, parseable
    assert [r["case_id"] for r in table] == case_ids[:1] and table[0]["status"] == "ok"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or ".partial-" in p.name]
    assert not (out / case_ids[2]).exists()               # the batch stopped: no case was run on a full disk
    monkeypatch.setattr(outputs, "_write_and_sync", real)  # space freed
    assert main(argv) == 0
    _assert_complete(out, case_ids)


def test_out_pointed_at_the_input_folders_is_refused_not_emptied(small_cohort, tiny_model, tmp_path, capsys):
    """--out given as the cohort's own folder (case folders full of inputs, no report): the batch
    must refuse, not clear them to make room."""
    import shutil

    manifest, records, _ = small_cohort
    cohort = tmp_path / "cohort"
    shutil.copytree(records[0].t1w.parent, cohort / records[0].case_id)
    lines = manifest.read_text().splitlines()
    (cohort / "manifest.csv").write_text("\n".join(lines[:2]) + "\n")
    before = sorted(p.name for p in (cohort / records[0].case_id).iterdir())
    capsys.readouterr()
    assert main(["predict", "--manifest", str(cohort / "manifest.csv"), "--model", str(tiny_model), *OPTS,
                 "--out", str(cohort)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{records[0].case_id}/ exists, is not a finished case (no report.json) and holds other files" in err
    assert sorted(p.name for p in (cohort / records[0].case_id).iterdir()) == before
    assert sorted(p.name for p in cohort.iterdir()) == sorted([records[0].case_id, "manifest.csv"])   # nothing left


def test_attention_maps_leave_nothing_behind_exam_after_exam(tiny_model):
    """A long batch must not grow: MONAI's GradCAM hooks once piled up with every exam (a batch of
    200 grew from 0.9 to 4.4 GB). Hooks and live autograd tensors stay constant from exam to exam."""
    import gc

    import torch

    from liverstiffness.stiffness.attention import compute_maps

    ens = Ensemble.load(tiny_model, "cpu")
    ch = ens.meta.spec.channels
    torch.manual_seed(0)
    x = torch.rand(1, len(ch), *ens.models[0].cfg.img_size)
    x[0, ch.index("mask")] = (x[0, ch.index("mask")] > 0.5).float()
    cov, known = torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool)

    def state():
        gc.collect()
        hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) for net in ens.models for m in net.modules())
        # type(), not isinstance(): isinstance reads __class__, which warns on deprecated torch aliases
        graphs = sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and o.grad_fn is not None)
        return hooks, graphs

    first, _ = compute_maps(ens.models, x, cov, known, ch)
    after_one = state()
    for _ in range(4):
        again, _ = compute_maps(ens.models, x, cov, known, ch)
    assert state() == after_one
    assert all(np.allclose(first[k], again[k]) for k in first) and not any(m.training for m in ens.models)


def test_sigterm_cleans_up_and_ends_by_the_signal(batch, tiny_model, tmp_path):
    """SIGTERM (a scheduler, the panel's Cancel): the run removes its staging folder and lock note,
    then ends by the signal (so the sender sees a cancelled run); started again it completes."""
    m, case_ids = batch
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(m, tiny_model, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: out.is_dir() and any(".partial-" in p.name for p in out.iterdir()), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, err
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []      # no staging, no lock note
    assert main(["predict", "--manifest", str(m), "--model", str(tiny_model), *OPTS, "--out", str(out)]) == 0
    _assert_complete(out, case_ids)
