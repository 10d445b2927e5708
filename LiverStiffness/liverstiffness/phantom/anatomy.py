"""Analytic abdominal anatomy and the latent liver disease state of one exam.

Everything is evaluated in physical LPS coordinates (mm; x to the patient's left, y posterior,
z superior) on a fine isotropic "anatomy grid"; each sequence is then acquired from it on its own
grid (``sequences.py``). Organs are ellipsoids and capsules, painted in anatomical order; the
liver carries the disease: surface nodularity, caudate hypertrophy with right-lobe atrophy,
reticular texture, and shifted T1/T2/ADC, while the spleen enlarges.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import tissues as T

# Reference inner abdominal cavity (semi-axes, mm) for which organ positions below are written.
REF_CAVITY = (140.0, 95.0)
# Morphology (PHANTOM.md; our linear simplifications): caudate/right-lobe ratio ~0.45 healthy,
# > 0.65 in cirrhosis; spleen length ~11 cm healthy, > 12–13 cm in splenomegaly.
CAUDATE_GROWTH_PER_STAGE = 0.09
RIGHT_LOBE_SHRINK_PER_STAGE = 0.045
SPLEEN_GROWTH_PER_STAGE = 0.07
HEALTHY_CR_RATIO = 0.45
SPLEEN_HALF_LENGTH_MM = 55.0


@dataclass
class DiseaseState:
    """Latent liver state of one exam."""

    fibrosis: float        # continuous stage f in [0, 4]
    inflammation: float    # [0, 1]
    pdff: float            # proton-density fat fraction, %

    def stiffness_kpa(self, noise: float = 1.0) -> float:
        """Our simplification in PHANTOM.md, times the MRE measurement noise factor."""
        return 1.9 * np.exp(0.33 * self.fibrosis) * (1 + 0.15 * self.inflammation) * noise


@dataclass
class FourierField:
    """A smooth random field, a sum of random plane waves: deterministic at any physical point."""

    k: np.ndarray      # (n, 3) wave vectors, rad/mm
    phase: np.ndarray  # (n,)

    @classmethod
    def random(cls, rng: np.random.Generator, wavelength_mm: tuple[float, float], n: int = 16):
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength_mm, size=n)
        return cls(direction * (2 * np.pi / lam)[:, None], rng.uniform(0, 2 * np.pi, n))

    def __call__(self, x, y, z) -> np.ndarray:
        out = 0.0
        for (kx, ky, kz), ph in zip(self.k, self.phase):
            out = out + np.cos(kx * x + ky * y + kz * z + ph)
        return out * np.sqrt(2.0 / len(self.phase))  # unit variance


@dataclass
class Patient:
    """Body habitus and organ geometry of one patient (stable across repeat exams)."""

    sex: str
    age: float
    bmi: float
    seed: int
    pid: str = ""                       # patient_id in the manifest
    body_semi: tuple[float, float] = (0.0, 0.0)
    fat_mm: float = 0.0
    organ_scale: float = 1.0

    def __post_init__(self):
        sex_factor = 1.04 if self.sex == "M" else 0.97
        self.body_semi = (150.0 * (self.bmi / 25.0) ** 0.35 * sex_factor,
                          108.0 * (self.bmi / 25.0) ** 0.45 * sex_factor)
        self.fat_mm = float(np.clip(6.0 + 1.0 * (self.bmi - 18.0), 4.0, 40.0))
        rng = np.random.default_rng(self.seed)
        self.organ_scale = float(np.clip(rng.normal(1.0, 0.06), 0.85, 1.15)) * sex_factor

    @property
    def cavity_semi(self) -> tuple[float, float]:
        wall = self.fat_mm + 10.0  # subcutaneous fat + abdominal wall muscle
        return self.body_semi[0] - wall, self.body_semi[1] - wall


@dataclass
class Grid:
    """An axis-aligned LPS grid (identity direction)."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    shape_xyz: tuple[int, int, int]

    @classmethod
    def covering(cls, fov_mm, centre, spacing) -> "Grid":
        shape = tuple(int(np.ceil(f / s)) for f, s in zip(fov_mm, spacing))
        origin = tuple(c - (n - 1) / 2 * s for c, n, s in zip(centre, shape, spacing))
        return cls(origin, tuple(spacing), shape)

    def axes(self):
        """Physical coordinates along x, y, z, shaped for broadcasting over a [z, y, x] array."""
        x = self.origin[0] + self.spacing[0] * np.arange(self.shape_xyz[0])
        y = self.origin[1] + self.spacing[1] * np.arange(self.shape_xyz[1])
        z = self.origin[2] + self.spacing[2] * np.arange(self.shape_xyz[2])
        return x[None, None, :], y[None, :, None], z[:, None, None]


@dataclass
class Anatomy:
    grid: Grid
    labels: np.ndarray          # [z, y, x] uint8 tissue labels (tissues.TISSUES)
    liver: np.ndarray           # [z, y, x] bool: parenchyma + intrahepatic vessels (the mask)
    t1: np.ndarray              # [z, y, x] float32, ms, at the exam's field strength
    t2: np.ndarray
    adc: np.ndarray             # 10⁻³ mm²/s
    pd: np.ndarray
    truth: dict = field(default_factory=dict)


# The liver is centred here in every synthetic exam (mm, LPS), which the cohort writer uses to
# centre the fields of view, as a technologist centres the abdomen.
FOV_CENTRE = (0.0, 0.0, 55.0)


def _ellipsoid(x, y, z, c, a):
    """Normalised radius minus one: < 0 inside the ellipsoid."""
    return np.sqrt(((x - c[0]) / a[0]) ** 2 + ((y - c[1]) / a[1]) ** 2 + ((z - c[2]) / a[2]) ** 2) - 1.0


def _capsule(x, y, z, p0, p1, radius):
    """True inside a cylinder with rounded ends between p0 and p1 (mm)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0.0, 1.0)
    return (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2 < radius ** 2


def build_anatomy(patient: Patient, state: DiseaseState, field_t: float, spacing_mm: float,
                  fov_mm, rng: np.random.Generator) -> Anatomy:
    """Paint the tissues on a fine grid and attach per-voxel T1/T2/ADC/PD maps."""
    grid = Grid.covering(fov_mm, FOV_CENTRE, (spacing_mm,) * 3)
    x, y, z = grid.axes()
    shape = (grid.shape_xyz[2], grid.shape_xyz[1], grid.shape_xyz[0])
    lab = np.zeros(shape, np.uint8)  # air outside the body
    L = {name: t.label for name, t in T.TISSUES.items()}

    bx, by = patient.body_semi
    cx, cy = patient.cavity_semi
    sx, sy = cx / REF_CAVITY[0], cy / REF_CAVITY[1]
    s = patient.organ_scale
    prng = np.random.default_rng(patient.seed)  # patient anatomy: same for every exam

    def pos(px, py, pz):
        return (px * sx, py * sy, pz)

    r_body = (x / bx) ** 2 + (y / by) ** 2
    r_cavity = (x / cx) ** 2 + (y / cy) ** 2
    lab[np.broadcast_to(r_body < 1, shape)] = L["fat"]
    wall_in = (x / (cx + 10)) ** 2 + (y / (cy + 10)) ** 2
    lab[np.broadcast_to(wall_in < 1, shape)] = L["muscle"]
    lab[np.broadcast_to(r_cavity < 1, shape)] = L["viscera"]
    # Retroperitoneal fat grows with BMI: a posterior fat band in the cavity.
    lab[np.broadcast_to((r_cavity < 1) & (y > cy * (0.55 - 0.004 * (patient.bmi - 25))), shape)] = L["fat"]
    # Lungs above the diaphragm dome (higher laterally).
    dome = 138.0 + 0.0025 * x ** 2 + prng.normal(0, 4)
    lab[(np.broadcast_to(r_cavity < 1, shape)) & (z > dome)] = L["lung"]
    # Spine and paraspinal muscles.
    spine_c = (0.0, cy - 20.0)
    lab[np.broadcast_to(((x - spine_c[0]) ** 2 + (y - spine_c[1]) ** 2) < 20.0 ** 2, shape)] = L["marrow"]
    for side in (-1, 1):
        para = ((x - side * 38.0) / 22.0) ** 2 + ((y - (cy + 5.0)) / 28.0) ** 2 < 1
        lab[np.broadcast_to(para, shape)] = L["muscle"]
    # Stomach with an air pocket (left upper quadrant, below the left lobe).
    lab[_ellipsoid(x, y, z, pos(55, -25, 25), (38 * s, 30 * s, 32)) < 0] = L["viscera"]
    lab[_ellipsoid(x, y, z, pos(55, -40, 40), (22 * s, 14 * s, 16)) < 0] = L["stomach_air"]

    # Liver: right lobe, left lobe and caudate, with disease-dependent morphology.
    f = state.fibrosis
    rl = (1.0 - RIGHT_LOBE_SHRINK_PER_STAGE * f) * s
    cd = (1.0 + CAUDATE_GROWTH_PER_STAGE * f) * s
    q = np.minimum.reduce([
        _ellipsoid(x, y, z, pos(-65, 5, 60), (60 * rl, 75 * rl, 75 * rl)),
        _ellipsoid(x, y, z, pos(5, -40, 82), (50 * s, 35 * s, 40 * s)),
        _ellipsoid(x, y, z, pos(-18, 30, 80), (20 * cd, 18 * cd, 30 * cd)),
    ])
    nodules = FourierField.random(rng, (9.0, 16.0), n=12)
    nod_amp = 0.008 + 0.012 * f ** 1.5           # normalised radius units; ~8 mm at f = 4
    band = np.abs(q) < 0.3                         # only near the surface (saves time)
    q_band = q[band]
    X, Y, Z = np.broadcast_arrays(x, y, z)
    q[band] = q_band + nod_amp * nodules(X[band], Y[band], Z[band])
    liver = q < 0
    lab[liver] = L["liver"]
    # Gallbladder under the inferior surface of the liver.
    gb = _ellipsoid(x, y, z, pos(-40, -45, 5), (16 * s, 14 * s, 30 * s)) < 0
    # Intrahepatic vessels (portal and hepatic veins) inside the liver mask; IVC and aorta outside.
    # Evaluated on liver voxels only: cheaper, and they are intrahepatic by definition.
    vessels = np.zeros(shape, bool)
    in_liver = (X[liver], Y[liver], Z[liver])
    hilum, ivc_top = pos(-30, 15, 45), pos(-22, 40, 125)
    v = np.zeros(len(in_liver[0]), bool)
    for end in (pos(-95, 5, 65), pos(5, -35, 85), pos(-60, -35, 40)):
        v |= _capsule(*in_liver, hilum, end, 6.0 * s)
    for end in (pos(-100, -5, 115), pos(-45, -45, 110), pos(15, -35, 110)):
        v |= _capsule(*in_liver, ivc_top, end, 5.0 * s)
    vessels[liver] = v
    lab[vessels] = L["blood"]
    ivc = np.broadcast_to(((x - ivc_top[0]) ** 2 + (y - ivc_top[1]) ** 2 < 12.0 ** 2) & (z < ivc_top[2]), shape)
    aorta = np.broadcast_to((x - 18.0 * sx) ** 2 + (y - (cy - 40.0 * sy)) ** 2 < 11.0 ** 2, shape)
    # Spleen (enlarges with portal hypertension), kidneys (indent the liver), then gallbladder.
    sp = (1.0 + SPLEEN_GROWTH_PER_STAGE * f) * s * np.clip(prng.normal(1.0, 0.05), 0.9, 1.1)
    spleen = _ellipsoid(x, y, z, pos(92, 40, 70), (30 * sp, 45 * sp, SPLEEN_HALF_LENGTH_MM * sp)) < 0
    lab[spleen] = L["spleen"]
    for side, zc in ((-1, -25.0), (1, -10.0)):
        kidney = _ellipsoid(x, y, z, pos(side * 68, 55, zc), (26 * s, 24 * s, 52 * s)) < 0
        lab[kidney] = L["kidney"]
    lab[gb] = L["bile"]
    lab[ivc | aorta] = L["blood"]
    mask = (lab == L["liver"]) | vessels & (lab == L["blood"])

    t1, t2, adc, pd = _parameter_maps(lab, field_t, state, mask, (x, y, z), rng)
    voxel_ml = spacing_mm ** 3 / 1000.0
    truth = {
        "fibrosis": state.fibrosis, "inflammation": state.inflammation, "pdff": state.pdff,
        "liver_volume_ml": float(mask.sum() * voxel_ml),
        "spleen_volume_ml": float((lab == L["spleen"]).sum() * voxel_ml),
        "spleen_length_mm": float(2 * SPLEEN_HALF_LENGTH_MM * sp),
        "caudate_right_lobe_ratio": float(HEALTHY_CR_RATIO * cd / rl),
        "nodularity_amplitude": float(nod_amp),
    }
    return Anatomy(grid, lab, mask, t1, t2, adc, pd, truth)


def liver_parameters(state: DiseaseState, field_t: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean liver T1 (ms), T2 (ms) and ADC (10⁻³ mm²/s) for this disease state and field."""
    base = T.TISSUES["liver"]
    k = 1.0 if field_t < 2.25 else T.FIELD_DISEASE_SCALE_3T
    f, i, fat = state.fibrosis, state.inflammation, state.pdff
    t1 = base.t1(field_t) + k * (T.LIVER_T1_PER_STAGE_MS * f + T.LIVER_T1_PER_INFLAMMATION_MS * i
                                 + T.LIVER_T1_PER_PDFF_MS * fat) + k * rng.normal(0, T.LIVER_T1_SD_MS)
    t2 = base.t2(field_t) + k * (T.LIVER_T2_PER_STAGE_MS * f + T.LIVER_T2_PER_INFLAMMATION_MS * i) \
        + rng.normal(0, T.LIVER_T2_SD_MS)
    adc = (base.adc + T.LIVER_ADC_PER_STAGE * f + T.LIVER_ADC_PER_PDFF * fat
           + T.LIVER_ADC_PER_INFLAMMATION * i + rng.normal(0, T.LIVER_ADC_SD))
    return float(t1), float(t2), float(max(adc, 0.5))


def _parameter_maps(lab, field_t, state, liver, xyz, rng):
    lut = {name: np.zeros(256, np.float32) for name in ("t1", "t2", "adc", "pd")}
    for t in T.TISSUES.values():
        lut["t1"][t.label], lut["t2"][t.label] = t.t1(field_t), t.t2(field_t)
        lut["adc"][t.label], lut["pd"][t.label] = t.adc, t.pd
    t1, t2, adc, pd = (lut[k][lab] for k in ("t1", "t2", "adc", "pd"))
    # Liver parenchyma: disease-shifted means, fat fraction and reticular heterogeneity.
    par = lab == T.TISSUES["liver"].label
    t1_l, t2_l, adc_l = liver_parameters(state, field_t, rng)
    h = 0.02 + 0.03 * state.fibrosis                 # reticular texture grows with fibrosis
    X, Y, Z = (np.broadcast_to(a, lab.shape)[par] for a in xyz)
    tex = [FourierField.random(rng, (5.0, 12.0), n=12)(X, Y, Z) for _ in range(3)]
    t1[par] = t1_l * (1 + 0.4 * h * tex[0])
    t2[par] = t2_l * (1 + h * tex[1])
    adc[par] = adc_l * (1 + h * tex[2])
    pd[par] = T.TISSUES["liver"].pd * (1 + 0.002 * state.pdff)
    return t1, t2, adc, pd
