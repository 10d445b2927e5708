"""The stiffness map of a model trained on elastograms, as the page shows it: the volume node
``LiverStiffnessLogic.load_results`` makes of ``stiffness_map.nii.gz`` (kPa over the liver on the
reference's grid, 0 outside; in the elastograms' jet colours over 0–8 kPa, transparent outside the
liver, as in the Slicer panel), its colour bar and its line under the views.

A result without a map (a model without a map decoder) has no such node: ``available`` says so,
and the page then shows nothing of it. Nothing here computes a stiffness.
"""
from __future__ import annotations

from liverstiffness.montage import MRE_STYLE
from LiverStiffnessLib.logic import jet

RANGE_KPA = MRE_STYLE.value_range            # the elastograms' scale, as the montage predict writes: 0–8 kPa
LEGEND_TICKS_KPA = tuple(range(int(RANGE_KPA[0]), int(RANGE_KPA[1]) + 1, 2))   # 0, 2, 4, 6, 8
MAP_KIND = "stiffness_map"                   # the node's LiverStiffness.mapKind


def node(result):
    """The stiffness map's volume node of ``result`` (ResultNodes); None without one."""
    return getattr(result, "stiffness_map", None)


def available(result) -> bool:
    return node(result) is not None


def legend_gradient(stops: int = 9) -> str:
    """The colour bar's CSS: the views' colour table (the logic's ``jet``) at ``stops`` evenly
    spaced places of the window."""
    parts = []
    for i in range(stops):
        r, g, b = (round(255 * v) for v in jet(i / (stops - 1)))
        parts.append(f"rgb({r},{g},{b}) {100 * i / (stops - 1):g}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def note(logic, report) -> str:
    """The line under the views while the map is shown: the panel's, and the scale."""
    lo, hi = RANGE_KPA
    return (logic.stiffness_map_text(report) + f" Coloured {lo:g}–{hi:g} kPa as elastograms are; transparent "
            "outside the liver.")
