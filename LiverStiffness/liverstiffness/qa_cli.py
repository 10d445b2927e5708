"""``liverstiffness qa``: liver-mask QA for one exam or a manifest."""
from __future__ import annotations

import json
from pathlib import Path

QA_COLUMNS = ("case_id", "status", "flags", "volume_ml", "n_components", "hole_volume_ml", "max_offset_mm",
              "leak_volume_ml", "messages", "error")


def register(sub) -> None:
    p = sub.add_parser(
        "qa", help="check liver masks: volume, pieces, holes, truncation, misregistration, leaks",
        description="One exam: writes OUT/qa.json with the measurements and flags (code, message, severity, the "
                    "threshold crossed, slices/positions). A manifest: OUT/qa.csv with a row per case and "
                    "OUT/<case_id>/qa.json. Thresholds: see --thresholds.")
    p.add_argument("--mask", help="liver mask labelmap, or 'auto' (segmented on the --t2w; in a manifest: an empty cell)")
    p.add_argument("--mask-label", type=int, help="label value of the liver (default: any non-zero)")
    p.add_argument("--t1w", help="T1-weighted image (the mask's reference)")
    p.add_argument("--t2w", help="T2-weighted image (optional; default: T1w only)")
    p.add_argument("--dwi", help="DWI (optional)")
    p.add_argument("--dwi-b", help="b-value(s) of the DWI in s/mm²")
    p.add_argument("--manifest", help="QA every row of a manifest instead")
    p.add_argument("--thresholds", help="JSON file overriding any QAThresholds value, e.g. {\"max_shift_mm\": 10}")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true")
    from .segment_cli import add_segmenter_options
    add_segmenter_options(p)
    from .dicom.study_run import add_study_options
    add_study_options(p, outputs=False)
    p.set_defaults(func=run)


def _exam(t1w, t2w, dwi, dwi_b, mask, mask_label, segmenter=None):
    """The exam to check; ``mask`` None or 'auto': made by ``segmenter()`` on the T2w (returned
    info says how, else None)."""
    from .errors import InputError
    from .imageio import read_dwi, read_mask, read_volume
    from .preprocess import ExamImages

    t1 = read_volume(t1w, "t1w")
    t2 = read_volume(t2w, "t2w") if t2w else t1
    d = read_dwi(dwi, dwi_b, "dwi", fit_adc=False) if dwi else None
    if d is None:
        from .imageio import DwiData
        d = DwiData([t2], (0.0,), None)
    paths = {"t1w": str(t1w), "t2w": str(t2w or t1w), "dwi": str(dwi or t2w or t1w), "mask": str(mask)}
    if mask is None or str(mask) == "auto":
        if not t2w:
            raise InputError("--mask auto", "needs --t2w (the liver model segments T2-weighted images)")
        from .segmentation.auto_mask import auto_mask
        return auto_mask(t1, t2, d, paths, segmenter(), register=t2 is not t1)
    exam = ExamImages(t1, t2, d, read_mask(mask, mask_label, "mask", allow_empty=True), paths)
    return exam, None


def _study_exam(study, mask, mask_label, segmenter, args=None, quiet=True):
    """A DICOM study's exam for QA (series by the rules) and the qa.json entries saying how."""
    from .dicom.study_run import overrides, select, study_exam

    roles = overrides(args) if args is not None else None
    selection = select(study, getattr(args, "rules", None), roles, mask, getattr(args, "mask_series", None),
                       getattr(args, "study_uid", None), quiet, auto_without_seg=args is None)
    exam, auto, _, _ = study_exam(selection, mask, mask_label, segmenter, fit_adc=False)
    return exam, auto, {"study": selection.report()}


def _qa_one(exam, thresholds):
    from .qa import run_qa

    return run_qa(exam, thresholds, register=exam.t2w is not exam.t1w)


def _qa_json(res, auto: dict | None, extra: dict | None = None) -> dict:
    """qa.json: the QA result, and how the mask was made when it was automatic."""
    return {**res.to_dict(), "mask": auto or {"source": "given"}, **(extra or {})}


def _row(case_id, res) -> dict:
    meas = res.measurements
    return {"case_id": case_id, "status": "ok", "flags": ";".join(f.code for f in res.flags),
            "volume_ml": meas.get("volume_ml", ""), "n_components": meas.get("n_components", ""),
            "hole_volume_ml": meas.get("hole_volume_ml", ""),
            "max_offset_mm": max((v["offset_mm"] for v in meas.get("edge_alignment", {}).values()), default=""),
            "leak_volume_ml": round(sum(meas.get("leak_volume_ml", {}).values()), 1),
            "messages": " | ".join(f"{f.code}: {f.message}" for f in res.flags), "error": ""}


def run(args) -> int:
    from tqdm import tqdm

    from .batch_lock import BatchLock
    from .errors import InputError
    from .manifest import parse_b_values, read_manifest
    from .outputs import (
        OutputError,
        atomic_write_csv,
        atomic_write_text,
        case_folder,
        writing,
    )
    from .qa import QAThresholds

    th = QAThresholds.from_json(args.thresholds) if args.thresholds else QAThresholds()
    out = Path(args.out)

    def segmenter():
        from .segmentation.auto_mask import get_segmenter
        return get_segmenter(args.segmenter, args.seg_model)

    if args.manifest:
        if args.mask or args.t1w:
            raise InputError("qa", "give either --manifest or --mask/--t1w, not both")
        records = read_manifest(args.manifest, check_files=False)
        rows = []
        with writing(f"--out {out}"), BatchLock(out):
            for rec in tqdm(records, desc="qa", unit="exam", disable=args.quiet):
                try:
                    extra = None
                    if rec.study is not None:
                        exam, auto, extra = _study_exam(rec.study, rec.mask, None, segmenter)
                    else:
                        exam, auto = _exam(rec.t1w, rec.t2w, rec.dwi, rec.dwi_b, rec.mask, rec.mask_label, segmenter)
                    res = _qa_one(exam, th)
                    folder = case_folder(out, rec.case_id)
                    folder.mkdir(exist_ok=True)
                    atomic_write_text(folder / "qa.json", json.dumps(_qa_json(res, auto, extra), indent=2))
                    rows.append(_row(rec.case_id, res))
                except OutputError:
                    raise
                except InputError as exc:
                    rows.append({"case_id": rec.case_id, "status": "error", "error": str(exc)})
            atomic_write_csv(out / "qa.csv", QA_COLUMNS, rows)
        flagged = sum(1 for r in rows if r.get("flags"))
        print(f"QA of {len(rows)} exam(s): {flagged} flagged, "
              f"{sum(r['status'] != 'ok' for r in rows)} unreadable → {out / 'qa.csv'}")
        return 0
    from .dicom.study_run import check_study_args
    check_study_args(args)
    extra = None
    if args.study:
        exam, auto, extra = _study_exam(args.study, args.mask, args.mask_label, segmenter, args, quiet=args.quiet)
    else:
        if not (args.mask and args.t1w):
            raise InputError("qa", "needs --mask and --t1w (or --manifest, or --study)")
        dwi_b = parse_b_values(args.dwi_b, "--dwi-b") if args.dwi_b else None
        if args.dwi and dwi_b is None and not Path(args.dwi).is_dir():
            raise InputError("--dwi-b", "is needed with a NIfTI/NRRD DWI")
        exam, auto = _exam(args.t1w, args.t2w, args.dwi, dwi_b, args.mask, args.mask_label, segmenter)
    res = _qa_one(exam, th)
    with writing(f"--out {out}"):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "qa.json", json.dumps(_qa_json(res, auto, extra), indent=2))
        if auto is not None:
            import SimpleITK as sitk
            sitk.WriteImage(exam.mask, str(out / "mask_auto.nii.gz"), useCompression=True)
    if auto is not None:
        print(f"automatic mask ({auto['segmenter']}): {auto['volume_on_t1w_ml']:.0f} mL → {out / 'mask_auto.nii.gz'}")
    if res.flags:
        for f in res.flags:
            where = f" (slices {f.slices[0]}–{f.slices[-1]})" if f.slices else ""
            print(f"{f.severity.upper()} {f.code}: {f.message}{where}")
    else:
        print(f"mask OK: {res.measurements['volume_ml']:.0f} mL, one piece, no flag")
    return 0
