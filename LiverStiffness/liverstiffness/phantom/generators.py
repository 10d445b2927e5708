"""Generator configurations: the default phantom, and a second "other hospital" that no recipe is
tuned on.

A recipe that only works on the data it was designed on is not a recipe. The ``other`` generator
differs from the default in all three things a real second hospital would change, each within the
ranges of docs/phantom.md:

- **anatomy**: another split of the 15 CHAOS templates: the held-out site E's patients are built
  on four templates the default trains on, and the default's four held-out templates are
  training templates here;
- **sequence parameters**: T2w with longer echo times and the other fat-suppression choice, GRE
  T1w with shorter TR and lower flip angles (same in-phase echoes), longer EPI echoes, b = 50
  instead of b = 0 as the lowest b-value, more noise and stronger bias fields, another ADC
  calibration offset;
- **marker strengths**: fibrosis moves T1 less and ADC more, T2 less; the shared splanchnic state
  is stronger; morphology changes less at cirrhosis.

Use: ``liverstiffness synth --generator other``. Report every recipe change on both generators
and choose nothing by the ``other`` numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .atlas import HELD_OUT, TRAINING
from .disease import DEFAULT_MARKERS, Markers
from .sites import SITES, Epi, Fse, Gre, SiteProfile


@dataclass(frozen=True)
class Generator:
    name: str
    markers: Markers
    training_templates: tuple[int, ...]       # anatomy of the training sites' patients
    held_out_templates: tuple[int, ...]       # anatomy of the held-out site's patients

    def site(self, profile: SiteProfile) -> SiteProfile:
        return profile

    def sites(self) -> dict[str, SiteProfile]:
        return {name: self.site(p) for name, p in SITES.items()}

    def templates(self, held_out: bool) -> tuple[int, ...]:
        return self.held_out_templates if held_out else self.training_templates


@dataclass(frozen=True)
class OtherHospital(Generator):
    def site(self, p: SiteProfile) -> SiteProfile:
        """Another hospital's protocols on the same kinds of scanner (docs/phantom.md "Sequences")."""
        return replace(
            p, gre=Gre(p.gre.tr_ms * 0.85, p.gre.te_ms, p.gre.flip_deg - 8.0) if p.gre.tr_ms > 20 else
            Gre(p.gre.tr_ms, p.gre.te_ms, p.gre.flip_deg - 2.0),
            fse=Fse(p.fse.tr_ms * 1.2, p.fse.te_ms + 15.0, not p.fse.fat_sat),
            epi=Epi(p.epi.tr_ms, p.epi.te_ms + 10.0),
            b_values=(50.0, *p.b_values[1:]) if p.b_values[0] == 0.0 else p.b_values,
            noise=p.noise * 1.3, dwi_noise=p.dwi_noise * 1.3, bias_amplitude=min(0.6, p.bias_amplitude * 1.3),
            adc_bias=p.adc_bias - 0.04)


GENERATORS: dict[str, Generator] = {
    "default": Generator("default", DEFAULT_MARKERS, TRAINING, HELD_OUT),
    "other": OtherHospital(
        "other",
        Markers(t1_per_stage_ms=DEFAULT_MARKERS.t1_per_stage_ms * 0.7, t2_per_stage_ms=DEFAULT_MARKERS.t2_per_stage_ms * 0.7,
                adc_per_stage=DEFAULT_MARKERS.adc_per_stage * 1.25,
                splanchnic_stages=DEFAULT_MARKERS.splanchnic_stages * 1.2,
                spleen_growth_advanced=DEFAULT_MARKERS.spleen_growth_advanced * 0.75,
                caudate_growth_advanced=DEFAULT_MARKERS.caudate_growth_advanced * 0.75,
                nodularity_mm_cirrhosis=DEFAULT_MARKERS.nodularity_mm_cirrhosis * 0.7,
                band_fibrosis=DEFAULT_MARKERS.band_fibrosis * 0.8),
        training_templates=(1, 3, 5, 8, 13, 15, 19, 21, 22, 31, 32), held_out_templates=(2, 10, 20, 33)),
}
