"""The latent liver state of an exam, the person-level biology around it, and what both do to
tissue parameters and organ shape.

The stiffness label depends on fibrosis and inflammation only (docs/phantom.md's simplification). Each
image marker moves with fibrosis *and* with things that are not fibrosis — a person's own healthy
baseline, fat, iron, inflammation, the exam's ADC calibration — so that, as in real patients
(docs/phantom.md "How strong each marker is"), no single liver statistic predicts stiffness well.
Several of those nuisances are shared with the spleen or with the whole exam, so that contrasts
a spatial model can read (liver against spleen, liver against muscle) keep the information the
liver's own statistics lose. Morphology (spleen size, caudate hypertrophy, right-lobe atrophy,
surface nodularity) changes mainly at F3–F4.

Units: T1/T2 in ms at 1.5 T unless noted (3 T shifts are scaled by FIELD_DISEASE_SCALE_3T), ADC in
10⁻³ mm²/s, PDFF in percent, fibrosis stage f continuous in [0, 4].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import tissues as T
from .fields import FourierField

# --- liver relaxation and diffusion (docs/phantom.md) ----------------------------------------
LIVER_T1_PER_STAGE_MS = 38.0       # +30–50 ms per stage (Hoad 2015; Heye 2012: 678 → 852 ms)
LIVER_T1_PER_INFLAMMATION_MS = 45.0
LIVER_T1_PER_PDFF_MS = -2.0        # fat lowers the water T1 slightly (docs/phantom.md)
LIVER_T2_PER_STAGE_MS = 2.6        # 46 → ~56 ms at stage 4
LIVER_T2_PER_INFLAMMATION_MS = 3.0
LIVER_ADC_PER_STAGE = -0.08        # 0.05–0.1 per stage (AJR 2009: F0 1.26 … F4 0.99)
LIVER_ADC_PER_PDFF = -0.004        # fat lowers ADC
LIVER_ADC_PER_INFLAMMATION = -0.03
FIELD_DISEASE_SCALE_3T = 1.3
# Iron (index 1 ≈ moderate overload, liver iron ~5 mg/g): R2 and R2* rise, T1 falls (docs/phantom.md:
# "iron lowers T1 and T2*"; slopes rounded from Wood et al., Blood 2005 and St Pierre et al.,
# Blood 2005 at 1.5 T; R2* doubles at 3 T).
IRON_R2_PER_UNIT = 8.0             # 1/s
IRON_R2STAR_PER_UNIT_15T = 70.0    # 1/s
IRON_T1_PER_UNIT_MS = -90.0
T2STAR_OVER_T2 = 0.6               # ours: T2* ≈ 0.6 T2 without iron

# --- person-level biology (1 SD; healthy spread between people) ------------------------------
# Healthy liver T1 spreads ±45 ms (678 ± 45 ms, Heye 2012) and ADC ±0.1–0.2 at F0 (AJR 2009). Our
# assumption: most of that spread is a person's *splanchnic* state (extracellular space,
# perfusion, blood volume), which the liver shares with the spleen (both drain to the portal
# vein) and which moves T1, T2 and ADC the way fibrosis does — so no mix of the liver's own
# values can tell it from fibrosis, while the liver-to-spleen contrast cancels it (why the
# literature normalises liver ADC and T1 by the spleen's). One SD of it shifts the liver by about
# SPLANCHNIC_STAGES fibrosis stages' worth; the rest is the liver's and the spleen's own.
SPLANCHNIC_STAGES = 1.4
LIVER_T1_SD_MS = 10.0              # the liver's own
LIVER_T2_SD_MS = 0.6
LIVER_ADC_SD = 0.025
SPLEEN_OWN_SD = 0.015              # the spleen's own T1/T2 spread, relative
SPLEEN_ADC_SD = 0.03
SPLEEN_VOLUME_LOG_SD = 0.30        # healthy spleens 100–300 mL
EXAM_ADC_SD = 0.06                 # exam-level ADC calibration, all tissues (1.5 T vs 3 T wCV 11 %)
PERFUSION_ADC_SD = 0.08            # splanchnic perfusion (fasting state, IVIM share): liver and spleen ADC

# --- morphology (docs/phantom.md; our simplifications) --------------------------------------
ADVANCED_FROM, ADVANCED_TO = 1.8, 3.4   # f where the late changes start and are complete
SPLEEN_GROWTH_ADVANCED = 0.28      # linear size at F4 (volume ×2); spleen length > 12–13 cm in cirrhosis
SPLEEN_GROWTH_PER_STAGE = 0.02     # mild growth before (portal pressure rises gradually)
CAUDATE_GROWTH_ADVANCED = 0.30     # caudate/right-lobe ratio > 0.65 in cirrhosis from ~0.45
RIGHT_LOBE_SHRINK_ADVANCED = 0.12
NODULARITY_MM_HEALTHY = 0.4        # LSN flat F0–F3, jumps at F4 (multi-institution LSN study): from f 2.3 to 3.4
NODULARITY_MM_CIRRHOSIS = 5.0
REGIONAL_FIBROSIS_SD = 0.5         # regional spread of the local stage, relative (patchy fibrosis)
BAND_FIBROSIS = 1.2                # extra stage in reticular bands at F4
MAX_STAGE_EXCESS = 1.5             # local stage at most this far above the liver's average
PERFUSION_PATCHINESS = (0.02, 0.10)  # normal regional variation, relative (ours)
# Ascites in decompensated cirrhosis: a share of F4 livers lie in a rim of free fluid (ours; about a
# third of cirrhotics in a referral cohort), 4–15 mm thick.
ASCITES_AT_F4 = 0.35
ASCITES_MM = (4.0, 15.0)


@dataclass(frozen=True)
class Markers:
    """How strongly disease and the shared splanchnic state move what the images show. The
    defaults are the values above (the default generator); a generator configuration may set
    others (``generators.py``) to test a recipe on data it was not designed on."""

    t1_per_stage_ms: float = LIVER_T1_PER_STAGE_MS
    t1_per_inflammation_ms: float = LIVER_T1_PER_INFLAMMATION_MS
    t2_per_stage_ms: float = LIVER_T2_PER_STAGE_MS
    adc_per_stage: float = LIVER_ADC_PER_STAGE
    splanchnic_stages: float = SPLANCHNIC_STAGES
    spleen_growth_advanced: float = SPLEEN_GROWTH_ADVANCED
    caudate_growth_advanced: float = CAUDATE_GROWTH_ADVANCED
    nodularity_mm_cirrhosis: float = NODULARITY_MM_CIRRHOSIS
    band_fibrosis: float = BAND_FIBROSIS


DEFAULT_MARKERS = Markers()


def splanchnic_shift(s: float, field_t: float, markers: Markers = DEFAULT_MARKERS) -> tuple[float, float, float]:
    """Liver T1 (ms), T2 (ms) and ADC shifts of the shared liver–spleen state ``s`` (SD 1): what
    ``markers.splanchnic_stages`` stages of fibrosis would do at this field. The spleen moves by
    the same relative amounts (``spleen_parameters``)."""
    k = (1.0 if field_t < 2.25 else FIELD_DISEASE_SCALE_3T) * markers.splanchnic_stages * s
    return (k * markers.t1_per_stage_ms, k * markers.t2_per_stage_ms,
            markers.splanchnic_stages * s * markers.adc_per_stage)


def advanced(f: float) -> float:
    """0 below stage 2, rising through stage 3 to 1 in cirrhosis: the weight of the late
    morphological changes. Stages here are those of the label's bands (docs/phantom.md): with
    kPa = 1.9 e^(0.33 f), f ≈ 2.4 reaches the F3 band (3.5 kPa and above) and f ≈ 2.9 the
    cirrhosis band (5 kPa)."""
    return float(np.clip((f - ADVANCED_FROM) / (ADVANCED_TO - ADVANCED_FROM), 0.0, 1.0) ** 1.5)


@dataclass
class DiseaseState:
    """Latent liver state of one exam."""

    fibrosis: float        # continuous stage f in [0, 4]
    inflammation: float    # [0, 1]
    pdff: float            # proton-density fat fraction, %
    iron: float = 0.0      # hepatic iron index (0 none, ~1 moderate overload)

    def stiffness_kpa(self, noise: float = 1.0) -> float:
        """Our simplification in docs/phantom.md, times the MRE measurement noise factor."""
        return 1.9 * np.exp(0.33 * self.fibrosis) * (1 + 0.15 * self.inflammation) * noise


@dataclass
class PersonTraits:
    """A person's own biology: stable across repeat exams, independent of the disease."""

    splanchnic: float = 0.0         # shared liver–spleen parenchymal state, SD 1 (see SPLANCHNIC_STAGES)
    liver_t1_ms: float = 0.0        # the liver's own offsets
    liver_t2_ms: float = 0.0
    liver_adc: float = 0.0
    spleen_t1: float = 1.0          # factors on the spleen's table values
    spleen_t2: float = 1.0
    spleen_adc: float = 1.0
    spleen_size: float = 1.0        # linear factor
    liver_size: float = 1.0
    caudate_size: float = 1.0
    right_lobe_size: float = 1.0
    gallbladder_size: float = 1.0   # linear (fasting distension varies)
    nodule_gain: float = 1.0        # how nodular this person's cirrhosis looks (some stay smooth)
    band_gain: float = 1.0          # how patchy this person's fibrosis is
    focal_fat: float = 0.5          # amplitude of focal fat deposition / sparing
    perfusion_patchiness: float = 0.04   # amplitude of regional perfusion differences (relative)
    spleen_iron_share: float = 0.5  # reticulo-endothelial share of the iron (spleen darkens too)
    ascites_draw: float = 1.0       # uniform draw: ascites when below the stage's risk
    ascites_amount: float = 0.5     # uniform draw: how much

    @classmethod
    def sample(cls, rng: np.random.Generator) -> PersonTraits:
        smooth_cirrhosis = rng.random() < 0.08
        return cls(
            splanchnic=float(rng.normal()),
            liver_t1_ms=rng.normal(0, LIVER_T1_SD_MS), liver_t2_ms=rng.normal(0, LIVER_T2_SD_MS),
            liver_adc=rng.normal(0, LIVER_ADC_SD),
            spleen_t1=rng.normal(1, SPLEEN_OWN_SD), spleen_t2=rng.normal(1, SPLEEN_OWN_SD),
            spleen_adc=rng.normal(1, SPLEEN_ADC_SD),
            spleen_size=float(np.exp(rng.normal(0, SPLEEN_VOLUME_LOG_SD) / 3)),
            liver_size=float(np.exp(rng.normal(0, 0.05))), caudate_size=float(np.exp(rng.normal(0, 0.08))),
            right_lobe_size=float(np.exp(rng.normal(0, 0.04))), gallbladder_size=float(np.exp(rng.normal(0.1, 0.2))),
            nodule_gain=0.25 if smooth_cirrhosis else float(np.exp(rng.normal(0, 0.25))),
            band_gain=float(np.exp(rng.normal(0, 0.35))), focal_fat=float(rng.uniform(0, 1)),
            perfusion_patchiness=float(rng.uniform(*PERFUSION_PATCHINESS)),
            spleen_iron_share=float(rng.uniform(0.2, 1.0)),
            ascites_draw=float(rng.random()), ascites_amount=float(rng.random()))


@dataclass
class Morphology:
    """Organ-size factors (linear) and surface nodularity of one exam."""

    spleen: float
    caudate: float
    right_lobe: float
    liver: float
    gallbladder: float
    nodularity_mm: float
    ascites_mm: float = 0.0


def morphology(state: DiseaseState, traits: PersonTraits, markers: Markers = DEFAULT_MARKERS) -> Morphology:
    f, a = state.fibrosis, advanced(state.fibrosis)
    # The person's ascites propensity (a uniform draw) against the stage's risk.
    ascites = traits.ascites_draw < ASCITES_AT_F4 * a
    rim = ASCITES_MM[0] + (ASCITES_MM[1] - ASCITES_MM[0]) * traits.ascites_amount
    nod = (NODULARITY_MM_HEALTHY + (markers.nodularity_mm_cirrhosis - NODULARITY_MM_HEALTHY)
           * float(np.clip((f - 2.3) / 1.1, 0, 1)))
    return Morphology(
        spleen=traits.spleen_size * (1 + SPLEEN_GROWTH_PER_STAGE * f + markers.spleen_growth_advanced * a),
        caudate=traits.caudate_size * (1 + markers.caudate_growth_advanced * a),
        right_lobe=traits.right_lobe_size * (1 - RIGHT_LOBE_SHRINK_ADVANCED * a),
        liver=traits.liver_size, gallbladder=traits.gallbladder_size, nodularity_mm=nod * traits.nodule_gain,
        ascites_mm=rim if ascites else 0.0)


@dataclass
class LiverMaps:
    """Per-voxel parameters of the liver's water compartment, its fat fraction and iron R2*."""

    t1: np.ndarray
    t2: np.ndarray
    adc: np.ndarray
    fat_fraction: np.ndarray
    r2star_extra: np.ndarray   # 1/s on top of 1/(T2STAR_OVER_T2 · T2)
    local_stage: np.ndarray


def liver_maps(state: DiseaseState, traits: PersonTraits, field_t: float, xyz: np.ndarray,
               rng: np.random.Generator, markers: Markers = DEFAULT_MARKERS) -> LiverMaps:
    """Liver parameters at the points ``xyz`` [N, 3] (mm): disease-shifted means, regional and
    reticular fibrosis, focal fat, the person's baseline and iron."""
    base = T.TISSUES["liver"]
    k = 1.0 if field_t < 2.25 else FIELD_DISEASE_SCALE_3T
    f, a = state.fibrosis, advanced(state.fibrosis)
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    # Patchy fibrosis: a regional field (2–6 cm patches, visible on the model's 6–8 mm grid) and
    # reticular bands (the septa of advanced fibrosis, 1–2 cm apart).
    regional = FourierField.random(rng, (25.0, 60.0), n=12)(x, y, z)
    bands = np.abs(FourierField.random(rng, (14.0, 28.0), n=10)(x, y, z)) < 0.35
    stage = f * (1 + REGIONAL_FIBROSIS_SD * traits.band_gain * regional) + markers.band_fibrosis * a * traits.band_gain * bands
    # Patches stay within what a liver shows: a stage or so above its average at most.
    stage = np.clip(stage, 0.3 * f, min(f + MAX_STAGE_EXCESS, 4.6))
    # Focal fat deposition and sparing: smooth, regional, independent of fibrosis.
    fat_pattern = FourierField.random(rng, (30.0, 80.0), n=10)(x, y, z)
    pdff = np.clip(state.pdff * (1 + 0.6 * traits.focal_fat * fat_pattern), 0.0, 60.0)
    # Normal regional variation (perfusion, zonal differences): better-perfused regions have
    # longer T2 and higher ADC (IVIM), and the ADC also varies on its own — patches as large as
    # fibrotic ones but without their signature (fibrosis: T2 up, ADC down, T1 up), so that a
    # liver's heterogeneity alone says little.
    normal = FourierField.random(rng, (25.0, 60.0), n=10)(x, y, z) * traits.perfusion_patchiness
    normal_adc = FourierField.random(rng, (25.0, 60.0), n=10)(x, y, z) * traits.perfusion_patchiness
    i, iron = state.inflammation, state.iron
    dt1, dt2, dadc = splanchnic_shift(traits.splanchnic, field_t, markers)
    t1 = (base.t1(field_t) + dt1
          + k * (markers.t1_per_stage_ms * stage + markers.t1_per_inflammation_ms * i
                 + LIVER_T1_PER_PDFF_MS * pdff + traits.liver_t1_ms + IRON_T1_PER_UNIT_MS * iron)) * (1 + 0.5 * normal)
    t2 = (base.t2(field_t) + dt2 + k * (markers.t2_per_stage_ms * stage + LIVER_T2_PER_INFLAMMATION_MS * i
                                         + traits.liver_t2_ms)) * (1 + normal)
    t2 = 1.0 / (1.0 / np.maximum(t2, 10.0) + IRON_R2_PER_UNIT * iron / 1000.0)
    adc = (base.adc + dadc + markers.adc_per_stage * stage + LIVER_ADC_PER_PDFF * pdff + LIVER_ADC_PER_INFLAMMATION * i
           + traits.liver_adc) * (1 + 0.6 * normal + 1.0 * normal_adc)
    r2s = IRON_R2STAR_PER_UNIT_15T * iron * (1.0 if field_t < 2.25 else 2.0)
    return LiverMaps(t1.astype(np.float32), t2.astype(np.float32), np.maximum(adc, 0.4).astype(np.float32),
                     (pdff / 100.0).astype(np.float32), np.full(len(x), r2s, np.float32), stage.astype(np.float32))


def spleen_parameters(state: DiseaseState, traits: PersonTraits, field_t: float,
                      markers: Markers = DEFAULT_MARKERS) -> tuple[float, float, float, float]:
    """Spleen T1, T2 (ms), ADC and extra R2* (1/s): the person's factors and the iron it shares."""
    base = T.TISSUES["spleen"]
    iron = state.iron * traits.spleen_iron_share
    liver = T.TISSUES["liver"]
    dt1, dt2, dadc = splanchnic_shift(traits.splanchnic, field_t, markers)
    t1f, t2f, adcf = 1 + dt1 / liver.t1(field_t), 1 + dt2 / liver.t2(field_t), 1 + dadc / liver.adc
    t1 = base.t1(field_t) * t1f * traits.spleen_t1 + IRON_T1_PER_UNIT_MS * iron
    t2 = 1.0 / (1.0 / (base.t2(field_t) * t2f * traits.spleen_t2) + IRON_R2_PER_UNIT * iron / 1000.0)
    r2s = IRON_R2STAR_PER_UNIT_15T * iron * (1.0 if field_t < 2.25 else 2.0)
    return float(t1), float(t2), float(base.adc * adcf * traits.spleen_adc), float(r2s)
