"""``liverstiffness qa``: liver-mask QA for one exam or a manifest."""
from __future__ import annotations

import json
from pathlib import Path

from .options import add_segmenter_options, add_study_options, check_study_args, study_request


def register(sub) -> None:
    p = sub.add_parser(
        "qa", help="check liver masks: volume, pieces, holes, truncation, misregistration, leaks",
        description="One exam: writes OUT/qa.json with the measurements and flags (code, message, severity, the "
                    "threshold crossed, slices/positions). A manifest: OUT/qa.csv with a row per case and "
                    "OUT/<case_id>/qa.json. Thresholds: see --thresholds.")
    p.add_argument("--mask", help="liver mask labelmap, or 'auto' (segmented on the --t2w; in a manifest: an empty cell)")
    p.add_argument("--mask-label", type=int, help="label value of the liver (default: any non-zero)")
    p.add_argument("--t1w", help="T1-weighted image (the mask's reference when given). Any non-empty subset of "
                                 "--t1w, --t2w and --dwi; the first given is the reference")
    p.add_argument("--t2w", help="T2-weighted image")
    p.add_argument("--dwi", help="DWI (optional)")
    p.add_argument("--dwi-b", help="b-value(s) of the DWI in s/mm²")
    p.add_argument("--manifest", help="QA every row of a manifest instead")
    p.add_argument("--thresholds", help="JSON file overriding any QAThresholds value, e.g. {\"max_shift_mm\": 10}")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true")
    add_segmenter_options(p)
    add_study_options(p, outputs=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError
    from ..manifest import ExamRecord, parse_b_values
    from ..outputs import atomic_write_text, writing
    from ..qa import QAThresholds
    from ..qa_exam import qa_json, read_qa_exam, read_qa_study, run_exam_qa

    th = QAThresholds.from_json(args.thresholds) if args.thresholds else QAThresholds()
    out = Path(args.out)

    def segmenter():
        from ..segmentation.auto_mask import get_segmenter
        return get_segmenter(args.segmenter, args.seg_model)

    if args.manifest:
        if args.mask or args.t1w or args.t2w or args.dwi:
            raise InputError("qa", "give either --manifest or --mask and the images, not both")
        from ..batch import qa_manifest
        rows = qa_manifest(args.manifest, out, th, segmenter, progress=not args.quiet)
        flagged = sum(1 for r in rows if r.get("flags"))
        print(f"QA of {len(rows)} exam(s): {flagged} flagged, "
              f"{sum(r['status'] != 'ok' for r in rows)} unreadable → {out / 'qa.csv'}")
        return 0
    check_study_args(args)
    extra = None
    if args.study:
        exam, auto, extra = read_qa_study(study_request(args), segmenter, quiet=args.quiet)
    else:
        if not (args.mask and (args.t1w or args.t2w or args.dwi)):
            raise InputError("qa", "needs --mask and at least one of --t1w, --t2w and --dwi (or --manifest, or --study)")
        dwi_b = parse_b_values(args.dwi_b, "--dwi-b") if args.dwi_b else None
        if args.dwi and dwi_b is None and not Path(args.dwi).is_dir():
            raise InputError("--dwi-b", "is needed with a NIfTI/NRRD DWI")
        exam, auto = read_qa_exam(ExamRecord(case_id=out.name, patient_id="", t1w=args.t1w, t2w=args.t2w, dwi=args.dwi,
                                             mask=args.mask, dwi_b=dwi_b, mask_label=args.mask_label), segmenter)
    res = run_exam_qa(exam, th)
    with writing(f"--out {out}"):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "qa.json", json.dumps(qa_json(res, auto, extra), indent=2))
        if auto is not None:
            import SimpleITK as sitk
            sitk.WriteImage(exam.mask, str(out / "mask_auto.nii.gz"), useCompression=True)
    if auto is not None:
        print(f"automatic mask ({auto['segmenter']}): {auto['volume_on_reference_ml']:.0f} mL → {out / 'mask_auto.nii.gz'}")
    if res.flags:
        for f in res.flags:
            where = f" (slices {f.slices[0]}–{f.slices[-1]})" if f.slices else ""
            print(f"{f.severity.upper()} {f.code}: {f.message}{where}")
    else:
        print(f"mask OK: {res.measurements['volume_ml']:.0f} mL, one piece, no flag")
    return 0
