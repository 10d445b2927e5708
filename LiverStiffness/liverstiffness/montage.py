"""A PNG montage of axial T1w slices through the liver with a map overlaid, for looking."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .mre import DISPLAY_RANGE_KPA


@dataclass(frozen=True)
class OverlayStyle:
    """How the overlay is shown: its window (None: 0 to the larger of 2 and its 99.5th
    percentile), colour map and opacity."""

    value_range: tuple[float, float] | None = None
    cmap: str = "inferno"
    alpha: float = 0.5


ATTENTION_STYLE = OverlayStyle()
MRE_STYLE = OverlayStyle(DISPLAY_RANGE_KPA, "jet", 0.75)   # the 0–8 kPa scale readers know from elastograms


def write_montage(path: Path, t1w: sitk.Image, overlay: sitk.Image, mask: sitk.Image, title: str = "",
                  n_slices: int = 8, unit: str = "", style: OverlayStyle = ATTENTION_STYLE) -> Path:
    """Axial slices through the liver, ``overlay`` in its own unit over the whole field it covers
    (in ``style``, with a colour bar), liver outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Show in radiological orientation: resample to an axial RAS-like display (LPS identity grid).
    img, ov, m = (sitk.DICOMOrient(x, "LPS") for x in (t1w, overlay, mask))
    a, o, mk = (sitk.GetArrayFromImage(x) for x in (img, ov, m))
    rows = np.flatnonzero(mk.reshape(mk.shape[0], -1).any(axis=1))
    slices = np.unique(np.linspace(rows.min(), rows.max(), min(n_slices, len(rows))).round().astype(int))
    cols = 4
    nrows = int(np.ceil(len(slices) / cols))
    sp = img.GetSpacing()
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.0 * nrows), squeeze=False)
    vmax = np.percentile(a, 99.5)
    auto_max = max(2.0, float(np.percentile(o[o > 0], 99.5))) if np.any(o > 0) else 2.0
    o_min, o_max = style.value_range or (0.0, auto_max)
    for ax in axes.ravel():
        ax.axis("off")
    shown = None
    for ax, k in zip(axes.ravel(), slices):
        ax.imshow(a[k], cmap="gray", vmin=0, vmax=vmax, aspect=sp[1] / sp[0])
        shown = ax.imshow(np.ma.masked_where(o[k] <= 0, o[k]), cmap=style.cmap, vmin=o_min, vmax=o_max, alpha=style.alpha,
                          aspect=sp[1] / sp[0])
        ax.contour(mk[k], [0.5], colors="cyan", linewidths=0.6)
        ax.set_title(f"slice {k}", fontsize=8, y=1.0)   # placed, not measured against the (hidden) ticks
    fig.suptitle(title, fontsize=10)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
        bar.set_label(unit, fontsize=8)
    # Fixed margins rather than tight_layout (which measures tick labels the axes do not show),
    # and light PNG compression: together a third of the time, for a slightly larger file.
    fig.subplots_adjust(left=0.01, right=0.93, bottom=0.01, top=1 - 0.45 / fig.get_figheight(), wspace=0.04, hspace=0.12)
    fig.savefig(path, dpi=90, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return Path(path)
