"""``liverstiffness federated``: federated training on NVIDIA FLARE (FedAvg) into a model folder.

Each ``--site NAME=MANIFEST`` is one hospital; FLARE's simulator runs them on this machine (one
FLARE client per site). ``--export-job DIR`` writes the same job for a provisioned FLARE system
instead (docs/federated.md). Run again with the same arguments to resume after the last
completed round.
"""
from __future__ import annotations

import argparse

from .options import add_device_option


def register(sub) -> None:
    p = sub.add_parser(
        "federated", help="federated training on NVIDIA FLARE: each site trains on its own exams (FedAvg)",
        description="Train one model across sites without moving images: each --site trains the transformer on its "
                    "own manifest (the train recipe: augmentation, sequence dropout, a patient-grouped early-stopping "
                    "split and a held-out part), the server averages weights (NVIDIA FLARE FedAvg) and picks the round "
                    "by pooled validation error; --out gets an ordinary model folder with a split-conformal interval "
                    "from the sites' held-out residuals. Runs in FLARE's simulator; --export-job writes the job for "
                    "real sites. Needs `pip install nvflare==2.9.0`.")
    p.add_argument("--site", action="append", required=True, metavar="NAME=MANIFEST",
                   help="a site and its manifest (repeat; at least two)")
    p.add_argument("--rounds", type=int, required=True, help="FedAvg rounds")
    p.add_argument("--local-epochs", type=int, required=True, help="epochs each site trains per round")
    p.add_argument("--out", required=True, help="model folder to write (the run's work folder is OUT.federated beside it)")
    p.add_argument("--min-clients", type=int,
                   help="sites a round needs; a site that fails is left out while at least this many answer "
                        "(default: every site)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (decays over the rounds)")
    p.add_argument("--held-out", type=float, default=0.2,
                   help="share of each site's patients held out for the interval and the metrics (default 0.2)")
    p.add_argument("--coverage", type=float, default=0.9, help="nominal coverage of the prediction interval")
    p.add_argument("--amp", choices=("auto", "on", "off"), default="auto", help="bfloat16 mixed precision in training")
    p.add_argument("--no-register", action="store_true", help="skip rigid registration of T2w/DWI to T1w")
    p.add_argument("--n4", action="store_true", help="N4 bias-field correction before normalisation")
    p.add_argument("--dense-weight", type=float, default=1.0,
                   help="weight of the elastogram loss for exams whose manifest names an mre_map (0 ignores maps)")
    add_device_option(p)
    p.add_argument("--workers", type=int, default=1, help="preprocessing processes per site")
    p.add_argument("--name", default="liverstiffness-federated", help="model name written into model.json")
    p.add_argument("--synthetic", choices=("auto", "yes", "no"), default="auto",
                   help="mark the model as trained on synthetic data (auto: a truth.csv beside every manifest)")
    p.add_argument("--export-job", metavar="DIR",
                   help="write the FLARE job for a provisioned system into DIR instead of simulating (manifest paths "
                        "are then the sites' own and are not read here)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from ..errors import InputError
    from ..federated.job import FederatedRun, check_settings, export_job, parse_sites, prepare, require_nvflare, simulate
    from ..federated.settings import Recipe
    from ..preprocess import InputSpec
    from ..stiffness.network import ModelConfig

    require_nvflare()
    if not 0 < args.held_out < 0.5:
        raise InputError("--held-out", f"must be in (0, 0.5), got {args.held_out}")
    if not args.dense_weight >= 0:
        raise InputError("--dense-weight", f"must be 0 or more, got {args.dense_weight}")
    if args.batch_size < 1:
        raise InputError("--batch-size", f"must be at least 1, got {args.batch_size}")
    recipe = Recipe(rounds=args.rounds, local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr,
                    held_out_fraction=args.held_out, seed=args.seed, coverage=args.coverage, register=not args.no_register,
                    n4=args.n4, amp=args.amp, dense_weight=args.dense_weight, model=ModelConfig().to_dict(),
                    spec=InputSpec().to_dict())
    fed = FederatedRun(sites=parse_sites(args.site), out=Path(args.out), recipe=recipe, min_clients=args.min_clients,
                       name=args.name, synthetic={"auto": None, "yes": True, "no": False}[args.synthetic],
                       workers=args.workers, device=args.device, quiet=args.quiet)
    if args.export_job:
        from dataclasses import replace

        model = dict(recipe.model, map_decoder=args.dense_weight > 0)   # sites without elastograms leave it idle
        fed = replace(fed, recipe=replace(recipe, model=model), min_clients=check_settings(fed),
                      synthetic=args.synthetic == "yes")
        job_dir = export_job(fed, args.export_job)
        print(f"FLARE job written to {job_dir}: submit it from the admin console (nvflare job submit -j {job_dir})")
        return 0
    fed = prepare(fed)
    if not args.quiet:
        print(f"federated training: {len(fed.sites)} sites, {recipe.rounds} rounds × {recipe.local_epochs} local "
              f"epoch(s), at least {fed.min_clients} site(s) per round; work folder {fed.work_dir}", flush=True)
    out = simulate(fed)
    meta = json.loads((out / "model.json").read_text())
    t = meta["metrics"]["cross_validation"]["transformer"]
    fedinfo = meta["metrics"]["federated"]
    print(f"federated model in {out}: round {fedinfo['best_round']} of {fedinfo['rounds']} chosen; held-out exams "
          f"(all sites) n = {t['n']}, r = {t['pearson_r']}, MAE {t['mae_kpa']} kPa; sites reporting: "
          f"{', '.join(fedinfo['sites_reported'])}")
    return 0


def main(argv=None) -> int:
    """This command alone (``python -m liverstiffness.cli.federated``), with ``main``'s error handling."""
    import sys

    from ..errors import EXIT_BAD_INPUT, InputError

    parser = argparse.ArgumentParser(prog="liverstiffness")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["federated", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
