"""An exam's liver mask made automatically: segment the T2w, carry the mask to the reference grid.

The reference is the T1w when there is one. The T2w and the T1w come from separate breath-holds,
so the T2w mask is carried by the rigid T2w → T1w registration the pipeline already uses
(``preprocess.register_to_reference``, judged around the liver as the T2w mask places it), on the
fold-mean probability, then cleaned again on the reference grid (largest component, holes
filled). Without a T1w the T2w is the reference and the mask stays on its grid.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import spatial
from ..errors import InputError
from ..imageio import read_dwi, read_volume
from ..preprocess import SEQUENCE_LABELS, ExamImages, check_exam, register_to_reference
from .postprocess import clean_mask

SEGMENTERS = ("model", "totalsegmentator")
AUTO = "auto"                      # the word that asks for an automatic mask (--mask auto, manifest: empty)

_cache: dict = {}


def get_segmenter(name: str = "model", model_dir: str | Path | None = None, device: str = "auto"):
    """The segmenter by name, loaded once per process (batches reuse it)."""
    if name not in SEGMENTERS:
        raise InputError("--segmenter", f"must be one of {', '.join(SEGMENTERS)}, got {name!r}")
    key = (name, str(model_dir or ""), device)
    if key not in _cache:
        if name == "totalsegmentator":
            from .totalseg import TotalSegmentatorLiver
            _cache[key] = TotalSegmentatorLiver(device)
        else:
            from .infer import LiverSegmenter
            _cache[key] = LiverSegmenter.load(model_dir, device)
    return _cache[key]


def mask_on_reference(images: ExamImages, seg_mask: sitk.Image, seg_prob: sitk.Image,
                      register: bool = True) -> tuple[sitk.Image, dict]:
    """The T2w-grid mask (and probability) carried onto the reference grid; returns it and the transform used."""
    same = images.reference_name == "t2w"
    if register and not same:
        with_mask = ExamImages(images.t1w, images.t2w, images.dwi, seg_mask, images.paths)
        reg = register_to_reference(with_mask)["t2w"]     # bounded and checked (registration.py)
        tr = reg.transform                                # T1w points → T2w points
        shift = [round(float(v), 2) for v in reg.translation_mm]
    else:
        tr, shift = sitk.Euler3DTransform(), [0.0, 0.0, 0.0]
    prob = spatial.resample_like(seg_prob, images.reference, tr, antialias=False)
    mask = clean_mask(sitk.GetArrayFromImage(prob))
    if not mask.any():
        raise InputError("t2w", f"the automatic liver mask does not overlap the {SEQUENCE_LABELS[images.reference_name]} image")
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(images.reference)
    info = {"t2w_to_t1w_translation_mm": shift,
            "registered": bool(register and not same)}
    return out, info


def auto_mask(t1w: sitk.Image, t2w: sitk.Image, dwi, paths: dict, segmenter, register: bool = True) -> tuple[ExamImages, dict]:
    """ExamImages whose mask was made by ``segmenter`` on the T2w, and the report's ``mask`` entry."""
    t = time.perf_counter()
    res = segmenter.segment(t2w, f"t2w {paths.get('t2w', '')}".strip())
    images = ExamImages(t1w, t2w, dwi, res.mask, dict(paths))
    mask, carried = mask_on_reference(images, res.mask, res.probability, register)
    images.mask = mask
    images.paths["mask"] = f"automatic ({res.model.get('name', 'segmenter')})"
    check_exam(images)
    info = res.report()
    info.update(carried)
    info["volume_on_reference_ml"] = round(float(sitk.GetArrayViewFromImage(mask).sum()) * spatial.voxel_volume_ml(mask), 1)
    info["timings_s"]["total"] = round(time.perf_counter() - t, 3)
    images.mask_info = info
    return images, info


def read_exam_auto(t1w, t2w, dwi, dwi_b, segmenter, register: bool = True) -> tuple[ExamImages, dict]:
    """Read an exam that has no mask and make one (see :func:`auto_mask`); T1w and DWI may be
    None (not given), the T2w is needed."""
    if t2w is None:
        raise InputError("--mask auto", "needs --t2w (the liver model segments T2-weighted images)")
    paths = {k: str(Path(v).resolve()) for k, v in (("t1w", t1w), ("t2w", t2w), ("dwi", dwi)) if v is not None}
    t1 = read_volume(t1w, "t1w") if t1w is not None else None
    t2 = read_volume(t2w, "t2w")
    d = read_dwi(dwi, dwi_b, "dwi") if dwi is not None else None
    return auto_mask(t1, t2, d, paths, segmenter, register)


def confidence_text(c: dict) -> str:
    """The confidence entries a segmenter gave, in words ("mean probability 0.95, fold agreement 0.93, …")."""
    parts = [f"{words} {c[key]:.2f}" for key, words in (("mean_probability", "mean probability"),
                                                         ("fold_agreement_dice", "fold agreement"),
                                                         ("tta_agreement_dice", "scale agreement"))
             if c.get(key) is not None]
    return ", ".join(parts) or "no probability"


def low_confidence_warning(info: dict) -> str | None:
    c = info.get("confidence") or {}
    if not c.get("low_confidence"):
        return None
    return (f"automatic liver mask has low confidence ({confidence_text(c)}): check it, e.g. in Segment Editor, "
            "before trusting the estimate")
