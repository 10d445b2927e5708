"""``liverstiffness compare``: the change between two exams of one patient, against repeatability."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="follow-up: the change between two reports, and whether it exceeds repeatability",
        description="Compare two reports of one patient (report.json files or result folders, earlier exam first): "
                    "the change in kPa and percent, and whether it exceeds the repeatability of MR elastography "
                    "(RC about 19–22 %) and of the model itself. Reports from different models or cut-off tables "
                    "are refused unless you allow it, and the result then says so.")
    p.add_argument("before", metavar="BEFORE", help="the earlier exam's report.json (or its result folder)")
    p.add_argument("after", metavar="AFTER", help="the later exam's report.json (or its result folder)")
    p.add_argument("--out", help="also write the comparison as JSON here")
    p.add_argument("--allow-different-models", action="store_true",
                   help="compare estimates of two different models (the result warns)")
    p.add_argument("--allow-different-cutoffs", action="store_true",
                   help="compare reports that used different category cut-off tables (the result warns)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from ..errors import InputError
    from ..followup import ALLOW_OPTION, ComparisonRefused, compare
    from ..outputs import atomic_write_text, writing
    from ..report import Report

    try:
        result = compare(Report.read(args.before), Report.read(args.after), args.allow_different_models,
                         args.allow_different_cutoffs)
    except ComparisonRefused as exc:
        raise InputError(exc.what, f"{exc.problem} ({ALLOW_OPTION[exc.differs]} to compare anyway)") from None
    if args.out:
        with writing(f"--out {args.out}"):
            atomic_write_text(Path(args.out), json.dumps(result.to_dict(), indent=2))
    print(result.summary_line())
    for w in result.warnings:
        print(f"warning: {w}")
    return 0
