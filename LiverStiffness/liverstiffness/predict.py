"""Estimate stiffness for one exam or a manifest: the report, attention maps and a montage.

Stages (timed in the report): read → qa → preprocess → model → attention → write. Nothing is
written before reading, QA and preprocessing have accepted the inputs, and the case folder is
assembled in a temporary folder and moved into place at the end, so a failure leaves no partial
result behind.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from . import __version__
from .attention import compute_maps, map_summary, sequence_contributions
from .batch_lock import BatchLock
from .cutoffs import STIFFNESS_LABEL, load_cutoffs
from .ensemble import Ensemble
from .errors import InputError
from .imageio import geometry, write_nifti_gz
from .manifest import ExamRecord, PatientFacts, read_manifest
from .model.covariates import COVARIATES, encode
from .ood import check_exam as check_input_range
from .ood import describe as describe_range
from .outputs import (
    REPORT,
    OutputError,
    atomic_write_csv,
    atomic_write_text,
    case_folder,
    publish_folder,
    remove_stale_staging,
    staging_folder,
    writing,
)
from .preprocess import ExamImages, Prepared, prepare, read_exam

DEFAULT_MAP = "rollout"
MAP_UNIT = "times the uniform share over the model's crop (1.0 = uniform)"
PREDICTIONS_COLUMNS = ("case_id", "stiffness_kpa", "interval_low_kpa", "interval_high_kpa", "category", "input_range",
                       "status", "error")


@dataclass
class ExamInput:
    t1w: Path
    t2w: Path
    dwi: Path
    mask: Path | None                # None: an automatic mask, segmented on the T2w
    dwi_b: tuple[float, ...] | None = None
    facts: PatientFacts = field(default_factory=PatientFacts)
    mask_label: int | None = None


@dataclass
class PredictOptions:
    detail_maps: bool = False        # per-layer and per-head maps as well
    gradient_maps: bool = True       # GradCAM and per-sequence saliency
    montage: bool = True
    qa: bool = True
    qa_thresholds: object | None = None
    segmenter: str = "model"         # for automatic masks: "model" or "totalsegmentator"
    seg_model: str | None = None     # segmentation model folder (default: the shipped one)
    cutoffs: str | None = None       # cut-off table: a name in cutoffs.TABLES or a JSON file (default mayo-60hz)
    rules: str | None = None         # batch rows with a DICOM study: series selection rules (default: shipped)
    dicom_out: str | None = None     # batch rows with a DICOM study: write SEG/PM/SR under <dicom_out>/<case_id>


@contextmanager
def _timed(timings: dict, name: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t, 4)


def _infer(ens: Ensemble, prep: Prepared, facts: PatientFacts, opts: PredictOptions) -> tuple[dict, dict, dict]:
    """The estimate (with the maps under "maps"), the attention report, and the attention time."""
    cov, known = encode(facts)
    res = ens.predict(prep.tensor[None], cov[None], known[None])
    x = torch.as_tensor(prep.tensor[None], device=ens.device)
    c = torch.as_tensor(cov[None], device=ens.device)
    k = torch.as_tensor(known[None], device=ens.device)
    t = time.perf_counter()
    maps, extra = compute_maps(ens.models, x, c, k, ens.meta.spec.channels, detail=opts.detail_maps,
                               gradient=opts.gradient_maps)
    liver = prep.tensor[ens.meta.spec.channels.index("mask")]
    attention = {"unit": MAP_UNIT, **extra, "maps": {kind: map_summary(arr, liver) for kind, arr in maps.items()},
                 "sequence_contributions_kpa": sequence_contributions(ens.models, x, c, k, res["fold_log"])}
    res["maps"] = maps
    return res, attention, {"attention": round(time.perf_counter() - t, 4)}


def predict_exam(inp: ExamInput, ens: Ensemble, out_dir: str | Path, opts: PredictOptions | None = None,
                 on_stage=None) -> dict:
    """Run one exam from files; writes report.json, attention NIfTIs and the montage into ``out_dir``."""
    inp.facts.validate("patient")
    t_all = time.perf_counter()
    timings: dict = {}
    if on_stage:
        on_stage("read")
    mask_info = None
    if inp.mask is None:  # automatic mask: segment the T2w, carry it to the T1w grid
        from .segmentation.auto_mask import get_segmenter, read_exam_auto
        opts = opts or PredictOptions()
        if on_stage:
            on_stage("segment")
        with _timed(timings, "segment"):
            images, mask_info = read_exam_auto(inp.t1w, inp.t2w, inp.dwi, inp.dwi_b,
                                               get_segmenter(opts.segmenter, opts.seg_model, ens.device.type))
    else:
        with _timed(timings, "read"):
            images = read_exam(inp.t1w, inp.t2w, inp.dwi, inp.mask, inp.dwi_b, inp.mask_label)
    return predict_images(images, inp.facts, ens, out_dir, opts, on_stage, timings, t_all, mask_info)


def predict_images(images: ExamImages, facts: PatientFacts, ens: Ensemble, out_dir: str | Path,
                   opts: PredictOptions | None = None, on_stage=None, timings: dict | None = None,
                   t_all: float | None = None, mask_info: dict | None = None, report_extra: dict | None = None) -> dict:
    """Run one exam already in memory (the Slicer module converts its nodes to ``images``).

    ``on_stage(name)`` is called as each stage starts (qa, preprocess, model, write).
    ``mask_info``: how an automatic mask was made (``segmentation.auto_mask``), for the report.
    ``report_extra``: more report.json entries (e.g. the DICOM study's series selection).
    """
    opts = opts or PredictOptions()
    cutoffs = load_cutoffs(opts.cutoffs)
    out_dir = Path(out_dir)
    timings = {} if timings is None else timings
    t_all = time.perf_counter() if t_all is None else t_all
    stage = on_stage or (lambda name: None)
    facts.validate("patient")
    mask_path = images.paths.get("mask", "mask")
    qa_summary, warnings_out, transforms = None, list(images.notes), None
    if mask_info is not None:
        from .segmentation.auto_mask import low_confidence_warning
        warnings_out += [w for w in [low_confidence_warning(mask_info)] if w]
    if opts.qa:
        from .qa import run_qa
        stage("qa")
        with _timed(timings, "qa"):
            qa_result = run_qa(images, opts.qa_thresholds, register=ens.meta.preprocess.register)
        qa_summary = qa_result.summary()
        transforms = qa_result.transforms if ens.meta.preprocess.register else None
        severe = [f for f in qa_result.flags if f.severity == "severe"]
        if severe:
            raise InputError(f"mask {mask_path}", f"failed QA: {severe[0].code}: {severe[0].message}")
        warnings_out += [f"mask QA {f.code}: {f.message}" for f in qa_result.flags]
    stage("preprocess")
    with _timed(timings, "preprocess"):
        prep = prepare(images, ens.meta.spec, ens.meta.preprocess, transforms)
    if not prep.has_adc:
        warnings_out.append("single b-value DWI: no ADC map; the model ran with its ADC channel empty")
    warnings_out += [r["warning"] for r in prep.registration.values() if r.get("warning")]
    input_range = check_input_range(prep.tensor, ens.meta.spec.channels, float(np.prod(ens.meta.spec.spacing_mm)) / 1000.0,
                                    facts, ens.meta.input_statistics)
    if input_range["checked"] and not input_range["in_range"]:
        warnings_out.append(f"inputs {describe_range(input_range)}: the estimate is an extrapolation")
    stage("model")
    t = time.perf_counter()
    (res, attention, t_att), fallback = ens.with_cpu_fallback(lambda: _infer(ens, prep, facts, opts))
    maps = res.pop("maps")
    if fallback:
        warnings_out.append(fallback)
    flat = [k for k in ("rollout", "gradcam") if k in attention["maps"] and not attention["maps"][k]["informative"]]
    if flat:
        warnings_out.append(f"{' and '.join(flat)} map(s) near-uniform: they do not show where the model looked")
    timings["model"] = round(time.perf_counter() - t - t_att["attention"], 4)
    timings.update(t_att)

    kpa = float(res["kpa"][0])
    cat = cutoffs.categorize(kpa)
    report = {
        "stiffness_label": STIFFNESS_LABEL,
        "stiffness_kpa": round(kpa, 3),
        "interval_kpa": [round(float(res["low"][0]), 3), round(float(res["high"][0]), 3)],
        "interval_coverage": res["coverage"],
        "category": cat.label, "category_band_kpa": [cat.low_kpa, cat.high_kpa], "mre_bands": cutoffs.band_table(),
        "cutoff_table": cutoffs.as_dict(),
        "fold_predictions_kpa": [round(float(v), 3) for v in np.exp(res["fold_log"][:, 0])],
        "ensemble_sd_log": round(float(res["sd_log"][0]), 4),
        "sequence_contributions_kpa": attention.pop("sequence_contributions_kpa"),
        "attention": attention,
        "model": ens.meta.summary(Path(ens.model_dir)),
        "device": str(ens.device),
        "patient": {c: getattr(facts, c) for c in COVARIATES},
        "inputs": {name: {"source": images.paths.get(name, ""), **geometry(img)} for name, img in (
            ("t1w", images.t1w), ("t2w", images.t2w), ("dwi", images.dwi.images[-1]), ("mask", images.mask))},
        "dwi_b_values": list(images.dwi.b_values), "adc_available": prep.has_adc,
        "preprocessing": {"registration_to_t1w": prep.registration, "liver_medians": prep.liver_medians,
                          "body_medians": prep.body_medians, "crop": geometry(prep.crop)},
        "mask": mask_info or {"source": "given", "path": mask_path},
        "mask_qa": qa_summary, "input_range": input_range, "warnings": warnings_out, "outputs": {},
        "software": {"liverstiffness": __version__, "torch": torch.__version__},
        **(report_extra or {}),
    }
    stage("write")
    with writing(f"--out {out_dir}"):                  # a full disk: one clear error, nothing half-written
        return _write_result(out_dir, report, images, prep, maps, opts, Path(ens.model_dir),
                             auto_mask=mask_info is not None, timings=timings, t_all=t_all)


def _write_result(out_dir: Path, report: dict, images: ExamImages, prep: Prepared, maps: dict, opts: PredictOptions,
                  model_dir: Path, auto_mask: bool, timings: dict, t_all: float) -> dict:
    """``report`` and the maps into a staging folder beside ``out_dir``, then moved into place
    (report.json last, see :mod:`.outputs`): a failure or a kill leaves no partial result."""
    t_write = time.perf_counter()
    tmp = staging_folder(out_dir)  # inputs accepted: now we may write
    # One more thread writes the maps: zlib lets go of the GIL, so they compress while this one
    # goes on (the montage, the report).
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        outputs, rollout, writes = _write_maps(tmp, prep, maps, pool)
        report["outputs"] = outputs
        if auto_mask:  # the automatic mask itself, on the T1w grid, for checking
            sitk.WriteImage(images.mask, str(tmp / "mask_auto.nii.gz"), useCompression=True)
            outputs["mask"] = "mask_auto.nii.gz"
        if opts.montage:
            from .montage import write_montage
            write_montage(tmp / "attention_montage.png", images.t1w, rollout, prep.mask_ref,
                          title=f"{report['stiffness_kpa']:.2f} kPa ({report['category']}) — attention rollout",
                          unit="× uniform share")
            outputs["montage"] = "attention_montage.png"
        _finish(writes, f"--out {out_dir}")
        timings["write"] = round(time.perf_counter() - t_write, 4)
        timings["total"] = round(time.perf_counter() - t_all, 4)
        report["timings_s"] = timings
        from .report_page import write_report_page
        outputs["report_page"] = write_report_page(tmp / "report.html", report, tmp, model_dir).name
        atomic_write_text(tmp / REPORT, json.dumps(report, indent=2))
        publish_folder(tmp, out_dir)
    except BaseException:
        pool.shutdown(cancel_futures=True)      # a write under way ends before its folder goes
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written result is left behind
        raise
    pool.shutdown()
    return report


def _write_maps(folder: Path, prep: Prepared, maps: dict, pool: ThreadPoolExecutor) -> tuple[dict, sitk.Image, list]:
    """Each map back on the T1w grid, in its own unit (times the uniform share; 0 outside the
    model's crop), unstretched: attention.nii.gz (rollout) and attention_<kind>.nii.gz for the
    others, plus the liver mask on the same grid (liver_mask.nii.gz) for "inside the liver only"
    displays. The files are written by ``pool``. Returns the outputs entry, the rollout image
    and the writes (see :func:`_finish`)."""
    written, writes, rollout = {}, [], None
    for kind, arr in maps.items():
        img = prep.to_reference(arr)
        name = "attention.nii.gz" if kind == DEFAULT_MAP else f"attention_{kind}.nii.gz"
        # GradCAM and saliency vary voxel by voxel; rollout and layer maps are constant over patches.
        writes.append(pool.submit(write_nifti_gz, img, folder / name, kind == "gradcam" or kind.startswith("saliency_")))
        written[kind] = name
        rollout = img if kind == DEFAULT_MAP else rollout
    writes.append(pool.submit(write_nifti_gz, prep.mask_ref, folder / "liver_mask.nii.gz"))
    return {"attention_maps": written, "liver_mask": "liver_mask.nii.gz"}, rollout, writes


def _finish(writes: list, where: str) -> None:
    """Wait for the map writes; their first error is raised here (ITK reports a full disk as its
    own exception)."""
    for w in writes:
        try:
            w.result()
        except RuntimeError as exc:
            raise OutputError(where, f"cannot be written ({_last_line(exc)}); nothing was left half-written") from None


def _last_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:160]


def summary_line(report: dict) -> str:
    lo, hi = report["interval_kpa"]
    cov = report.get("interval_coverage")
    note = " [model trained on synthetic data: not for clinical use]" if report["model"].get("synthetic_training_data") else ""
    warn = f"; {len(report['warnings'])} warning(s)" if report.get("warnings") else ""
    auto = " [automatic liver mask]" if (report.get("mask") or {}).get("source") == "automatic" else ""
    if (report.get("input_range") or {}).get("in_range") is False:
        warn += "; inputs outside the model's training range"
    table = (report.get("cutoff_table") or {}).get("name", "mayo-60hz")
    return (f"{report.get('stiffness_label', 'MRE-equivalent liver stiffness')} {report['stiffness_kpa']:.2f} kPa "
            f"({cov:.0%} interval {lo:.2f}–{hi:.2f} kPa): {report['category']} [cut-offs {table}]{warn}{auto}{note}")


# ----------------------------------------------------------------------------------------------
# Batches
#
# OUT/<case_id>/ holds one finished case (it appears whole, by one rename, with report.json);
# OUT/predictions.csv a row per case (rewritten whole, atomically, after every case). A run holds
# OUT/.liverstiffness-batch.lock, so a second run on the same OUT is refused; a killed run's lock
# goes with its process. Starting again resumes: staging folders a killed run left are removed,
# a case folder with a report.json counts as done (its row is rebuilt from the report if the run
# died before writing it), anything else is run again. A full disk stops the batch with one line.


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


def _row_from_report(case_id: str, rep: dict) -> dict:
    rng = rep.get("input_range") or {}
    return {"case_id": case_id, "stiffness_kpa": rep["stiffness_kpa"],
            "interval_low_kpa": rep["interval_kpa"][0], "interval_high_kpa": rep["interval_kpa"][1],
            "category": rep["category"], "input_range": describe_range(rng) if rng else "not checked",
            "status": "ok", "error": ""}


def _finished(case_dir: Path) -> dict | None:
    """The report of a finished case folder, or None (no folder, or no readable report)."""
    try:
        rep = json.loads((case_dir / REPORT).read_text(encoding="utf-8"))
        return rep if isinstance(rep, dict) and "stiffness_kpa" in rep else None
    except (OSError, ValueError):
        return None


def _run_case(rec: ExamRecord, ens: Ensemble, out: Path, opts: PredictOptions | None) -> dict:
    """One manifest row → its predictions.csv row (a bad case is an error row, not a stop; a full
    disk is an OutputError, which stops the batch)."""
    inp = ExamInput(rec.t1w, rec.t2w, rec.dwi, rec.mask, rec.dwi_b, rec.facts, rec.mask_label)
    try:
        if rec.study is not None:       # a DICOM study: series chosen by the rules
            from .dicom.study_run import predict_study_record
            rep = predict_study_record(rec, ens, case_folder(out, rec.case_id), opts or PredictOptions())
        else:
            rep = predict_exam(inp, ens, case_folder(out, rec.case_id), opts)
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
