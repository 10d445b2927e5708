"""TotalSegmentator's ``total_mr`` liver class as an alternative segmenter (when installed).

This module never downloads anything: TotalSegmentator fetches its weights on first use, so we
first check that the ``total_mr`` weights are already on this machine and otherwise say how to
get them. The result is post-processed like our own model's (largest component, holes filled,
the input's grid); TotalSegmentator gives no probability, so the confidence is left empty.
"""
from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .infer import SegResult
from .postprocess import clean_mask

TASK = "total_mr"
INSTALL_HINT = "pip install TotalSegmentator, then totalseg_download_weights -t total_mr"


def _weights_present() -> bool:
    """Whether TotalSegmentator's ``total_mr`` weights are on this machine (nnU-Net datasets 850/851)."""
    from totalsegmentator.config import get_weights_dir

    folder = Path(get_weights_dir())
    return folder.is_dir() and any(p.name.startswith("Dataset850") for p in folder.iterdir())


class TotalSegmentatorLiver:
    """``segment(image)`` like :class:`LiverSegmenter`, through TotalSegmentator's Python API."""

    name = "TotalSegmentator total_mr (liver)"

    def __init__(self, device: str = "auto"):
        if importlib.util.find_spec("totalsegmentator") is None:
            raise InputError("--segmenter totalsegmentator", f"TotalSegmentator is not installed ({INSTALL_HINT})")
        if not _weights_present():
            raise InputError("--segmenter totalsegmentator",
                             f"TotalSegmentator's {TASK} weights are not on this machine ({INSTALL_HINT}); "
                             "this tool downloads nothing")
        import torch

        self.device = "gpu" if (device != "cpu" and torch.cuda.is_available()) else "cpu"

    def segment(self, image: sitk.Image, what: str = "image", require_liver: bool = True) -> SegResult:
        from totalsegmentator.map_to_binary import class_map
        from totalsegmentator.python_api import totalsegmentator

        liver = next(k for k, v in class_map[TASK].items() if v == "liver")
        t = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="liverstiffness-totalseg-") as tmp:
            src, dst = Path(tmp) / "t2w.nii.gz", Path(tmp) / "seg.nii.gz"
            sitk.WriteImage(image, str(src))
            totalsegmentator(str(src), str(dst), ml=True, task=TASK, roi_subset=["liver"], device=self.device, quiet=True)
            seg = sitk.ReadImage(str(dst))
        seg = sitk.Resample(seg, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        mask = clean_mask((sitk.GetArrayFromImage(seg) == liver).astype(np.float32))
        volume = float(mask.sum()) * float(np.prod(image.GetSpacing())) / 1000.0
        if require_liver and volume < 100.0:
            raise InputError(what, f"no liver found by TotalSegmentator ({volume:.0f} mL)")
        out = sitk.GetImageFromArray(mask.astype(np.uint8))
        out.CopyInformation(image)
        prob = sitk.Cast(out, sitk.sitkFloat32)
        return SegResult(out, prob, {"mean_probability": None, "fold_agreement_dice": None, "low_confidence": False},
                         volume, {"totalsegmentator": round(time.perf_counter() - t, 3)},
                         {"name": self.name, "task": TASK, "licence": "TotalSegmentator's own (see its documentation)"})
