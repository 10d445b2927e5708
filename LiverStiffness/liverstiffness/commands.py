"""Registers the subcommands beyond ``synth``: train, evaluate, predict, qa, segment, train-seg and serve.

Each lives in its own ``*_cli`` module with its options beside the code that uses them; those
modules import torch only inside ``run``, so ``--help`` stays fast.
"""
from . import (
                                                      cli,
                                                      evaluate_cli,
                                                      predict_cli,
                                                      qa_cli,
                                                      segment_cli,
                                                      serve_cli,
                                                      train_cli,
                                                      train_seg_cli,
)

cli._EXTRA_COMMANDS.extend(m.register for m in (train_cli, evaluate_cli, predict_cli, qa_cli,
                                                      segment_cli, train_seg_cli, serve_cli))
