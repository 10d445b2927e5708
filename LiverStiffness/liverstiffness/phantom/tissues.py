"""Tissue parameters for the phantom: T1 and T2 (ms) at 1.5 T and 3 T, ADC (10⁻³ mm²/s), proton
density (relative).

Values are the mid-points of the literature ranges collected in ../shared/PHANTOM.md (de Bazelaire
et al., Radiology 2004; Stanisz et al., MRM 2005; Taouli & Koh, Radiology 2010 for ADC; Hoad et
al., NMR Biomed 2015 for liver T1 in fibrosis). Where PHANTOM.md gives no value (viscera, marrow,
lung, air) the number is our own rough choice, marked "ours".
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
    fat_suppressed_dwi: bool = False
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
    Tissue(5, "fat", 275, 375, 80, 70, 0.5, 0.90, fat_suppressed_dwi=True),
    Tissue(6, "bile", 3000, 3500, 750, 750, 3.0, 1.00),          # gallbladder
    Tissue(7, "blood", 1450, 1950, 225, 150, 2.2, 0.85, flow_void=True),
    Tissue(8, "marrow", 550, 700, 60, 50, 0.4, 0.60),               # vertebral body (ours)
    Tissue(9, "viscera", 900, 1200, 60, 50, 1.6, 0.70),             # bowel and mesentery (ours)
    Tissue(10, "lung", 1200, 1400, 30, 25, 2.0, 0.05),              # ours: almost no signal
    Tissue(11, "stomach_air", 1.0e4, 1.0e4, 1.0, 1.0, 0.0, 0.0),
)}
BY_LABEL = {t.label: t for t in TISSUES.values()}

# Disease effects on the liver (PHANTOM.md; per unit fibrosis stage f in [0, 4], per unit
# inflammation in [0, 1], per percentage point of PDFF). T1/T2 shifts are for 1.5 T and scaled by
# FIELD_DISEASE_SCALE at 3 T.
LIVER_T1_PER_STAGE_MS = 38.0       # +30–50 ms per stage
LIVER_T1_PER_INFLAMMATION_MS = 45.0
LIVER_T1_PER_PDFF_MS = -2.0        # fat lowers T1 slightly
LIVER_T2_PER_STAGE_MS = 2.6        # 46 → ~56 ms at stage 4
LIVER_T2_PER_INFLAMMATION_MS = 3.0
LIVER_ADC_PER_STAGE = -0.08        # 0.05–0.1 per stage
LIVER_ADC_PER_PDFF = -0.004        # fat lowers ADC
LIVER_ADC_PER_INFLAMMATION = -0.03
FIELD_DISEASE_SCALE_3T = 1.3
# Inter-subject biological spread of healthy values (1 SD).
LIVER_T1_SD_MS = 15.0
LIVER_T2_SD_MS = 1.5
LIVER_ADC_SD = 0.05
