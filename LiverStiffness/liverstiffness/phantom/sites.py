"""Scanner/site profiles: what differs between sites and vendors (docs/phantom.md).

Sites differ in field strength, sequence parameters (so tissue *contrast* changes, not only the
intensity scale), voxel grids, b-values, vendor units, bias fields, noise, ADC bias and EPI
distortion. Protocols are typical clinical ones (docs/phantom.md "Sequences"): T1w a 2-D dual-echo
spoiled GRE (TR 120–180 ms, flip 65–80°) or a 3-D GRE (TR ~4 ms, flip 9–12°), in-phase echo;
T2w a single-shot FSE, with or without fat suppression, or a fat-suppressed FSE; DWI a
fat-suppressed single-shot EPI with two or three b-values. ``small`` cases keep the physical field
of view and slice thickness but use three times coarser in-plane voxels, for fast tests.

Sites A–D are the training sites; E is the external site: its patients' anatomy comes only from
held-out templates (``atlas.HELD_OUT``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SequenceGrid:
    spacing: tuple[float, float, float]   # mm (x, y, z) in LPS
    fov: tuple[float, float, float]       # mm


@dataclass(frozen=True)
class Gre:
    """Spoiled gradient echo, in-phase echo."""

    tr_ms: float
    te_ms: float
    flip_deg: float


@dataclass(frozen=True)
class Fse:
    """(Single-shot) fast spin echo; ``tr_ms`` is the effective recovery time."""

    tr_ms: float
    te_ms: float
    fat_sat: bool


@dataclass(frozen=True)
class Epi:
    tr_ms: float
    te_ms: float


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
    gre: Gre = Gre(150.0, 4.6, 70.0)
    fse: Fse = Fse(1500.0, 90.0, False)
    epi: Epi = Epi(4000.0, 60.0)
    b1_sd: float = 0.04                   # exam-to-exam transmit (flip angle) scale, 1 SD
    b1_gradient: float = 0.04             # peak left-right B1 variation across the body (dielectric at 3 T)
    held_out_anatomy: bool = False        # patients built from the held-out templates only

    def small(self) -> SiteProfile:
        def coarse(g: SequenceGrid) -> SequenceGrid:
            return SequenceGrid((g.spacing[0] * 3, g.spacing[1] * 3, max(g.spacing[2], 8.0)), g.fov)
        return replace(self, t1w=coarse(self.t1w), t2w=coarse(self.t2w), dwi=coarse(self.dwi))


FOV = (380.0, 300.0, 240.0)
SITES: dict[str, SiteProfile] = {p.name: p for p in (
    # GE 1.5 T: 2-D dual-echo SPGR, SSFSE without fat suppression, DWI b 0/500.
    SiteProfile("A", "GE", 1.5, SequenceGrid((1.48, 1.48, 6.0), FOV), SequenceGrid((1.40, 1.40, 6.0), FOV),
                SequenceGrid((2.97, 2.97, 6.0), FOV), (0.0, 500.0), 1.0, 0.12, 0.025, 0.06, 0.0,
                (1.0, 1.5, 3.0), 2.0, gre=Gre(150.0, 4.4, 70.0), fse=Fse(1400.0, 85.0, False), epi=Epi(4000.0, 60.0)),
    # Siemens 3 T: 3-D VIBE in-phase, fat-saturated HASTE, DWI b 50/800; B1 falls off at 3 T (Roberts, MRM 2021).
    SiteProfile("B", "Siemens", 3.0, SequenceGrid((1.30, 1.30, 5.0), FOV), SequenceGrid((1.19, 1.19, 6.0), FOV),
                SequenceGrid((2.60, 2.60, 6.0), FOV), (50.0, 800.0), 8.0, 0.25, 0.02, 0.05, -0.05,
                (1.0, 1.5, 3.5), 3.0, gre=Gre(3.9, 2.46, 9.0), fse=Fse(1200.0, 95.0, True), epi=Epi(5000.0, 57.0),
                b1_sd=0.08, b1_gradient=0.12),
    # Philips 1.5 T: 2-D FFE, respiratory-triggered fat-suppressed TSE (long TR), DWI b 0/600.
    SiteProfile("C", "Philips", 1.5, SequenceGrid((1.56, 1.56, 6.0), FOV), SequenceGrid((1.25, 1.25, 7.0), FOV),
                SequenceGrid((3.13, 3.13, 7.0), FOV), (0.0, 600.0), 0.35, 0.15, 0.03, 0.07, 0.06,
                (1.0, 1.5, 3.0), 2.5, gre=Gre(180.0, 4.6, 80.0), fse=Fse(3000.0, 80.0, True), epi=Epi(3500.0, 70.0)),
    # Siemens 1.5 T: 2-D FLASH, HASTE, DWI b 50/400/800.
    SiteProfile("D", "Siemens", 1.5, SequenceGrid((1.37, 1.37, 6.0), FOV), SequenceGrid((1.37, 1.37, 6.0), FOV),
                SequenceGrid((2.73, 2.73, 6.0), FOV), (50.0, 400.0, 800.0), 3.0, 0.15, 0.025, 0.06, 0.03,
                (1.0, 1.5, 3.0), 2.0, gre=Gre(120.0, 4.8, 65.0), fse=Fse(1000.0, 90.0, False), epi=Epi(4500.0, 65.0)),
    # GE 3 T (external): 3-D LAVA in-phase, SSFSE, DWI b 0/800; held-out anatomy.
    SiteProfile("E", "GE", 3.0, SequenceGrid((1.41, 1.41, 6.0), FOV), SequenceGrid((1.33, 1.33, 6.0), FOV),
                SequenceGrid((2.81, 2.81, 6.0), FOV), (0.0, 800.0), 20.0, 0.25, 0.025, 0.06, -0.04,
                (1.0, 1.5, 3.5), 3.0, gre=Gre(4.2, 2.3, 12.0), fse=Fse(1500.0, 90.0, False), epi=Epi(6000.0, 62.0),
                b1_sd=0.08, b1_gradient=0.12, held_out_anatomy=True),
)}
