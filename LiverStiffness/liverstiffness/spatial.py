"""Physical-space helpers over SimpleITK: grids, resampling, bounding boxes, overlap.

All coordinates are ITK's LPS in mm. Resampling always goes through ``sitk.Resample`` with the
images' own direction cosines, so oblique acquisitions and different grids are handled alike.
"""
from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}


def grid_image(origin, spacing, size, direction=None, pixel=sitk.sitkFloat32) -> sitk.Image:
    """An empty image that only carries a geometry (a resampling reference)."""
    img = sitk.Image([int(n) for n in size], pixel)
    img.SetOrigin([float(o) for o in origin])
    img.SetSpacing([float(s) for s in spacing])
    if direction is not None:
        img.SetDirection([float(d) for d in direction])
    return img


def centred_grid(centre_mm, spacing, size) -> sitk.Image:
    """Axis-aligned (LPS) grid of ``size`` voxels centred on ``centre_mm``."""
    origin = [c - (n - 1) / 2.0 * s for c, n, s in zip(centre_mm, size, spacing)]
    return grid_image(origin, spacing, size)


def resample_like(img: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None,
                  interpolation: str = "linear", antialias: bool = True, default: float = 0.0,
                  pixel=sitk.sitkFloat32) -> sitk.Image:
    """Resample ``img`` onto ``reference``'s grid. ``transform`` maps reference points to ``img``.

    With ``antialias`` a Gaussian whose FWHM makes up the difference in voxel size is applied
    first, so that downsampling averages like a larger voxel instead of aliasing.
    """
    if antialias and interpolation != "nearest":
        src = np.array(img.GetSpacing())
        dst = np.array(reference.GetSpacing())
        sigma = np.sqrt(np.maximum(dst ** 2 - src ** 2, 0.0)) / 2.355
        if sigma.max() > 0.25 * src.min():
            # Recursive Gaussian costs the same at any sigma; it needs sigma > 0 on every axis.
            img = sitk.SmoothingRecursiveGaussian(sitk.Cast(img, sitk.sitkFloat32), np.maximum(sigma, 0.3 * src).tolist())
    return sitk.Resample(img, reference, transform or sitk.Transform(), INTERPOLATORS[interpolation], default, pixel)


def crop_to_cover(img: sitk.Image, reference: sitk.Image, margin_mm: float = 0.0) -> sitk.Image:
    """The voxels of ``img`` within ``margin_mm`` of ``reference``'s extent (both in physical
    space), as an image that keeps its place; ``img`` itself when that is all of it or none."""
    idx = np.array([img.TransformPhysicalPointToContinuousIndex([float(v) for v in c]) for c in corners_mm(reference)])
    pad = margin_mm / np.array(img.GetSpacing())
    size = np.array(img.GetSize())
    lo = np.clip(np.floor(idx.min(axis=0) - pad).astype(int), 0, size)
    hi = np.clip(np.ceil(idx.max(axis=0) + pad).astype(int) + 1, 0, size)
    if np.any(hi <= lo) or (np.all(lo == 0) and np.all(hi == size)):
        return img
    return img[int(lo[0]):int(hi[0]), int(lo[1]):int(hi[1]), int(lo[2]):int(hi[2])]


def corners_mm(img: sitk.Image) -> np.ndarray:
    """The 8 physical corners (voxel centres) of the image, LPS mm."""
    size = img.GetSize()
    idx = itertools.product(*[(0, n - 1) for n in size])
    return np.array([img.TransformContinuousIndexToPhysicalPoint([float(i) for i in c]) for c in idx])


def bbox_mm(img: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    c = corners_mm(img)
    half = 0.5 * np.abs(np.array(img.GetDirection()).reshape(3, 3) @ np.array(img.GetSpacing()))
    return c.min(axis=0) - half, c.max(axis=0) + half


def overlap_fraction(a: sitk.Image, b: sitk.Image) -> float:
    """Fraction of the smaller bounding box that lies in the other's (axis-aligned in LPS)."""
    lo_a, hi_a = bbox_mm(a)
    lo_b, hi_b = bbox_mm(b)
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None).prod()
    smaller = min((hi_a - lo_a).prod(), (hi_b - lo_b).prod())
    return float(inter / smaller) if smaller > 0 else 0.0


def centroid_mm(mask: sitk.Image) -> np.ndarray:
    """Centre of mass of a binary mask, LPS mm."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    return np.array(stats.GetCentroid(1))


def voxel_volume_ml(img: sitk.Image) -> float:
    return float(np.prod(img.GetSpacing())) / 1000.0
