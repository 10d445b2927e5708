"""Overlap and surface distance of a mask against a reference, in physical units."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk


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


def _has_outline(m: np.ndarray) -> bool:
    """Whether a mask has an outline inside its grid: some voxels in it and some outside. The grid's edge
    is not an outline (``LabelContour``), so a mask that fills the grid has none to measure a distance to."""
    return bool(m.any()) and not bool(m.all())


def hd95_mm(a: sitk.Image, b: sitk.Image) -> float:
    """95th percentile of the symmetric surface distance (mm); inf when either mask is empty or fills the grid."""
    if not (_has_outline(sitk.GetArrayFromImage(a) > 0) and _has_outline(sitk.GetArrayFromImage(b) > 0)):
        return float("inf")
    return float(np.percentile(surface_distances_mm(a, b), 95))


def compare(mask: sitk.Image, reference: sitk.Image) -> dict:
    """Dice, HD95 (mm), mean surface distance (mm) and both volumes (mL) of two masks on one grid."""
    a, b = sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(reference) > 0
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    # no outline on one side (an empty mask, or one filling the grid): the distances are infinite
    hd95 = mean_surface = float("inf")
    if _has_outline(a) and _has_outline(b):
        d = surface_distances_mm(mask, reference)
        hd95, mean_surface = round(float(np.percentile(d, 95)), 2), round(float(d.mean()), 2)
    return {"dice": round(dice(a, b), 4), "hd95_mm": hd95, "mean_surface_mm": mean_surface,
            "volume_ml": round(float(a.sum()) * voxel_ml, 1), "reference_volume_ml": round(float(b.sum()) * voxel_ml, 1)}
