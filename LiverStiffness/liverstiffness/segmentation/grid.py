"""Between an image's own grid and the network's grid, in physical space.

The network grid is axis-aligned in LPS at the model's spacing and covers the image's physical
extent, so flipped axes (CHAOS stores y posterior→anterior), oblique directions and shifted
origins all reach the network the same way, and results go back by resampling onto the input's
exact grid (``sitk.Resample`` with the input as reference): the mask lands where the liver is,
voxel for voxel, whatever the header says.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .. import spatial
from .config import SegInputSpec


def network_grid(image: sitk.Image, spacing_mm) -> sitk.Image:
    """An axis-aligned LPS grid at ``spacing_mm`` (x, y, z) covering ``image``'s physical box."""
    lo, hi = spatial.bbox_mm(image)
    spacing = np.asarray(spacing_mm, float)
    size = np.maximum(np.ceil((hi - lo) / spacing - 1e-6).astype(int), 1)
    origin = lo + spacing / 2.0            # voxel centres inside the box
    return spatial.grid_image(origin, spacing, size)


def normalise(arr: np.ndarray, percentiles) -> np.ndarray:
    """Percentile scaling to [0, 1] (clipped), as MONAI's ``ScaleIntensityRangePercentiles``."""
    from monai.transforms import ScaleIntensityRangePercentiles

    lo, hi = percentiles
    out = ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)(arr)
    return np.asarray(out, np.float32)


def to_network(image: sitk.Image, spec: SegInputSpec) -> tuple[np.ndarray, sitk.Image]:
    """The image on the network grid, normalised: ([z, y, x] float32, the grid image)."""
    grid = network_grid(image, spec.spacing_mm)
    arr = sitk.GetArrayFromImage(spatial.resample_like(sitk.Cast(image, sitk.sitkFloat32), grid))
    return normalise(arr, spec.percentiles), grid


def labels_to_network(label: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """A binary label on the network grid (linear on the 0/1 image, then ≥ 0.5: smoother than nearest)."""
    frac = spatial.resample_like(sitk.Cast(label > 0, sitk.sitkFloat32), grid)
    return (sitk.GetArrayFromImage(frac) >= 0.5).astype(np.uint8)


def to_input_grid(prob_zyx: np.ndarray, grid: sitk.Image, image: sitk.Image) -> np.ndarray:
    """A probability map on the network grid, resampled (linear) onto ``image``'s own grid."""
    p = sitk.GetImageFromArray(np.asarray(prob_zyx, np.float32))
    p.CopyInformation(grid)
    return sitk.GetArrayFromImage(spatial.resample_like(p, image, antialias=False))
