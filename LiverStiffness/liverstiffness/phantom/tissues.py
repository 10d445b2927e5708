"""Tissue parameters for the phantom: T1 and T2 (ms) at 1.5 T and 3 T, ADC (10⁻³ mm²/s), proton
density (relative).

Values are the mid-points of the literature ranges collected in docs/phantom.md (de Bazelaire
et al., Radiology 2004; Stanisz et al., MRM 2005; Taouli & Koh, Radiology 2010 for ADC). Where
docs/phantom.md gives no value (viscera, marrow, lung, air) the number is our own rough choice, marked
"ours". The liver's values are its healthy water compartment; disease and person-level variation
are applied in ``disease.py``, and liver fat is a second compartment with the ``fat`` parameters.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tissue:
    label: int
    name: str
    t1_15: float   # ms at 1.5 T
    t1_3: float    # ms at 3 T
    t2_15: float   # ms at 1.5 T
    t2_3: float    # ms at 3 T
    adc: float     # 10⁻³ mm²/s
    pd: float      # relative proton density
    flow_void: bool = False  # flowing blood: dark on single-shot FSE and at b > 0

    def t1(self, field_t: float) -> float:
        return self.t1_15 if field_t < 2.25 else self.t1_3

    def t2(self, field_t: float) -> float:
        return self.t2_15 if field_t < 2.25 else self.t2_3


AIR = Tissue(0, "air", 1.0e4, 1.0e4, 1.0, 1.0, 0.0, 0.0)
TISSUES: dict[str, Tissue] = {t.name: t for t in (
    AIR,
    Tissue(1, "liver", 575, 805, 46, 34, 1.45, 0.72),
    Tissue(2, "spleen", 1050, 1350, 70, 55, 0.85, 0.80),
    Tissue(3, "kidney", 975, 1200, 75, 65, 2.0, 0.85),
    Tissue(4, "muscle", 1025, 1425, 34, 30, 1.4, 0.70),
    Tissue(5, "fat", 275, 375, 80, 70, 0.5, 0.90),                # suppressed in DWI (sequences.py)
    Tissue(6, "bile", 3000, 3500, 750, 750, 3.0, 1.00),          # gallbladder
    Tissue(7, "blood", 1450, 1950, 225, 150, 2.2, 0.85, flow_void=True),
    Tissue(8, "marrow", 550, 700, 60, 50, 0.4, 0.60),               # vertebral body (ours)
    Tissue(9, "viscera", 900, 1200, 60, 50, 1.6, 0.70),             # bowel wall, pancreas, mesentery (ours)
    Tissue(10, "lung", 1200, 1400, 30, 25, 2.0, 0.05),              # ours: almost no signal
    Tissue(11, "stomach_air", 1.0e4, 1.0e4, 1.0, 1.0, 0.0, 0.0),   # gas in stomach and bowel
    Tissue(12, "fluid", 2800, 3300, 500, 450, 2.9, 1.00),           # bowel fluid, CSF (bile-like; ours)
)}
BY_LABEL = {t.label: t for t in TISSUES.values()}
