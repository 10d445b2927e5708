"""Manifests: ``predict`` and ``qa`` over every row, resumable, one folder per case.

OUT/<case_id>/ holds one finished case (it appears whole, by one rename, with report.json);
OUT/predictions.csv a row per case (rewritten whole, atomically, after every case). A run holds
OUT/.liverstiffness-batch.lock, so a second run on the same OUT is refused; a killed run's lock
goes with its process. Starting again resumes: staging folders a killed run left are removed,
a case folder with a report.json counts as done (its row is rebuilt from the report if the run
died before writing it), anything else is run again. A full disk stops the batch with one line.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import SimpleITK as sitk
import torch
from tqdm import tqdm

from .batch_lock import BatchLock
from .errors import InputError
from .manifest import ExamRecord, read_manifest
from .ood import describe as describe_range
from .outputs import (
    REPORT,
    OutputError,
    atomic_write_csv,
    atomic_write_text,
    case_folder,
    remove_stale_staging,
    writing,
)
from .predict import PredictOptions, predict_exam
from .report import Report
from .stiffness.ensemble import Ensemble

PREDICTIONS_COLUMNS = ("case_id", "stiffness_kpa", "interval_low_kpa", "interval_high_kpa", "category", "input_range",
                       "status", "error")
QA_COLUMNS = ("case_id", "status", "flags", "volume_ml", "n_components", "hole_volume_ml", "max_offset_mm",
              "leak_volume_ml", "messages", "error")


def _read_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return {row["case_id"]: row for row in csv.DictReader(fh) if row.get("case_id")}
    except (csv.Error, UnicodeDecodeError, KeyError):
        return {}          # not ours or damaged: the case folders say what is done


def _write_rows(path: Path, rows: dict[str, dict], order: list[str]) -> None:
    atomic_write_csv(path, PREDICTIONS_COLUMNS, [rows[cid] for cid in order if cid in rows])


def _row_from_report(case_id: str, rep: Report) -> dict:
    rng = rep.input_range or {}
    return {"case_id": case_id, "stiffness_kpa": rep.stiffness_kpa,
            "interval_low_kpa": rep.interval_kpa[0], "interval_high_kpa": rep.interval_kpa[1],
            "category": rep.category, "input_range": describe_range(rng) if rng else "not checked",
            "status": "ok", "error": ""}


def _finished(case_dir: Path) -> Report | None:
    """The report of a finished case folder, or None (no folder, or no readable report)."""
    if not (case_dir / REPORT).is_file():
        return None
    try:
        return Report.read(case_dir / REPORT)
    except InputError:
        return None


def _run_case(rec: ExamRecord, ens: Ensemble, out: Path, opts: PredictOptions | None) -> dict:
    """One manifest row → its predictions.csv row (a bad case is an error row, not a stop; a full
    disk is an OutputError, which stops the batch)."""
    try:
        if rec.study is not None:       # a DICOM study: series chosen by the rules
            from .dicom.study_run import predict_study_record
            rep = predict_study_record(rec, ens, case_folder(out, rec.case_id), opts or PredictOptions())
        else:
            rep = predict_exam(rec, ens, case_folder(out, rec.case_id), opts)
    except OutputError:
        raise
    except InputError as exc:
        return {"case_id": rec.case_id, "status": "error", "error": str(exc)}
    return _row_from_report(rec.case_id, rep)


_worker_ensemble: Ensemble | None = None


def _start_worker(model_dir: str, device: str, threads: int) -> None:
    """Each batch worker loads the ensemble once and shares the cores with the others."""
    global _worker_ensemble
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    _worker_ensemble = Ensemble.load(model_dir, device)


def _run_case_in_worker(rec: ExamRecord, out: Path, opts: PredictOptions | None) -> dict:
    try:
        return _run_case(rec, _worker_ensemble, out, opts)
    except OutputError as exc:       # sent back as a row: the parent stops the batch with it
        return {"case_id": rec.case_id, "status": "stop", "error": str(exc), "what": exc.what, "problem": exc.problem}


_OUR_FILES = ("attention", "report.json")   # what a case folder holds: attention*.nii.gz, the montage, the report


def _remove_partial(folder: Path, out: Path) -> None:
    """Remove a case folder that has no report (left by an older version's non-atomic write) —
    but only when everything in it is ours: --out may have been pointed at a folder of inputs."""
    foreign = [p.name for p in folder.iterdir() if not p.name.startswith(_OUR_FILES)]
    if foreign:
        raise InputError(f"--out {out}", f"{folder.name}/ exists, is not a finished case (no report.json) and holds "
                                         f"other files ({', '.join(sorted(foreign)[:3])}); give an empty or earlier --out")
    shutil.rmtree(folder)


def _prepare_out(out: Path, records: list[ExamRecord], table: Path) -> tuple[dict, list[ExamRecord]]:
    """Clean up after a killed run and decide what is left to do (under the lock)."""
    remove_stale_staging(out)
    rows = _read_rows(table)
    todo = []
    for rec in records:
        folder = case_folder(out, rec.case_id)
        rep = _finished(folder)
        if rep is not None:
            if rows.get(rec.case_id, {}).get("status") != "ok":
                rows[rec.case_id] = _row_from_report(rec.case_id, rep)   # the run died before its row
            continue
        if folder.exists():
            _remove_partial(folder, out)
        rows.pop(rec.case_id, None) if rows.get(rec.case_id, {}).get("status") == "ok" else None
        todo.append(rec)
    return rows, todo


def predict_manifest(manifest: str | Path, ens: Ensemble, out: str | Path, opts: PredictOptions | None = None,
                     progress: bool = True, workers: int = 0) -> dict[str, dict]:
    """Every manifest row into ``out/<case_id>/``; ``out/predictions.csv`` has a row per case with
    its status and whether its inputs were within the training range. A bad case is recorded and
    skipped; run again on the same ``out`` to resume (see the notes above).

    ``workers`` > 1 runs that many cases at a time, each in its own process with the ensemble
    loaded there (on ``ens``'s device) and the cores split between them: one exam keeps only
    about 1.5 cores busy (QA and preprocessing are largely serial), so several at once use more.
    """
    records = read_manifest(manifest, check_files=False)
    out = Path(out)
    with writing(f"--out {out}"), BatchLock(out):
        table = out / "predictions.csv"
        rows, todo = _prepare_out(out, records, table)
        order = [r.case_id for r in records]
        _write_rows(table, rows, order)
        bar = tqdm(total=len(todo), desc="predict", unit="exam", disable=not progress)

        def record(row: dict) -> None:
            if row.get("status") == "stop":
                raise OutputError(row["what"], row["problem"])
            rows[row["case_id"]] = row
            _write_rows(table, rows, order)  # after every case, so an interruption loses nothing
            bar.update()

        if workers > 1 and len(todo) > 1:
            # spawn, not fork: a forked copy of a process that already runs torch's threads can hang.
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                                     initargs=(str(ens.model_dir), ens.device.type, threads)) as pool:
                futures = [pool.submit(_run_case_in_worker, rec, out, opts) for rec in todo]
                try:
                    for done in as_completed(futures):
                        record(done.result())
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        else:
            for rec in todo:
                record(_run_case(rec, ens, out, opts))
        bar.close()
        return rows


# ----------------------------------------------------------------------------------------------
# Mask QA over a manifest: OUT/<case_id>/qa.json and OUT/qa.csv (a row per case).


def qa_row(case_id: str, res) -> dict:
    """The qa.csv row of one QA result."""
    meas = res.measurements
    return {"case_id": case_id, "status": "ok", "flags": ";".join(f.code for f in res.flags),
            "volume_ml": meas.get("volume_ml", ""), "n_components": meas.get("n_components", ""),
            "hole_volume_ml": meas.get("hole_volume_ml", ""),
            "max_offset_mm": max((v["offset_mm"] for v in meas.get("edge_alignment", {}).values()), default=""),
            "leak_volume_ml": round(sum(meas.get("leak_volume_ml", {}).values()), 1),
            "messages": " | ".join(f"{f.code}: {f.message}" for f in res.flags), "error": ""}


def qa_manifest(manifest: str | Path, out: str | Path, thresholds=None, segmenter=None,
                progress: bool = True) -> list[dict]:
    """QA every manifest row (``segmenter()`` makes the automatic masks of rows without one);
    returns the qa.csv rows. A case that cannot be read is an error row, not a stop."""
    from .qa_exam import check_exam_mask, qa_json

    records = read_manifest(manifest, check_files=False)
    out = Path(out)
    rows = []
    with writing(f"--out {out}"), BatchLock(out):
        for rec in tqdm(records, desc="qa", unit="exam", disable=not progress):
            try:
                res, exam, auto, extra = check_exam_mask(rec, thresholds, segmenter)
                folder = case_folder(out, rec.case_id)
                folder.mkdir(exist_ok=True)
                atomic_write_text(folder / "qa.json", json.dumps(qa_json(res, auto, extra), indent=2))
                rows.append(qa_row(rec.case_id, res))
            except OutputError:
                raise
            except InputError as exc:
                rows.append({"case_id": rec.case_id, "status": "error", "error": str(exc)})
        atomic_write_csv(out / "qa.csv", QA_COLUMNS, rows)
    return rows
