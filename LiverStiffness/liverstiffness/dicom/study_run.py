"""Running predict and qa on a DICOM study: the workflow between the index and the estimate.

``predict --study DIR`` indexes the folder, chooses the series by the rules (printing the table),
reads the exam, fills patient facts the user did not type from the headers (age, sex, BMI), runs
the usual prediction (report.json gains ``study`` and ``patient_facts_source``) and, with
``--dicom-out``, writes SEG, Parametric Map and SR. A study needs at least one of T1w, T2w and
DWI: a role no series matched (or one ``--leave-out`` names) is missing, with its reason, in the
report's ``sequences_missing``; the reference series (the first present of T1w, T2w, DWI) gives
the grid of the outputs and the patient facts of the headers. The same is used by manifests' ``study`` column.
The command-line options that fill a :class:`StudyRequest` live in ``cli/options.py``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..manifest import PatientFacts
from ..timing import Stopwatch


@dataclass
class StudyRequest:
    """Which study, and what the user fixed by hand instead of leaving it to the rules."""

    study: str | Path
    rules: str | None = None                    # series selection rules (JSON); None: the shipped ones
    roles: dict | None = None                   # {"t1w": UID or series number, ...} overriding the rules
    mask: str | Path | None = None              # a mask file, "auto", or None: the study's liver SEG
    mask_label: int | None = None
    mask_series: str | None = None              # this SEG series of the study as the mask
    study_uid: str | None = None                # when the folder holds several studies
    auto_without_seg: bool = False              # no SEG and no mask given: an automatic mask (manifest rows)
    facts: PatientFacts = field(default_factory=PatientFacts)   # typed by the user; headers fill the rest


def select(request: StudyRequest, quiet: bool = True):
    """Index and choose; prints the table unless ``quiet``. ``request.mask`` None: the study's liver
    SEG, which must be there unless ``auto_without_seg`` (then a missing one means an automatic mask)."""
    from .selection import select_study

    selection = select_study(request.study, request.rules, request.roles,
                             need_mask=request.mask is None and not request.auto_without_seg,
                             mask_override=request.mask_series, study_uid=request.study_uid,
                             find_mask=request.mask is None)
    if not quiet:
        print(selection.format_table())
    return selection


def study_exam(selection, request: StudyRequest, segmenter_factory=None, fit_adc: bool = True):
    """(images, automatic-mask info, patient facts, where each fact came from) for a study."""
    from .study_input import merge_facts, patient_facts_from_header, read_study_exam

    mask = request.mask
    if mask is None and selection.mask_series is None:
        mask = "auto"                   # a manifest row with no mask cell and no SEG in its study
    segmenter = segmenter_factory() if mask is not None and str(mask) == "auto" else None
    images, mask_info = read_study_exam(selection, mask, request.mask_label, segmenter, fit_adc)
    header_facts, header_source = patient_facts_from_header(selection.chosen[selection.reference_role].series.header)
    facts, source = merge_facts(request.facts, header_facts, header_source)
    return images, mask_info, facts.validate("patient"), source


def predict_study(request: StudyRequest, ens, out, opts, dicom_out=None, quiet: bool = True, on_stage=None):
    """Predict one DICOM study into ``out``; returns the report (with ``dicom_outputs`` when written)."""
    from ..predict import predict_images
    from ..segmentation.auto_mask import get_segmenter

    watch = Stopwatch()
    if on_stage:
        on_stage("read")
    selection = select(request)
    for role, reason in (getattr(opts, "left_out", None) or {}).items():   # --leave-out SEQUENCE:REASON
        selection.leave_out(role, reason)
    if not quiet:
        print(selection.format_table())
    t = time.perf_counter()
    images, mask_info, facts, source = study_exam(
        selection, request, lambda: get_segmenter(opts.segmenter, opts.seg_model, ens.device.type))
    watch.add("segment" if mask_info else "read", time.perf_counter() - t)
    report = predict_images(images, facts, ens, out, opts, on_stage=on_stage, watch=watch,
                            report_extra={"study": selection.report(), "patient_facts_source": source})
    if dicom_out:
        from .results import write_dicom_results

        report.dicom_outputs = write_dicom_results(report, out, selection, dicom_out)
    return report


def predict_study_record(rec, ens, out: Path, opts):
    """A manifest row with a ``study`` cell (batch predict): default rules, the row's facts."""
    dicom_out = Path(opts.dicom_out) / rec.case_id if getattr(opts, "dicom_out", None) else None
    request = StudyRequest(rec.study, rules=getattr(opts, "rules", None), mask=rec.mask, auto_without_seg=True,
                           facts=rec.facts)
    return predict_study(request, ens, out, replace(opts), dicom_out=dicom_out)
