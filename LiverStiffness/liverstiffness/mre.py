"""MR-elastography stiffness bands (60 Hz MRE, kPa) and their usual reading.

Edges follow the consensus bands in docs/phantom.md; a value on an edge belongs to the
higher band (2.5 kPa is "normal or inflammation").
"""
from __future__ import annotations

from dataclasses import dataclass

#: Lower edge (inclusive, kPa) and reading of each band, in increasing order.
MRE_BANDS: tuple[tuple[float, str], ...] = (
    (0.0, "normal"),
    (2.5, "normal or inflammation"),
    (2.9, "stage 1-2 fibrosis"),
    (3.5, "stage 2-3 fibrosis"),
    (5.0, "cirrhosis"),
)

#: Thresholds at which the validation report computes AUROC (kPa, "at or above").
AUROC_THRESHOLDS_KPA: tuple[float, ...] = (2.5, 3.0, 3.5, 5.0)

#: The colour scale elastograms are read on (kPa): the stiffness map's montage, Parametric Map and overlays.
DISPLAY_RANGE_KPA = (0.0, 8.0)

#: Physically possible range of liver shear stiffness at 60 Hz (kPa), for input validation.
PLAUSIBLE_KPA = (0.5, 30.0)


@dataclass(frozen=True)
class Category:
    label: str
    low_kpa: float
    high_kpa: float | None  # None: open-ended

    def as_dict(self) -> dict:
        return {"label": self.label, "low_kpa": self.low_kpa, "high_kpa": self.high_kpa}


def categorize(kpa: float) -> Category:
    """The MRE band that holds ``kpa``."""
    chosen = 0
    for i, (edge, _) in enumerate(MRE_BANDS):
        if kpa >= edge:
            chosen = i
    high = MRE_BANDS[chosen + 1][0] if chosen + 1 < len(MRE_BANDS) else None
    return Category(MRE_BANDS[chosen][1], MRE_BANDS[chosen][0], high)


def band_table() -> list[dict]:
    """All bands with their edges, for reports."""
    return [categorize(edge).as_dict() for edge, _ in MRE_BANDS]
