"""The ``liverstiffness`` command line: the command table and the one way errors end a run.

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

from ..errors import EXIT_BAD_INPUT, InputError
from . import compare, evaluate, export_bundle, federated, predict, pretrain, qa, segment, serve, synth, train, train_seg

# The commands, in the order `--help` lists them. Each module has ``register(subparsers)``, which
# adds its parser, and ``run(args)``; heavy imports (torch, MONAI) wait inside ``run``, so
# ``--help`` and ``synth`` start fast.
COMMANDS = (synth, pretrain, train, federated, evaluate, predict, compare, qa, segment, train_seg, export_bundle, serve)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="liverstiffness",
        description="Estimate liver shear stiffness (kPa, as MR elastography measures it) from T1w, T2w and "
                    "DWI MRI with a liver mask; train and validate such models; QA liver masks.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks for unexpected errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the way out cleans up."""


def _terminate(signum, frame):
    """SIGTERM (a scheduler, the Slicer panel's Cancel) ends the run like Ctrl-C: staging folders
    and temporary files are removed on the way out, then the process ends by the same signal, as
    the sender expects. (SIGKILL cannot be caught; a batch started again cleans up after it.)"""
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
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
