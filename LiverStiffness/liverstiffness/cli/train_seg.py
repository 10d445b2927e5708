"""``liverstiffness train-seg``: train the liver segmentation model (k folds over cases)."""
from __future__ import annotations

from pathlib import Path

from .options import add_device_option


def register(sub) -> None:
    from ..segmentation.config import SegInputSpec, SegNetConfig, SegTrainConfig  # the defaults live there, once

    p = sub.add_parser(
        "train-seg", help="train the automatic liver mask model on labelled T2w MRI",
        description="k-fold training over cases: every case is scored (Dice, HD95) by the fold network that never "
                    "saw it (by the mean of one per run with --runs), and the fold networks together form the model "
                    "folder OUT (seg_model.json, *.pt weights, MODEL_CARD.md, LICENSE-WEIGHTS.md, cv_cases.csv, "
                    "train_log.jsonl). Uses a CUDA GPU when present.")
    p.add_argument("--data", action="append", default=[],
                   help="folder of image_N / label_N pairs (NIfTI/NRRD/MHA); may be repeated")
    p.add_argument("--label", type=int, default=1, help="liver label value in the --data labels (default 1, as CHAOS)")
    p.add_argument("--manifest", action="append", default=[],
                   help="a cohort manifest (e.g. from `liverstiffness synth`): its T2w with the liver mask carried "
                        "onto it by registration; may be repeated")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--steps", type=int, default=SegTrainConfig.steps, help="optimiser steps per fold")
    p.add_argument("--batch-size", type=int, default=16, help="slices per step")
    p.add_argument("--patch", default="128,128", help="training patch in voxels y,x (multiples of 16)")
    p.add_argument("--spacing", default=None,
                   help="network grid x,y,z in mm (default {}: the shipped model's)".format(
                       ",".join(f"{v:g}" for v in SegInputSpec.spacing_mm)))
    p.add_argument("--width", type=int, default=16, help="UNet filters at the first level (doubling per level)")
    p.add_argument("--context", type=int, default=SegNetConfig.context,
                   help="neighbouring slices on each side given to the network with each slice (default %(default)s)")
    p.add_argument("--scale-aug", type=float, default=SegTrainConfig.scale_aug,
                   help="in-plane scaling augmentation: each axis scaled by up to 1 ± this (default %(default)s)")
    p.add_argument("--organ-intensity", type=float, default=SegTrainConfig.organ_intensity_prob,
                   help="probability per labelled organ of scaling its signal in training (0: off; default %(default)s)")
    p.add_argument("--organ-keep-bright", action="store_true",
                   help="with --organ-intensity, an organ's bright inner structures (vessels) keep their signal, as "
                        "in an iron-loaded liver (dark parenchyma, bright vessels)")
    p.add_argument("--aux-organs", action="store_true",
                   help="also learn the other labelled organs of the --data labels (kidneys, spleen) as extra outputs, "
                        "a training aid; the model still outputs the liver only")
    p.add_argument("--synthetic-share", type=float, default=None,
                   help="share of training samples drawn from the --manifest exams (default: their share of the cases)")
    p.add_argument("--lr", type=float, default=SegTrainConfig.lr,
                   help="peak learning rate (AdamW; 5 %% warm-up, then cosine to zero; default %(default)s)")
    p.add_argument("--swa", type=float, default=SegTrainConfig.swa, metavar="SHARE",
                   help="stochastic weight averaging: over the last SHARE of the steps the learning rate stays where "
                        "the schedule had it and the network is the average of its weights (0: off; default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=SegTrainConfig.weight_decay,
                   help="AdamW weight decay (default %(default)s)")
    p.add_argument("--dropout", type=float, default=SegNetConfig.dropout,
                   help="dropout after each convolution in training (0: off; default %(default)s)")
    p.add_argument("--batch-dice", action="store_true",
                   help="the Dice loss over the whole batch of slices instead of per slice")
    p.add_argument("--init-from", default=None, metavar="SEG_DIR",
                   help="start each fold network from a network of this model folder instead of random weights: one "
                        "that never trained on the fold's held-out cases (the same seed and cases continue each "
                        "network with its own folds); same architecture and grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=1,
                   help="independent k-fold runs, seeds SEED, SEED+1, ...; all their networks are the ensemble and "
                        "each case is scored by the runs' networks that never saw it (default %(default)s)")
    add_device_option(p)
    p.add_argument("--workers", type=int, default=1, help="folds trained at a time, each in its own process")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per fold (default: cores / workers)")
    p.set_defaults(func=run)


def training_config(args):
    """The SegTrainConfig of the parsed command line, its settings checked (InputError names the flag);
    the data and --init-from are checked by ``run``."""
    from ..errors import InputError
    from ..segmentation.config import SegInputSpec, SegNetConfig, SegTrainConfig

    try:
        patch = tuple(int(v) for v in args.patch.split(","))
    except ValueError:
        raise InputError("--patch", f"{args.patch!r} is not two integers y,x") from None
    if len(patch) != 2 or any(v < 16 or v % 16 for v in patch):
        raise InputError("--patch", f"needs two multiples of 16 (y,x), got {args.patch!r}")
    if args.context < 0 or not 0 <= args.organ_intensity <= 1:
        raise InputError("--context/--organ-intensity", "context must be 0 or more, organ-intensity within 0–1")
    if args.synthetic_share is not None and not 0 <= args.synthetic_share <= 1:
        raise InputError("--synthetic-share", f"must be within 0–1, got {args.synthetic_share}")
    spacing = SegInputSpec.spacing_mm
    if args.spacing is not None:
        try:
            spacing = tuple(float(v) for v in args.spacing.split(","))
        except ValueError:
            raise InputError("--spacing", f"{args.spacing!r} is not three numbers x,y,z (mm)") from None
        if len(spacing) != 3 or not all(0.5 <= v <= 20 for v in spacing):
            raise InputError("--spacing", f"needs three spacings x,y,z within 0.5–20 mm, got {args.spacing!r}")
    if args.width < 4:
        raise InputError("--width", f"must be at least 4, got {args.width}")
    if args.folds < 2:
        raise InputError("--folds", f"must be at least 2, got {args.folds}")
    if args.steps < 1 or args.workers < 1 or args.runs < 1:
        raise InputError("--steps/--workers/--runs", "must be at least 1")
    if not 0 <= args.scale_aug < 0.9:
        raise InputError("--scale-aug", f"must be at least 0 and below 0.9, got {args.scale_aug}")
    if not 0 <= args.swa < 1:
        raise InputError("--swa", f"must be at least 0 and below 1, got {args.swa}")
    if not 0 < args.lr <= 1:
        raise InputError("--lr", f"must be within (0, 1], got {args.lr}")
    if not 0 <= args.weight_decay < 1:
        raise InputError("--weight-decay", f"must be at least 0 and below 1, got {args.weight_decay}")
    if not 0 <= args.dropout < 1:
        raise InputError("--dropout", f"must be at least 0 and below 1, got {args.dropout}")
    net = SegNetConfig(channels=tuple(args.width * 2 ** i for i in range(5)), context=args.context,
                       dropout=args.dropout)
    return SegTrainConfig(folds=args.folds, runs=args.runs, steps=args.steps, batch_size=args.batch_size, patch_yx=patch,
                          seed=args.seed, net=net, threads=args.threads, organ_intensity_prob=args.organ_intensity,
                          organ_intensity_keep_bright=args.organ_keep_bright,
                          synthetic_share=args.synthetic_share, spec=SegInputSpec(spacing_mm=spacing), lr=args.lr,
                          scale_aug=args.scale_aug, init_from=args.init_from, swa=args.swa, batch_dice=args.batch_dice,
                          weight_decay=args.weight_decay)


def run(args) -> int:
    from dataclasses import replace

    from ..errors import InputError
    from ..segmentation.data import load_manifest, load_pairs
    from ..segmentation.metrics import mm_text
    from ..segmentation.model_card import write_model_card
    from ..segmentation.train import train_segmentation

    if not args.data and not args.manifest:
        raise InputError("train-seg", "give at least one --data folder or --manifest")
    cfg = training_config(args)
    if args.init_from is not None:
        from ..segmentation.model_folder import read_meta
        read_meta(args.init_from)        # a one-line error now, not after the data are loaded
    cases, trained_on = [], {}
    for folder in args.data:
        found = load_pairs(folder, args.label, cfg.spec)
        cases += found
        trained_on[f"real cases from {Path(folder).name}"] = len(found)
    for manifest in args.manifest:
        found = load_manifest(manifest, cfg.spec)
        cases += found
        trained_on[f"synthetic exams (liverstiffness synth) from {Path(manifest).parent.name}"] = len(found)
    if sum(c.source == "real" for c in cases) < args.folds:
        raise InputError("train-seg", f"{args.folds} folds need at least {args.folds} labelled real cases")
    if args.aux_organs:
        counts = {c.case_id: len(c.other_organs) for c in cases if c.source == "real"}
        if len(set(counts.values())) != 1 or not min(counts.values()):
            raise InputError("--aux-organs", "needs the same number (≥ 1) of labelled organs besides the liver in "
                                             f"every --data label; found {counts}")
        cfg = replace(cfg, net=replace(cfg.net, aux_organs=min(counts.values())))
    runs = f"{args.runs} runs × " if args.runs > 1 else ""
    print(f"{len(cases)} case(s); {runs}{args.folds} folds × {args.steps} steps on {args.device}")
    meta = train_segmentation(cases, args.out, cfg, args.device, args.workers, trained_on)
    write_model_card(Path(args.out), meta)
    for source, m in meta.metrics["held_out"].items():
        print(f"held out ({source}, n = {m['n']}): Dice {m['dice']['mean']:.3f} ± {m['dice']['sd']:.3f} "
              f"(min {m['dice']['min']:.3f}), HD95 {mm_text(m['hd95_mm']['mean'])} mm")
    print(f"model folder → {args.out}")
    return 0
