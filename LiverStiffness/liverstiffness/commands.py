"""Registers the subcommands that need torch (train, evaluate, predict) and mask QA.

Each module keeps its own ``add_parser`` so the options sit beside the code that uses them.
"""
from . import cli

_MODULES = ("train_cli", "evaluate_cli", "predict_cli", "qa_cli")


def _register_all() -> None:
    import importlib

    for name in _MODULES:
        try:
            mod = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(name):
                continue  # not built yet in this checkout
            raise
        cli._EXTRA_COMMANDS.append(mod.register)


_register_all()
