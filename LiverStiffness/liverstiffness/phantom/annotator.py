"""The liver mask as an annotator draws it on the T1w, not the truth.

Annotators draw slice by slice: contours are smoothed, the boundary sits a little inside or
outside the true edge (more in some places than others, and each annotator has a habit), thin
tips of the liver and the small first or last slice are often left out, and what is painted is
solid. The truth stays in ``truth_labels.nii.gz``. Measured on the phantoms: Dice with the truth
0.90–0.98, median 0.96 on 390 exams (experiments/phantom_calibration.py; tested in
Testing/Python/test_phantom.py).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .fields import FourierField

# Our choices, sized to a boundary error of about a voxel: threshold on the partial-volume
# fraction (0.5 = the true edge), its per-annotator habit, its smooth regional wander, and the
# slice-to-slice jitter of drawing each slice separately.
HABIT_SD = 0.08
REGIONAL_SD = 0.12
SLICE_SD = 0.05
CONTOUR_SMOOTHING_VOXELS = (0.6, 1.2)   # in-plane Gaussian sigma range
MISS_TIP_SLICE_FRACTION = 0.25          # share of slices where thin tips are left out
MISS_END_SLICE = 0.5                    # probability of leaving out a small first/last slice


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return mask
    return lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)


def annotate(fraction: np.ndarray, origin, spacing, rng: np.random.Generator) -> np.ndarray:
    """Annotator mask [z, y, x] (uint8) from the liver's partial-volume ``fraction`` on the T1w
    grid (``origin``/``spacing`` in LPS mm, x-y-z order)."""
    sigma = rng.uniform(*CONTOUR_SMOOTHING_VOXELS)
    smooth = ndimage.gaussian_filter(fraction.astype(np.float32), (0, sigma, sigma))
    nz, ny, nx = fraction.shape
    z = origin[2] + spacing[2] * np.arange(nz)[:, None, None]
    y = origin[1] + spacing[1] * np.arange(ny)[None, :, None]
    x = origin[0] + spacing[0] * np.arange(nx)[None, None, :]
    region = FourierField.random(rng, (50.0, 120.0), n=8)
    near = (smooth > 0.15) & (smooth < 0.85)          # the threshold only matters near the edge
    thr = np.full(fraction.shape, 0.5 - rng.normal(0, HABIT_SD), np.float32)
    xx, yy, zz = np.broadcast_arrays(x, y, z)
    thr[near] += REGIONAL_SD * region(xx[near], yy[near], zz[near])
    thr += rng.normal(0, SLICE_SD, (nz, 1, 1)).astype(np.float32)
    mask = smooth > np.clip(thr, 0.2, 0.8)
    # Thin tips left out on some slices (an in-plane opening removes what is under ~2 voxels wide).
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        if rng.random() < MISS_TIP_SLICE_FRACTION:
            mask[k] = ndimage.binary_opening(mask[k], iterations=1)
    # A small first or last slice is easily missed.
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(ks) > 4:
        area = mask.sum(axis=(1, 2))
        for k in (ks[0], ks[-1]):
            if area[k] < 0.3 * area.max() and rng.random() < MISS_END_SLICE:
                mask[k] = False
    # What is painted is solid and in one piece.
    mask = np.stack([ndimage.binary_fill_holes(m) for m in mask])
    mask = ndimage.binary_fill_holes(_largest(mask))
    return mask.astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
