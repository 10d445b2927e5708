"""``liverstiffness pretrain``: self-supervised pretraining on exams without an MRE label."""
from __future__ import annotations

from .options import add_device_option


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain the transformer on exams without MRE (masked-patch reconstruction)",
        description="Learn the image encoder from exams that have no stiffness label (any stiffness_kpa in the "
                    "manifest is ignored): a share of each exam's patches is hidden and the network must give them "
                    "back, in every sequence, from the rest; a sequence dropped from the input must be given back "
                    "everywhere. Writes OUT/encoder.pt and OUT/pretrain.json; `liverstiffness train --init-from OUT` "
                    "then fine-tunes from it on labelled exams (the readout starts fresh). Same preprocessing, "
                    "augmentation and sequence dropout as train; scale out with `torchrun --nproc_per_node N -m "
                    "liverstiffness pretrain ...`.")
    p.add_argument("--manifest", required=True, help="manifest CSV of exams (each with a liver mask)")
    p.add_argument("--out", required=True, help="folder to write the pretrained encoder to")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (linear warm-up, then cosine decay)")
    p.add_argument("--mask-ratio", type=float, default=0.5, help="share of each exam's patches hidden (0–1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                   help="bfloat16 mixed precision (auto: on CUDA and on CPUs with bf16 units)")
    p.add_argument("--no-register", action="store_true", help="skip rigid registration of T2w/DWI to T1w")
    p.add_argument("--n4", action="store_true", help="N4 bias-field correction before normalisation")
    add_device_option(p)
    p.add_argument("--workers", type=int, default=0, help="preprocessing processes (default: one per core)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os

    from ..errors import InputError
    from ..stiffness.pretrain import META_FILE, PretrainConfig, pretrain

    if args.epochs < 1:
        raise InputError("--epochs", f"must be at least 1, got {args.epochs}")
    cfg = PretrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, mask_ratio=args.mask_ratio,
                         seed=args.seed, amp=args.amp, register=not args.no_register, n4=args.n4, device=args.device,
                         workers=args.workers)
    out = pretrain(args.manifest, args.out, cfg, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":       # under torchrun, rank 0 reports
        meta = json.loads((out / META_FILE).read_text())
        loss = meta["loss_per_epoch"]
        print(f"pretrained on {meta['trained_on']['n_exams']} exams into {out}: reconstruction loss "
              f"{loss[0]:.4f} → {loss[-1]:.4f} in {meta['training_time_s']} s")
    return 0
