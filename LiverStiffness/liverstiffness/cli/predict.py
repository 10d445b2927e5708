"""``liverstiffness predict``: one exam (``--t1w --t2w --dwi --mask``) or a batch (``--manifest``)."""
from __future__ import annotations

import gc
from pathlib import Path

from .options import add_device_option, add_segmenter_options, add_study_options, check_study_args, stage_printer, study_request


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="estimate liver stiffness for one exam or a manifest",
        description="One exam: writes OUT/report.json (kPa, interval, MRE category, per-fold values, model, "
                    "timings, inputs, mask QA), attention NIfTIs on the T1w grid and a PNG montage, and prints a "
                    "one-line summary. A manifest: one folder per case and OUT/predictions.csv; a failing case "
                    "is recorded in its row, and running again on the same OUT resumes (also after a crash or "
                    "kill); a second run on the same OUT at once is refused.")
    one = p.add_argument_group("one exam")
    one.add_argument("--t1w", help="T1-weighted image (NIfTI/NRRD/MHA file or DICOM folder). Any of --t1w, --t2w "
                                   "and --dwi may be left out (a protocol without it); the interval is then that of "
                                   "exams with the same sequences, and the report says which were used")
    one.add_argument("--t2w", help="T2-weighted image")
    one.add_argument("--dwi", help="DWI: 3-D (one b-value), 4-D, or a DICOM folder")
    one.add_argument("--dwi-b", help="b-value(s) in s/mm², e.g. 800 or 0,50,800 (DICOM carries its own)")
    one.add_argument("--mask", help="liver mask labelmap, or 'auto': segmented on the T2w by --segmenter and carried "
                                    "to the T1w grid (the report says so, with the segmentation's confidence)")
    one.add_argument("--mask-label", type=int, help="label value of the liver (default: any non-zero)")
    one.add_argument("--age", type=float, help="years")
    one.add_argument("--sex", choices=("F", "M"))
    one.add_argument("--bmi", type=float, help="kg/m²")
    one.add_argument("--pdff", type=float, help="MRI proton-density fat fraction, %%")
    one.add_argument("--ast", type=float, help="aspartate aminotransferase, U/L (with --alt, --platelets and --age: FIB-4)")
    one.add_argument("--alt", type=float, help="alanine aminotransferase, U/L")
    one.add_argument("--platelets", type=float, help="platelet count, 10⁹/L (thousands per µL)")
    p.add_argument("--leave-out", action="append", default=[], metavar="SEQUENCE:REASON",
                   help="do not use a sequence that was given but is unusable (e.g. 'dwi:motion artefact'); the "
                        "report names it with the reason. May be repeated; applies to every exam of a manifest")
    p.add_argument("--manifest", help="batch: a manifest CSV instead of the single-exam inputs (an empty mask: auto; "
                                      "empty t1w, t2w or dwi cells: exams without that sequence)")
    add_study_options(p)
    p.add_argument("--cutoffs", help="category cut-off table: mayo-60hz (default), nafld-liang-2023, or a JSON file "
                                     "(see liverstiffness/cutoffs.py); the report names the table used")
    add_segmenter_options(p)
    p.add_argument("--workers", type=int, default=0,
                   help="batch: cases run at a time, each in its own process (default: one, in this process)")
    p.add_argument("--model", help="model folder (default: the shipped demo model)")
    add_device_option(p)
    p.add_argument("--maps", choices=("default", "all", "none"), default="default",
                   help="default: rollout, GradCAM and per-sequence saliency; all: also every layer and head; "
                        "none: rollout only")
    p.add_argument("--no-montage", action="store_true", help="skip the PNG montage")
    p.add_argument("--no-qa", action="store_true", help="skip mask QA (not recommended)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--stages", action="store_true", help="print 'STAGE <name>' as each stage starts (for front ends)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError
    from ..manifest import PatientFacts, parse_b_values

    check_study_args(args)
    single = [args.t1w, args.t2w, args.dwi, args.mask]
    if args.study:
        pass                            # the mask is optional: a liver SEG in the study
    elif args.manifest and any(single):
        raise InputError("predict", "give either --manifest or the single-exam inputs, not both")
    if not args.manifest and not args.study:
        if not any(single[:3]):
            raise InputError("predict", "needs at least one of --t1w, --t2w and --dwi, and --mask "
                                        "(or give --manifest or --study)")
        if not args.mask:
            raise InputError("predict", "missing --mask (a liver mask file, or 'auto')")
    left_out = parse_left_out(args.leave_out)
    if args.workers < 0:
        raise InputError("--workers", f"must be 0 or more, got {args.workers}")
    facts = PatientFacts(args.age, args.sex, args.bmi, args.pdff, ast=args.ast, alt=args.alt,
                         platelets=args.platelets).validate("patient")
    dwi_b = parse_b_values(args.dwi_b, "--dwi-b") if args.dwi_b else None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}", "exists and is not a folder")

    from ..predict import PredictOptions
    from ..stiffness.ensemble import Ensemble

    opts = PredictOptions(detail_maps=args.maps == "all", gradient_maps=args.maps != "none",
                          montage=not args.no_montage, qa=not args.no_qa, segmenter=args.segmenter,
                          seg_model=args.seg_model, cutoffs=args.cutoffs, rules=args.rules, dicom_out=args.dicom_out,
                          left_out=left_out)
    from ..cutoffs import load_cutoffs
    load_cutoffs(args.cutoffs)          # a bad table is an input error before anything runs
    ens = Ensemble.load(args.model, args.device)
    # The few hundred thousand objects the libraries made on import live as long as the process:
    # kept out of the garbage collector's full passes, which would rescan them all (0.15–0.2 s
    # each) during the run.
    gc.freeze()
    try:
        return _run_loaded(args, ens, opts, facts, dwi_b, out)
    finally:
        gc.unfreeze()                   # for callers that go on in this process (the tests)


def _run_loaded(args, ens, opts, facts, dwi_b, out: Path) -> int:
    from ..manifest import ExamRecord
    from ..predict import predict_exam

    if args.study:
        from dataclasses import replace

        from ..dicom.study_run import predict_study
        request = replace(study_request(args), facts=facts)
        report = predict_study(request, ens, out, opts, dicom_out=args.dicom_out, quiet=args.quiet,
                               on_stage=stage_printer(args))
        print(report.summary_line())
        if report.dicom_outputs:
            print(f"DICOM SEG, Parametric Map and SR → {report.dicom_outputs['folder']}")
        return 0
    if args.manifest:
        from ..batch import predict_manifest
        rows = predict_manifest(args.manifest, ens, out, opts, progress=not args.quiet, workers=args.workers)
        bad = [r for r in rows.values() if r.get("status") != "ok"]
        outside = sum(1 for r in rows.values() if str(r.get("input_range", "")).startswith("outside"))
        note = f", {outside} with inputs outside the training range" if outside else ""
        print(f"{len(rows) - len(bad)} of {len(rows)} exam(s) done, {len(bad)} failed{note} → {out / 'predictions.csv'}")
        return 0
    def path(value):
        return Path(value) if value else None

    exam = ExamRecord(case_id=out.name, patient_id="", t1w=path(args.t1w), t2w=path(args.t2w), dwi=path(args.dwi),
                      mask=None if args.mask == "auto" else Path(args.mask), dwi_b=dwi_b, facts=facts,
                      mask_label=args.mask_label)
    report = predict_exam(exam, ens, out, opts, on_stage=stage_printer(args))
    print(report.summary_line())
    return 0


def parse_left_out(values: list[str]) -> dict[str, str]:
    """--leave-out 'dwi:motion artefact' … → {"dwi": "motion artefact"}; a bad entry is an InputError."""
    from ..errors import InputError

    out = {}
    for value in values:
        name, _, reason = value.partition(":")
        name = name.strip().lower()
        if name not in ("t1w", "t2w", "dwi"):
            raise InputError("--leave-out", f"must name t1w, t2w or dwi (as SEQUENCE:REASON), got {value!r}")
        out[name] = reason.strip() or "left out by the user"
    if len(out) == 3:
        raise InputError("--leave-out", "leaves out every sequence: at least one must stay")
    return out
