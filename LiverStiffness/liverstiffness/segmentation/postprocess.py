"""What a radiologist expects of an automatic liver mask: one piece, no holes, on the input grid."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray, connectivity: int = 3) -> np.ndarray:
    """The largest connected component (the liver is one organ; specks elsewhere are errors);
    ``connectivity`` 3: 26-connected, as shipped; 1: 6-connected (faces only)."""
    labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, connectivity))
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Enclosed holes filled in 3-D, then slice by slice (axis 0 of a [z, y, x] array): vessels
    inside the liver belong to the liver mask, and a hole open only through a neighbouring slice
    is still a hole in the slice an annotator looks at."""
    filled = ndimage.binary_fill_holes(mask)
    for k in range(filled.shape[0]):
        filled[k] = ndimage.binary_fill_holes(filled[k])
    return filled


def clean_mask(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Probability [z, y, x] → binary liver mask: threshold, largest component, holes filled."""
    mask = prob >= threshold
    if not mask.any():
        return mask
    return fill_holes(largest_component(mask))
