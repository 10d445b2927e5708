"""Single runs of the liver-mask recipe, trained one after the other, put together as one ``--runs`` folder.

    .venv/bin/python -m experiments.seg_join_runs OUT RUN0 RUN1 ... --chaos DIR [--synthetic-manifest CSV ...]
    (from the repository root, as a module: it imports ``bench/seg_bench.py``)

RUNr is ``train-seg --runs 1 --seed s+r`` with otherwise the same flags; OUT is then the folder that
``--runs N --seed s`` writes (``train.join_runs``: the same networks, records and logs, every case
scored by all its held-out networks together; a test shows the two equal), with its model card.
The shipped folder was made so from runs U and U1 (bench/RESULTS.md): each run was measured
against its twin before the pair was put together. Give the synthetic manifests the runs were
trained with, in the same order (their exams are scored too).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.seg_bench import held_out_cases  # the cases train-seg and seg_bench.py score
from liverstiffness.errors import InputError
from liverstiffness.segmentation.metrics import mm_text
from liverstiffness.segmentation.model_card import write_model_card
from liverstiffness.segmentation.model_folder import read_meta
from liverstiffness.segmentation.train import join_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the folder to write (new or empty)")
    ap.add_argument("runs", nargs="+", type=Path, help="the single runs, in the order of their seeds")
    ap.add_argument("--chaos", type=Path, required=True,
                    help="folder of the 15 CHAOS T2-SPIR cases (image_N.nii.gz / label_N.nii.gz)")
    ap.add_argument("--synthetic-manifest", action="append", default=[],
                    help="a manifest of synthetic exams the runs were trained with; may be repeated")
    args = ap.parse_args()
    try:
        cases = held_out_cases(args.chaos, args.synthetic_manifest, read_meta(args.runs[0]).spec)
        meta = join_runs(args.runs, args.out, cases)
    except (InputError, ValueError, OSError) as exc:      # not run folders, or not runs of one recipe
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    write_model_card(args.out, meta)
    for source, m in meta.metrics["held_out"].items():
        print(f"held out ({source}, n = {m['n']}): Dice {m['dice']['mean']:.4f} ± {m['dice']['sd']:.4f} "
              f"(min {m['dice']['min']:.4f}), HD95 {mm_text(m['hd95_mm']['mean'])} mm")
    print(f"model folder → {args.out}")


if __name__ == "__main__":
    main()
