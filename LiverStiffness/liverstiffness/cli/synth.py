"""``liverstiffness synth``: a synthetic multi-site MRI cohort with MRE-like labels."""
from __future__ import annotations


def _sites(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def register(sub) -> None:
    s = sub.add_parser("synth", help="generate a synthetic multi-site MRI cohort with MRE-like labels",
                       description="Write N synthetic exams (T1w, T2w, 4-D DWI, liver mask as NIfTI) and DIR/manifest.csv.")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--n", type=int, required=True, help="number of exams")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same cohort)")
    s.add_argument("--sites", type=_sites, default=("A", "B", "C", "D"), help="site profiles, e.g. A,B,C,D (A–E available)")
    s.add_argument("--size", choices=("small", "normal"), default="small",
                   help="small: coarse grids for tests; normal: clinical grids")
    s.add_argument("--workers", type=int, default=1,
                   help="exams synthesised in parallel processes (the cohort is the same for any number)")
    s.add_argument("--format", choices=("nifti", "dicom"), default="nifti",
                   help="dicom: also write each exam as a DICOM study with vendor-like series and distractors "
                        "(<case>/dicom, manifest column 'study')")
    s.add_argument("--generator", choices=("default", "other"), default="default",
                   help="other: a second hospital (other anatomy split, protocols and marker strengths) that no recipe "
                        "is tuned on; report every recipe change on both (docs/phantom.md)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..phantom import generate_cohort

    manifest = generate_cohort(args.out, n=args.n, seed=args.seed, sites=args.sites, size=args.size,
                               progress=not args.quiet, workers=args.workers, generator=args.generator)
    if args.format == "dicom":  # each exam also as a multi-series DICOM study (manifest column "study")
        from ..dicom.synthetic_study import write_cohort_studies

        write_cohort_studies(manifest, progress=not args.quiet)
    return 0
