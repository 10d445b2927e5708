"""``liverstiffness train``: K-fold cross-validated training into a model folder."""
from __future__ import annotations

from .options import add_device_option


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a K-fold transformer ensemble with site-aware cross-validation",
        description="Train on an MRE-labelled manifest: patient-grouped, site-balanced K-fold CV; the K fold models "
                    "form the ensemble written to --out with model.json, MODEL_CARD.md, out-of-fold predictions, "
                    "a calibrated interval and a ridge baseline. Scale out with `torchrun --nproc_per_node N -m "
                    "liverstiffness train ...`.")
    p.add_argument("--manifest", required=True, help="manifest CSV with stiffness_kpa for every row")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5; the study used 10)")
    p.add_argument("--epochs", type=int, default=40, help="maximum epochs per fold (early stopping may end sooner)")
    p.add_argument("--seed", type=int, default=0)
    # Defaults: the recipe the shipped demo model was trained with (stiffness.train.TrainConfig; a test holds them equal).
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3,
                   help="peak learning rate (linear warm-up, then cosine decay); for --init-from use about a third")
    p.add_argument("--patience", type=int, default=12, help="epochs without improvement before stopping a fold")
    p.add_argument("--min-epochs", type=int, default=30, help="no early stopping before this many epochs")
    p.add_argument("--init-from", metavar="MODEL_DIR",
                   help="fine-tune: start each fold from this model folder's weights (e.g. the shipped model), or "
                        "from a `liverstiffness pretrain` folder's encoder (the readout then starts fresh), and take "
                        "over its architecture, inputs and preprocessing")
    p.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                   help="bfloat16 mixed precision in training (auto: on CUDA and on CPUs with bf16 units)")
    p.add_argument("--coverage", type=float, default=0.9, help="nominal coverage of the prediction interval")
    p.add_argument("--no-register", action="store_true", help="skip rigid registration of T2w/DWI to T1w")
    p.add_argument("--n4", action="store_true", help="N4 bias-field correction before normalisation")
    add_device_option(p)
    p.add_argument("--workers", type=int, default=0, help="preprocessing processes (default: one per core)")
    p.add_argument("--dense-weight", type=float, default=1.0,
                   help="weight of the elastogram (stiffness map) loss beside the global one, for exams whose "
                        "manifest names an mre_map; 0 ignores the maps (default 1)")
    p.add_argument("--name", default="liverstiffness-transformer", help="model name written into model.json")
    p.add_argument("--synthetic", choices=("auto", "yes", "no"), default="auto",
                   help="mark the model as trained on synthetic data (auto: a truth.csv beside the manifest)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError
    from ..stiffness.train import TrainConfig, train_cv

    if args.epochs < 1:
        raise InputError("--epochs", f"must be at least 1, got {args.epochs}")
    if not args.dense_weight >= 0:
        raise InputError("--dense-weight", f"must be 0 or more, got {args.dense_weight}")
    if not 0.5 <= args.coverage < 1:
        raise InputError("--coverage", f"must be in [0.5, 1), got {args.coverage}")
    cfg = TrainConfig(folds=args.folds, epochs=args.epochs, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                      patience=args.patience, min_epochs=args.min_epochs, init_from=args.init_from, amp=args.amp,
                      coverage=args.coverage, register=not args.no_register, n4=args.n4,
                      device=args.device, workers=args.workers, name=args.name, dense_weight=args.dense_weight,
                      synthetic={"auto": None, "yes": True, "no": False}[args.synthetic])
    out = train_cv(args.manifest, args.out, cfg, progress=not args.quiet)
    import json
    import os

    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        meta = json.loads((out / "model.json").read_text())
        cv = meta["metrics"]["cross_validation"]
        print(f"trained {len(meta['folds'])} folds into {out}: out-of-fold r = {cv['transformer']['pearson_r']} "
              f"(baseline {cv['baseline']['pearson_r']}), MAE {cv['transformer']['mae_kpa']} kPa, "
              f"in {meta['metrics']['training_time_s']} s")
    return 0
