"""Running predict and qa on a DICOM study: the command-line options and the glue.

``predict --study DIR`` indexes the folder, chooses the series by the rules (printing the table),
reads the exam, fills patient facts the user did not type from the headers (age, sex, BMI), runs
the usual prediction (report.json gains ``study`` and ``patient_facts_source``) and, with
``--dicom-out``, writes SEG, Parametric Map and SR. The same is used by manifests' ``study`` column.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from ..manifest import PatientFacts

ROLE_OPTIONS = ("t1w_series", "t2w_series", "dwi_series")


def add_study_options(p, outputs: bool = True) -> None:
    g = p.add_argument_group("DICOM study (instead of --t1w/--t2w/--dwi)")
    g.add_argument("--study", help="a folder holding one DICOM study: T1w, T2w and DWI are chosen by the rules; the "
                                   "mask is --mask FILE, --mask auto, or (no --mask) a liver DICOM SEG in the study")
    g.add_argument("--rules", help="series selection rules (JSON; default: the shipped Siemens/GE/Philips rules, "
                                   "liverstiffness/dicom/default_rules.json)")
    g.add_argument("--study-uid", help="StudyInstanceUID, when the folder holds several studies")
    for role in ("t1w", "t2w", "dwi"):
        g.add_argument(f"--{role}-series", metavar="UID", help=f"use this series as the {role.upper()} "
                                                                "(SeriesInstanceUID or series number)")
    g.add_argument("--mask-series", metavar="UID", help="use this DICOM SEG series of the study as the liver mask")
    if outputs:
        g.add_argument("--dicom-out", metavar="DIR", help="also write the liver mask as a DICOM SEG, the attention map "
                                                          "as a Parametric Map and the estimate as a TID 1500 SR here")


def check_study_args(args, single_inputs: tuple[str, ...] = ("t1w", "t2w", "dwi")) -> None:
    """``--study`` excludes the single-file inputs and ``--manifest``; the series options need it."""
    if args.study:
        clash = [f"--{n.replace('_', '-')}" for n in (*single_inputs, "manifest") if getattr(args, n, None)]
        if clash:
            raise InputError("--study", f"give either --study or {', '.join(clash)}, not both")
        return
    named = [f"--{n.replace('_', '-')}" for n in (*ROLE_OPTIONS, "mask_series", "rules", "study_uid")
             if getattr(args, n, None)]
    if getattr(args, "dicom_out", None) and not getattr(args, "manifest", None):
        named.append("--dicom-out")
    if named:
        raise InputError(named[0], "needs --study (a DICOM study folder)")


def overrides(args) -> dict:
    return {role.split("_")[0]: getattr(args, role, None) for role in ROLE_OPTIONS}


def select(study, rules=None, roles: dict | None = None, mask=None, mask_series=None, study_uid=None, quiet=True,
           auto_without_seg: bool = False):
    """Index and choose; prints the table unless ``quiet``. ``mask`` None: the study's liver SEG,
    which must be there unless ``auto_without_seg`` (then a missing one means an automatic mask)."""
    from .selection import select_study

    selection = select_study(study, rules, roles, need_mask=mask is None and not auto_without_seg,
                             mask_override=mask_series, study_uid=study_uid, find_mask=mask is None)
    if not quiet:
        print(selection.format_table())
    return selection


def study_exam(selection, mask=None, mask_label=None, segmenter_factory=None, given: PatientFacts | None = None,
               fit_adc: bool = True):
    """(images, automatic-mask info, patient facts, where each fact came from) for a study."""
    from .study_input import merge_facts, patient_facts_from_header, read_study_exam

    if mask is None and selection.mask_series is None:
        mask = "auto"                   # a manifest row with no mask cell and no SEG in its study
    segmenter = segmenter_factory() if mask is not None and str(mask) == "auto" else None
    images, mask_info = read_study_exam(selection, mask, mask_label, segmenter, fit_adc)
    header_facts, header_source = patient_facts_from_header(selection.chosen["t1w"].series.header)
    facts, source = merge_facts(given or PatientFacts(), header_facts, header_source)
    return images, mask_info, facts.validate("patient"), source


def predict_study(study, ens, out, opts, given: PatientFacts | None = None, mask=None, mask_label=None, rules=None,
                  roles: dict | None = None, mask_series=None, study_uid=None, dicom_out=None, quiet: bool = True,
                  on_stage=None, auto_without_seg: bool = False) -> dict:
    """Predict one DICOM study into ``out``; returns the report (with ``dicom_outputs`` when written)."""
    import time

    from ..predict import predict_images
    from ..segmentation.auto_mask import get_segmenter

    t_all, timings = time.perf_counter(), {}
    if on_stage:
        on_stage("read")
    selection = select(study, rules, roles, mask, mask_series, study_uid, quiet, auto_without_seg)
    t = time.perf_counter()
    images, mask_info, facts, source = study_exam(
        selection, mask, mask_label, lambda: get_segmenter(opts.segmenter, opts.seg_model, ens.device.type), given)
    timings["segment" if mask_info else "read"] = round(time.perf_counter() - t, 4)
    extra = {"study": selection.report(), "patient_facts_source": source}
    report = predict_images(images, facts, ens, out, opts, on_stage, timings, t_all, mask_info, report_extra=extra)
    if dicom_out:
        from .results import write_dicom_results

        report["dicom_outputs"] = write_dicom_results(report, out, selection, dicom_out)
    return report


def predict_study_record(rec, ens, out: Path, opts) -> dict:
    """A manifest row with a ``study`` cell (batch predict): default rules, the row's facts."""
    dicom_out = Path(opts.dicom_out) / rec.case_id if getattr(opts, "dicom_out", None) else None
    return predict_study(rec.study, ens, out, replace(opts), rec.facts, rec.mask, rules=getattr(opts, "rules", None),
                         dicom_out=dicom_out, auto_without_seg=True)
