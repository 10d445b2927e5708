"""Scanner/site profiles: what differs between sites and vendors (../shared/PHANTOM.md).

Voxel grids follow typical clinical protocols (T1w dual-echo GRE ~1.4 mm in-plane, 6 mm slices;
T2w single-shot FSE ~1.3 mm, 6–7 mm; DWI EPI ~2.8 mm, 6–7 mm). ``small`` cases keep the physical
field of view and slice thickness but use three times coarser in-plane voxels, for fast tests.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SequenceGrid:
    spacing: tuple[float, float, float]   # mm (x, y, z) in LPS
    fov: tuple[float, float, float]       # mm


@dataclass(frozen=True)
class SiteProfile:
    name: str
    vendor: str
    field_t: float
    t1w: SequenceGrid
    t2w: SequenceGrid
    dwi: SequenceGrid
    b_values: tuple[float, ...]           # s/mm²
    intensity_scale: float                # arbitrary vendor units (factor >10 between vendors)
    bias_amplitude: float                 # peak relative amplitude of the multiplicative bias field
    noise: float                          # noise SD relative to mean liver signal (T1w, T2w)
    dwi_noise: float                      # noise SD relative to liver b=0 signal
    adc_bias: float                       # relative ADC bias of this vendor's DWI (e.g. +0.06)
    shift_sd_mm: tuple[float, float, float]  # breath-hold misregistration SD (x, y, z)
    dwi_distortion_mm: float              # peak EPI shift along phase encoding (y)
    flip_deg: float = 70.0
    tr_gre_ms: float = 150.0
    te_fse_ms: float = 90.0
    te_dwi_ms: float = 60.0

    @property
    def te_gre_ms(self) -> float:
        return 4.6 if self.field_t < 2.25 else 2.3   # in-phase echo

    def small(self) -> "SiteProfile":
        def coarse(g: SequenceGrid) -> SequenceGrid:
            return SequenceGrid((g.spacing[0] * 3, g.spacing[1] * 3, max(g.spacing[2], 8.0)), g.fov)
        return replace(self, t1w=coarse(self.t1w), t2w=coarse(self.t2w), dwi=coarse(self.dwi))


FOV = (380.0, 300.0, 240.0)
SITES: dict[str, SiteProfile] = {p.name: p for p in (
    SiteProfile("A", "GE", 1.5, SequenceGrid((1.48, 1.48, 6.0), FOV), SequenceGrid((1.40, 1.40, 6.0), FOV),
                SequenceGrid((2.97, 2.97, 6.0), FOV), (0.0, 500.0), 1.0, 0.12, 0.025, 0.06, 0.0,
                (1.0, 1.5, 3.0), 2.0),
    SiteProfile("B", "Siemens", 3.0, SequenceGrid((1.30, 1.30, 5.0), FOV), SequenceGrid((1.19, 1.19, 6.0), FOV),
                SequenceGrid((2.60, 2.60, 6.0), FOV), (50.0, 800.0), 8.0, 0.30, 0.02, 0.05, -0.05,
                (1.0, 1.5, 3.5), 3.0),
    SiteProfile("C", "Philips", 1.5, SequenceGrid((1.56, 1.56, 6.0), FOV), SequenceGrid((1.25, 1.25, 7.0), FOV),
                SequenceGrid((3.13, 3.13, 7.0), FOV), (0.0, 600.0), 0.35, 0.15, 0.03, 0.07, 0.06,
                (1.0, 1.5, 3.0), 2.5),
    SiteProfile("D", "Siemens", 1.5, SequenceGrid((1.37, 1.37, 6.0), FOV), SequenceGrid((1.37, 1.37, 6.0), FOV),
                SequenceGrid((2.73, 2.73, 6.0), FOV), (50.0, 400.0, 800.0), 3.0, 0.15, 0.025, 0.06, 0.03,
                (1.0, 1.5, 3.0), 2.0),
    SiteProfile("E", "GE", 3.0, SequenceGrid((1.41, 1.41, 6.0), FOV), SequenceGrid((1.33, 1.33, 6.0), FOV),
                SequenceGrid((2.81, 2.81, 6.0), FOV), (0.0, 600.0), 20.0, 0.28, 0.025, 0.06, -0.04,
                (1.0, 1.5, 3.5), 3.0),
)}
