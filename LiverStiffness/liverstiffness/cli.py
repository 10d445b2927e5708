"""The ``liverstiffness`` command line: synth, train, evaluate, predict, qa.

Bad input ends with one line ``error: <input>: <problem>`` on stderr and exit code 2, before
anything is written. Heavy imports (torch, MONAI) happen inside the subcommands that need them,
so ``--help`` and ``synth`` start fast.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .errors import EXIT_BAD_INPUT, InputError


def _sites(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def cmd_synth(args) -> int:
    from .phantom import generate_cohort

    manifest = generate_cohort(args.out, n=args.n, seed=args.seed, sites=args.sites, size=args.size,
                               progress=not args.quiet, workers=args.workers)
    if args.format == "dicom":  # each exam also as a multi-series DICOM study (manifest column "study")
        from .dicom.synthetic_study import write_cohort_studies

        write_cohort_studies(manifest, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="liverstiffness",
        description="Estimate liver shear stiffness (kPa, as MR elastography measures it) from T1w, T2w and "
                    "DWI MRI with a liver mask; train and validate such models; QA liver masks.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks for unexpected errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_synth)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


# Subcommand modules append a ``register(subparsers)`` function here (see train/predict/qa).
_EXTRA_COMMANDS: list = []


def _load_extra_commands() -> None:
    from . import commands  # noqa: F401 - registers train, evaluate, predict, qa


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the way out cleans up."""


def _terminate(signum, frame):
    """SIGTERM (a scheduler, the Slicer panel's Cancel) ends the run like Ctrl-C: staging folders
    and temporary files are removed on the way out, then the process ends by the same signal, as
    the sender expects. (SIGKILL cannot be caught; a batch started again cleans up after it.)"""
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    _load_extra_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    else:
        previous = None
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)     # always one line
        return EXIT_BAD_INPUT
    except _Terminated:
        print("terminated", file=sys.stderr)
        sys.stderr.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)      # cleaned up: now end as the signal asked
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: ran out of memory; give the process more memory or resample the largest image to a coarser grid",
              file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for the user; --debug for developers
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (run with --debug for details)",
              file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
