"""Option groups more than one command shares: the device, the liver segmenter, and the DICOM
study selection. Written once here so that every command spells them alike."""
from __future__ import annotations

from ..devices import DEVICE_HELP, DEVICES
from ..errors import InputError

ROLE_OPTIONS = ("t1w_series", "t2w_series", "dwi_series")


def add_device_option(p, help: str = DEVICE_HELP) -> None:
    p.add_argument("--device", default="auto", choices=DEVICES, help=help)


def add_segmenter_options(p, auto_help: bool = True) -> None:
    """--segmenter/--seg-model, shared by segment, predict and qa."""
    p.add_argument("--segmenter", default="model", choices=("model", "totalsegmentator"),
                   help="model: the liver model (default: the shipped one trained on CHAOS T2-SPIR); "
                        "totalsegmentator: TotalSegmentator's total_mr liver, when it is installed"
                   + ("; used with --mask auto" if auto_help else ""))
    p.add_argument("--seg-model", help="segmentation model folder (default: the shipped liver model)")


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


def study_request(args):
    """The DICOM study the options name, as the workflow's :class:`~..dicom.study_run.StudyRequest`."""
    from ..dicom.study_run import StudyRequest

    return StudyRequest(study=args.study, rules=args.rules, mask=args.mask,
                        mask_label=args.mask_label, mask_series=args.mask_series, study_uid=args.study_uid,
                        roles={role.split("_")[0]: getattr(args, role, None) for role in ROLE_OPTIONS})


def stage_printer(args):
    """``--stages``: print 'STAGE <name>' as each stage starts (the Slicer panel and the web page read it)."""
    return (lambda name: print(f"STAGE {name}", flush=True)) if getattr(args, "stages", False) else None
