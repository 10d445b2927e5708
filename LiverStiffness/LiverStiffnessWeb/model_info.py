"""What the model card and the device chip say: read from the model's metadata and the device
the estimate would use. Both are slow (torch, files), so the app calls them on a worker thread.
"""
from __future__ import annotations


def describe_model(model: str | None) -> dict:
    """The model card's facts (``model``: its folder; None: the shipped demo model); InputError when unusable."""
    from liverstiffness.bundle_layout import model_folder
    from liverstiffness.stiffness.checkpoint import DEMO_MODEL_DIR, read_meta

    folder = model_folder(model) if model else DEMO_MODEL_DIR     # a MONAI bundle: its models/
    meta = read_meta(folder)
    cv = ((meta.metrics or {}).get("cross_validation") or {}).get("transformer") or {}
    return {"name": meta.name, "version": meta.version, "folds": len(meta.folds),
            "exams": (meta.trained_on or {}).get("n_exams"), "r": cv.get("pearson_r"), "mae": cv.get("mae_kpa"),
            "intended_use": meta.intended_use, "synthetic": bool(meta.synthetic)}


def describe_device(device: str) -> str:
    """The device chip's text for the ``--device`` choice."""
    from liverstiffness.devices import resolve_device

    if resolve_device(device).type == "cuda":
        import torch
        return f"CUDA GPU: {torch.cuda.get_device_name(0)}"
    return "CPU (no CUDA GPU found)" if device == "auto" else "CPU"
