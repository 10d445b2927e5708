"""Overlap and surface distance of a mask against a reference, in physical units."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def json_ready(obj):
    """``obj`` (dicts, lists, numbers) with every non-finite float as None, JSON's null: ``json.dumps`` would
    write an outline-less mask's infinite distance as ``Infinity``, which strict readers (JavaScript, jq) refuse."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def mm_text(value, fmt: str = ".1f") -> str:
    """A distance for people: ``value`` in ``fmt``, or "none" where it is None or infinite (no outline)."""
    return "none" if value is None or not np.isfinite(value) else format(value, fmt)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / total) if total else 1.0


def surface_distances_mm(a: sitk.Image, b: sitk.Image) -> np.ndarray:
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b`` and back, both
    binary images on one grid; physical distances from signed Maurer distance maps, so oblique
    and anisotropic grids count in mm."""
    out = []
    for src, dst in ((a, b), (b, a)):
        # Copies, not views: a view would outlive its temporary image.
        dist = sitk.GetArrayFromImage(sitk.Abs(sitk.SignedMaurerDistanceMap(
            sitk.Cast(dst > 0, sitk.sitkUInt8), insideIsPositive=False, squaredDistance=False, useImageSpacing=True)))
        surface = sitk.GetArrayFromImage(sitk.LabelContour(sitk.Cast(src > 0, sitk.sitkUInt8), fullyConnected=False)) > 0
        out.append(dist[surface])
    return np.concatenate(out)


def _surface_scores(a: sitk.Image, b: sitk.Image, a_arr: np.ndarray, b_arr: np.ndarray) -> tuple[float, float]:
    """(95th percentile, mean) of the symmetric surface distance (mm) of the binary images ``a`` and ``b``
    (``a_arr``, ``b_arr``: their arrays); both inf when either mask has no outline inside its grid: an empty
    mask, or one filling the grid, whose edge is not an outline (``LabelContour``)."""
    if not all(m.any() and not m.all() for m in (a_arr, b_arr)):
        return float("inf"), float("inf")
    d = surface_distances_mm(a, b)
    return float(np.percentile(d, 95)), float(d.mean())


def hd95_mm(a: sitk.Image, b: sitk.Image) -> float:
    """95th percentile of the symmetric surface distance (mm); inf when either mask is empty or fills the grid."""
    return _surface_scores(a, b, sitk.GetArrayFromImage(a) > 0, sitk.GetArrayFromImage(b) > 0)[0]


def compare(mask: sitk.Image, reference: sitk.Image) -> dict:
    """Dice, HD95 (mm), mean surface distance (mm) and both volumes (mL) of two masks on one grid."""
    a, b = sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(reference) > 0
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    hd95, mean_surface = _surface_scores(mask, reference, a, b)
    return {"dice": round(dice(a, b), 4), "hd95_mm": round(hd95, 2), "mean_surface_mm": round(mean_surface, 2),
            "volume_ml": round(float(a.sum()) * voxel_ml, 1), "reference_volume_ml": round(float(b.sum()) * voxel_ml, 1)}
