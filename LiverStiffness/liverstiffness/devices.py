"""The compute devices a user may name (``--device``, the Slicer panel, the web page) and how a
name becomes a torch device. One list, so every front end offers the same choices."""
from __future__ import annotations

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "auto: CUDA (with mixed precision where the model allows) when available, else CPU"


def resolve_device(name: str = "auto"):
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is a clear input error."""
    import torch  # here, not at the top: the command line's --help must not pay for torch

    if name not in DEVICES:
        raise InputError("--device", f"must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "cuda was asked for but no CUDA GPU is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
