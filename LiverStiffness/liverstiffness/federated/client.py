"""The site's training script, run by FLARE's Client API (``ScriptRunner`` in ``job``).

Why a script: FLARE runs it inside each site's FLARE client; it only moves things between FLARE
and ``site``: ``flare.init()``, then per task ``flare.receive()`` → the site's work →
``flare.send(FLModel(...))``. The recipe arrives with every task (the server's FLModel meta);
the command line gives only what is local to the site: its manifest, a work folder for the
preprocessing cache and its training log, preprocessing workers and the device.

Tasks: ``train`` (a FedAvg round), ``validate`` (the final global model's validation error and
the ridge's sums), ``report`` (the chosen model on the held-out exams). What each sends is
built in ``messages``.
"""
from __future__ import annotations

import argparse
import os


def parse(argv=None):
    p = argparse.ArgumentParser(prog="liverstiffness-federated-site")
    p.add_argument("--manifest", default=os.environ.get("LIVERSTIFFNESS_FEDERATED_MANIFEST"),
                   help="this site's manifest (default: $LIVERSTIFFNESS_FEDERATED_MANIFEST)")
    p.add_argument("--work", default=os.environ.get("LIVERSTIFFNESS_FEDERATED_WORK", "liverstiffness_site"),
                   help="site-local folder for the preprocessing cache and the training log")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    # Fault injection for the tests: this site's script fails in that training round.
    p.add_argument("--fail-in-round", type=int, default=-1, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    import nvflare.client as flare

    # Absolute imports: FLARE runs this file as a script, outside the package.
    from liverstiffness.errors import InputError
    from liverstiffness.federated import messages
    from liverstiffness.federated.settings import META_KEY, RIDGE_KEY, Recipe
    from liverstiffness.federated.site import load_site, report_message, train_message, validate_message

    args = parse(argv)
    if not args.manifest:
        raise InputError("--manifest", "this site's manifest is needed (or $LIVERSTIFFNESS_FEDERATED_MANIFEST)")
    flare.init()
    name = flare.get_site_name()
    site = None
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        task = flare.get_task_name()
        recipe = Recipe.from_dict(model.meta[META_KEY])
        if site is None:
            site = load_site(name, args.manifest, recipe, os.path.join(args.work, name), workers=args.workers,
                             device=args.device)
        if task == messages.TRAIN:
            if model.current_round == args.fail_in_round:
                raise RuntimeError(f"site {name}: failure injected in round {model.current_round}")
            params, metrics, meta = train_message(site, model.params, model.current_round, recipe)
            flare.send(flare.FLModel(params=params, metrics=metrics, meta=meta))
        elif task == messages.VALIDATE:
            flare.send(flare.FLModel(params={}, metrics=validate_message(site, model.params, recipe)))
        elif task == messages.REPORT:
            baseline = model.meta.get(RIDGE_KEY) or None
            flare.send(flare.FLModel(params={}, metrics=report_message(site, model.params, baseline, recipe)))
        else:
            raise RuntimeError(f"site {name}: unknown task {task!r}")


if __name__ == "__main__":
    main()
