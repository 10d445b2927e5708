"""Where a MONAI bundle keeps a model folder: what lets ``--model`` and ``--seg-model`` take a bundle.

A bundle written by ``liverstiffness export-bundle`` (:mod:`liverstiffness.bundle_export`)::

    configs/metadata.json    MONAI's bundle metadata (schema, versions, task, network_data_format, ...)
    configs/inference.json   the config ``python -m monai.bundle run`` runs (:mod:`liverstiffness.bundle`)
    models/                  the model folder's files, unchanged (model.json or seg_model.json, weights, ...)
    docs/README.md           the model card (and, for the segmenter, LICENSE-WEIGHTS.md)

The loaders read ``models/`` as the model folder they always read, with every check they make on
one (format, SHA-256 of each weight file, tensors only).
"""
from __future__ import annotations

from pathlib import Path

from .errors import InputError

METADATA = Path("configs") / "metadata.json"
INFERENCE = Path("configs") / "inference.json"
MODELS = "models"
DOCS = "docs"


def is_bundle(path: str | Path) -> bool:
    """A folder with ``configs/metadata.json``: a MONAI bundle."""
    return (Path(path) / METADATA).is_file()


def model_folder(path: str | Path) -> Path:
    """The model folder to read for ``path``: ``path`` itself, or a bundle's ``models/``."""
    path = Path(path)
    if not is_bundle(path):
        return path
    inner = path / MODELS
    if not inner.is_dir():
        raise InputError(f"model {path}", f"is a MONAI bundle without a {MODELS}/ folder")
    return inner
