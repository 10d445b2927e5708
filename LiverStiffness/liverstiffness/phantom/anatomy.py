"""One exam's anatomy and tissue parameters, from a real-anatomy template (``atlas.py``).

A patient is a template deformed by body frame, BMI and a smooth random warp (``deform.py``) plus
person-level biology (``disease.PersonTraits``). An exam adds the disease state: organ sizes
(spleen, caudate, right lobe), a nodular liver surface, and per-voxel liver T1/T2/ADC/fat/iron
with patchy fibrosis (``disease.py``). Everything is on a fine isotropic "anatomy grid" in LPS mm
(x to the patient's left, y posterior, z superior); each sequence is then acquired from it on its
own grid (``sequences.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from . import tissues as T
from .atlas import CLASSES, LIVER_CLASSES, TRAINING, C, caudate_ratio
from .deform import FOV_CENTRE, Body, Deformation
from .disease import (
    DEFAULT_MARKERS,
    DiseaseState,
    Markers,
    PersonTraits,
    liver_maps,
    morphology,
    spleen_parameters,
)
from .fields import FourierField

__all__ = ["FOV_CENTRE", "Anatomy", "DiseaseState", "Grid", "Patient", "build_anatomy"]

# Atlas class → tissue label (tissues.TISSUES).
CLASS_TO_TISSUE = np.zeros(256, np.uint8)
for _code, _name, _tissue in CLASSES:
    CLASS_TO_TISSUE[_code] = T.TISSUES[_tissue].label
# Fat fraction of tissues that are not pure water: fat itself, and the fatty marrow of adult
# vertebrae (30–60 %; ours: 0.45).
FAT_FRACTION = {"fat": 1.0, "marrow": 0.45}
# What free fluid displaces: the peritoneal contents, not the wall, organs or retroperitoneum.
PERITONEAL = np.isin(np.arange(256), [C[n] for n in ("viscera", "visceral_fat", "bowel_gas")])
# Classes a bulging nodular liver may push into (not other organs, bone or great vessels).
SOFT = np.isin(np.arange(256), [C[n] for n in ("viscera", "visceral_fat", "fluid", "bowel_gas", "lung",
                                               "wall_muscle", "subcutaneous_fat", "air")])


@dataclass
class Patient:
    """Body habitus, anatomy and biology of one patient (stable across repeat exams)."""

    sex: str
    age: float
    bmi: float
    seed: int
    pid: str = ""                       # patient_id in the manifest
    template: int | None = None         # CHAOS case the anatomy is built from
    body: Body = field(init=False, repr=False)
    traits: PersonTraits = field(init=False, repr=False)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        if self.template is None:
            self.template = int(TRAINING[rng.integers(len(TRAINING))])
        else:
            rng.integers(len(TRAINING))   # same draws whichever way the template was chosen
        self.body = Body.sample(self.template, self.sex, self.bmi, rng)
        self.traits = PersonTraits.sample(rng)


@dataclass
class Grid:
    """An axis-aligned LPS grid (identity direction)."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    shape_xyz: tuple[int, int, int]

    @classmethod
    def covering(cls, fov_mm, centre, spacing) -> Grid:
        shape = tuple(int(np.ceil(f / s)) for f, s in zip(fov_mm, spacing))
        origin = tuple(c - (n - 1) / 2 * s for c, n, s in zip(centre, shape, spacing))
        return cls(origin, tuple(spacing), shape)

    def axes(self):
        """Physical coordinates along x, y, z, shaped for broadcasting over a [z, y, x] array."""
        x = self.origin[0] + self.spacing[0] * np.arange(self.shape_xyz[0])
        y = self.origin[1] + self.spacing[1] * np.arange(self.shape_xyz[1])
        z = self.origin[2] + self.spacing[2] * np.arange(self.shape_xyz[2])
        return x[None, None, :], y[None, :, None], z[:, None, None]

    def points(self, index_zyx: np.ndarray) -> np.ndarray:
        """LPS mm [N, 3] of voxel indices [N, 3] (z, y, x)."""
        return np.asarray(self.origin) + index_zyx[:, ::-1] * np.asarray(self.spacing)


@dataclass
class Anatomy:
    grid: Grid
    labels: np.ndarray          # [z, y, x] uint8 tissue labels (tissues.TISSUES)
    classes: np.ndarray         # [z, y, x] uint8 atlas classes (atlas.CLASSES)
    liver: np.ndarray           # [z, y, x] bool: parenchyma + intrahepatic vessels (the truth mask)
    t1: np.ndarray              # [z, y, x] float32, ms, water compartment, at the exam's field
    t2: np.ndarray
    adc: np.ndarray             # 10⁻³ mm²/s
    pd: np.ndarray              # total proton density
    fat_fraction: np.ndarray    # proton-density fat fraction (0–1)
    r2star_extra: np.ndarray    # 1/s (iron)
    truth: dict = field(default_factory=dict)
    stage: np.ndarray | None = None   # [z, y, x] float32 local fibrosis stage in the parenchyma (0 elsewhere)


def nodular_surface(cls: np.ndarray, grid: Grid, amplitude_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Move the liver surface in and out by a random field of 1–2 cm nodules (amplitude in mm)."""
    field_ = FourierField.random(rng, (10.0, 22.0), n=24)
    if amplitude_mm < 0.25 * min(grid.spacing):
        return cls          # far below a voxel: nothing would change
    liver = np.isin(cls, LIVER_CLASSES)
    sp = np.asarray(grid.spacing)[::-1]
    pad = int(np.ceil(2.5 * amplitude_mm / sp.min())) + 2
    idx = np.argwhere(liver)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, liver.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = liver[box]
    d_in = ndimage.distance_transform_edt(sub, sampling=sp)
    d_out, nearest = ndimage.distance_transform_edt(~sub, sampling=sp, return_indices=True)
    sd = np.where(sub, d_in, -d_out)
    band = np.abs(sd) < 2.5 * amplitude_mm + sp.max()
    pts = grid.points(np.argwhere(band) + lo)
    new = sub.copy()
    new[band] = sd[band] + amplitude_mm * field_(pts[:, 0], pts[:, 1], pts[:, 2]) > 0
    out = cls.copy()
    sub_cls = out[box]
    removed = sub & ~new
    r = np.nonzero(removed)
    sub_cls[removed] = sub_cls[nearest[0][r], nearest[1][r], nearest[2][r]]
    added = new & ~sub & SOFT[sub_cls]
    sub_cls[added] = C["liver"]
    return out


def ascites(cls: np.ndarray, grid: Grid, rim_mm: float) -> np.ndarray:
    """Free fluid in the peritoneal space around the liver and spleen, ``rim_mm`` thick."""
    organs = np.isin(cls, (*LIVER_CLASSES, C["spleen"]))
    idx = np.argwhere(organs)
    sp = np.asarray(grid.spacing)[::-1]
    pad = np.ceil(rim_mm / sp).astype(int) + 1
    lo, hi = np.maximum(idx.min(0) - pad, 0), np.minimum(idx.max(0) + pad + 1, cls.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    near = ndimage.distance_transform_edt(~organs[box], sampling=sp) <= rim_mm
    sub = cls[box]
    sub[near & PERITONEAL[sub]] = C["fluid"]
    return cls


def build_anatomy(patient: Patient, state: DiseaseState, field_t: float, spacing_mm: float,
                  fov_mm, rng: np.random.Generator, markers: Markers = DEFAULT_MARKERS) -> Anatomy:
    """Deform the patient's template for this exam's disease state, then attach per-voxel
    water T1/T2/ADC, proton density, fat fraction and iron R2*."""
    grid = Grid.covering(fov_mm, FOV_CENTRE, (spacing_mm,) * 3)
    morph = morphology(state, patient.traits, markers)
    cls = Deformation(patient.body, morph).warp_labels(grid.origin, grid.spacing, grid.shape_xyz)
    cls = nodular_surface(cls, grid, morph.nodularity_mm, rng)
    if morph.ascites_mm > 0:
        cls = ascites(cls, grid, morph.ascites_mm)
    lab = CLASS_TO_TISSUE[cls]
    liver = np.isin(cls, LIVER_CLASSES)

    lut = {name: np.zeros(256, np.float32) for name in ("t1", "t2", "adc", "pd", "ff")}
    for t in T.TISSUES.values():
        lut["t1"][t.label], lut["t2"][t.label] = t.t1(field_t), t.t2(field_t)
        lut["adc"][t.label], lut["pd"][t.label] = t.adc, t.pd
        lut["ff"][t.label] = FAT_FRACTION.get(t.name, 0.0)
    t1, t2, adc, pd, ff = (lut[k][lab] for k in ("t1", "t2", "adc", "pd", "ff"))
    r2s = np.zeros(lab.shape, np.float32)

    par = lab == T.TISSUES["liver"].label            # parenchyma (vessels keep blood values)
    pts = grid.points(np.argwhere(par))
    m = liver_maps(state, patient.traits, field_t, pts, rng, markers)
    t1[par], t2[par], adc[par], ff[par], r2s[par] = m.t1, m.t2, m.adc, m.fat_fraction, m.r2star_extra
    stage = np.zeros(lab.shape, np.float32)
    stage[par] = m.local_stage          # what the truth elastogram makes stiff (elastogram.py)
    spleen = lab == T.TISSUES["spleen"].label
    t1[spleen], t2[spleen], adc[spleen], r2s[spleen] = spleen_parameters(state, patient.traits, field_t, markers)

    voxel_ml = spacing_mm ** 3 / 1000.0
    spleen_z = np.flatnonzero(spleen.any(axis=(1, 2)))
    truth = {
        "fibrosis": state.fibrosis, "inflammation": state.inflammation, "pdff": state.pdff, "iron": state.iron,
        "template": patient.template,
        "liver_volume_ml": float(liver.sum() * voxel_ml),
        "spleen_volume_ml": float(spleen.sum() * voxel_ml),
        "spleen_length_mm": float((np.ptp(spleen_z) + 1) * spacing_mm) if len(spleen_z) else 0.0,
        "caudate_right_lobe_ratio": caudate_ratio(cls),
        "nodularity_mm": float(morph.nodularity_mm),
        "ascites_mm": float(morph.ascites_mm),
        "liver_t1_ms": float(np.mean(m.t1)), "liver_t2_ms": float(np.mean(m.t2)), "liver_adc": float(np.mean(m.adc)),
        "liver_stage_sd": float(np.std(m.local_stage)),
        "subcutaneous_fat_mm": patient.body.fat_mm,
    }
    return Anatomy(grid, lab, cls, liver, t1, t2, adc, pd, ff, r2s, truth, stage)
