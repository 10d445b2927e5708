"""Person-level anatomy: a template deformed by body frame, BMI, a smooth random warp and organ sizes.

The deformation is a backward map from the exam's frame (LPS mm, the liver centred on
``FOV_CENTRE``) to the template, composed of, from the exam side:

1. global scaling (body frame: sex, build; the liver's height is kept within the field of view),
2. a smooth random elastic displacement (organ positions and shapes differ between people),
3. organ-specific growth or shrinkage about each organ's centre with a smooth fall-off (spleen,
   caudate lobe, right lobe, whole liver): the neighbours are pushed or pulled, as in life,
4. a radial stretch of the subcutaneous fat layer (thickness from BMI and sex).

It is evaluated on a coarse grid and applied to the template's labels with SimpleITK
(nearest neighbour through a displacement-field transform).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, lru_cache

import numpy as np
import SimpleITK as sitk

from .atlas import LIVER_CLASSES, C, Template, caudate_ratio, load_template
from .disease import Morphology
from .fields import VectorField

# The body's centre at the liver's mid-height is placed here in every exam (mm, LPS); fields of
# view are centred on it, as a technologist centres the upper abdomen.
FOV_CENTRE = (0.0, 0.0, 55.0)
COARSE_MM = 8.0                  # spacing of the displacement field (it is smooth on this scale)
TEMPLATE_FAT_MM = 12.0           # the templates' nominal subcutaneous fat (recipes/build_phantom_atlas.py)
MAX_LIVER_HEIGHT_MM = 205.0      # keeps the liver inside a 240 mm field of view with breath-hold margin
ELASTIC_WAVELENGTH_MM = (90.0, 220.0)
ELASTIC_AMPLITUDE_MM = 7.0


@dataclass(frozen=True)
class TemplateGeometry:
    """Derived once per template: organ centres (mm), sizes and the body frame."""

    anchor: np.ndarray              # placed at FOV_CENTRE: (x, y) of the body's centre, z of the liver's mid-height
    liver_centre: np.ndarray
    liver_height_mm: float
    liver_radius_mm: float
    spleen_centre: np.ndarray
    spleen_radius_mm: float
    caudate_centre: np.ndarray
    gallbladder_centre: np.ndarray
    right_lobe_centre: np.ndarray
    frame_mm: float                 # inner body width (inside the fat) at the liver's centroid
    liver_volume_ml: float
    spleen_volume_ml: float
    caudate_ratio: float

    def size_factors(self) -> tuple[float, float, float]:
        """Linear factors that bring this template's liver, spleen and caudate ratio to the
        reference (REFERENCE_*): the person's and the disease's variation is then applied on
        top, so a template's own organ sizes do not identify it."""
        return (float(np.clip((REFERENCE_LIVER_ML / self.liver_volume_ml) ** (1 / 3), 0.8, 1.25)),
                float(np.clip((REFERENCE_SPLEEN_ML / self.spleen_volume_ml) ** (1 / 3), 0.7, 1.5)),
                float(np.clip(REFERENCE_CAUDATE_RATIO / self.caudate_ratio, 0.7, 1.5)))


@cache
def geometry(case: int) -> TemplateGeometry:
    t = load_template(case)
    lab = t.labels
    liver = np.isin(lab, LIVER_CLASSES)
    kji = np.argwhere(liver)
    xyz = t.origin + kji[:, ::-1] * t.spacing
    zc = 0.5 * (xyz[:, 2].min() + xyz[:, 2].max())
    ivc_x = t.landmarks["ivc"][0]
    right = xyz[xyz[:, 0] < ivc_x]
    spleen = np.argwhere(lab == C["spleen"])
    voxel_ml = float(np.prod(t.spacing)) / 1000
    k = round((t.landmarks["liver_centroid"][2] - t.origin[2]) / t.spacing[2])
    frame = float(np.mean(t.fat_inner_mm[k, [0, t.fat_inner_mm.shape[1] // 2]]) * 2)   # along x, both sides
    kz = round((zc - t.origin[2]) / t.spacing[2])
    return TemplateGeometry(
        anchor=np.array([*t.body_centre_mm[kz], zc]), liver_centre=xyz.mean(0),
        liver_height_mm=float(np.ptp(xyz[:, 2]) + t.spacing[2]),
        liver_radius_mm=float((3 * len(kji) * voxel_ml * 1000 / (4 * np.pi)) ** (1 / 3)),
        spleen_centre=t.landmarks["spleen_centroid"],
        spleen_radius_mm=float((3 * len(spleen) * voxel_ml * 1000 / (4 * np.pi)) ** (1 / 3)),
        caudate_centre=t.landmarks["caudate_centre"], gallbladder_centre=t.landmarks["gallbladder"],
        right_lobe_centre=right.mean(0) if len(right) else xyz.mean(0),
        frame_mm=frame, liver_volume_ml=len(kji) * voxel_ml, spleen_volume_ml=len(spleen) * voxel_ml,
        caudate_ratio=caudate_ratio(lab))


@lru_cache(maxsize=4)
def _template_image(case: int) -> sitk.Image:
    t = load_template(case)
    img = sitk.GetImageFromArray(t.labels)
    img.SetOrigin(t.origin.tolist())
    img.SetSpacing(t.spacing.tolist())
    return img


REFERENCE_FRAME_MM = 290.0   # median inner body width of the 15 templates (rounded)
# Healthy adult organ sizes (rounded): liver ~1.5 L, spleen ~200 mL, caudate/right-lobe ~0.4.
REFERENCE_LIVER_ML = 1500.0
REFERENCE_SPLEEN_ML = 200.0
REFERENCE_CAUDATE_RATIO = 0.4


@dataclass
class Body:
    """The patient's shape, stable across repeat exams."""

    case: int
    scale: np.ndarray                      # global (x, y, z)
    elastic: VectorField
    fat_mm: float                          # subcutaneous fat thickness (front 1.35×, back 0.65×)

    @classmethod
    def sample(cls, case: int, sex: str, bmi: float, rng: np.random.Generator) -> Body:
        g = geometry(case)
        sex_factor = 1.04 if sex == "M" else 0.96
        target = REFERENCE_FRAME_MM * sex_factor * np.exp(rng.normal(0, 0.04))
        sxy = float(np.clip(target / g.frame_mm, 0.85, 1.15))
        sz = float(np.clip(sex_factor * np.exp(rng.normal(0, 0.04)), 0.88, 1.12))
        sz = min(sz, MAX_LIVER_HEIGHT_MM / g.liver_height_mm)
        # Subcutaneous fat grows with BMI; women carry more (our rounding of CT fat-thickness data).
        fat = (5.0 + 1.1 * (bmi - 18.0) + (3.0 if sex == "F" else 0.0)) * np.exp(rng.normal(0, 0.15))
        return cls(case, np.array([sxy * rng.normal(1, 0.02), sxy * rng.normal(1, 0.03), sz]),
                   VectorField.random(rng, ELASTIC_WAVELENGTH_MM, ELASTIC_AMPLITUDE_MM), float(np.clip(fat, 3.0, 45.0)))


def _grow(q: np.ndarray, centre, radius: float, factor: float) -> np.ndarray:
    """Backward map of a growth by ``factor`` about ``centre``: full inside ``radius``, fading to
    none at twice the radius (monotone for factors 0.8–1.6, so nothing folds)."""
    if abs(factor - 1.0) < 1e-3:
        return q
    d = q - np.asarray(centre)
    r = np.linalg.norm(d, axis=-1, keepdims=True)
    w = np.where(r <= radius, 1.0, np.where(r >= 2 * radius, 0.0, 0.5 * (1 + np.cos(np.pi * (r - radius) / radius))))
    return q - (1.0 - 1.0 / factor) * w * d


def _fat_stretch(q: np.ndarray, t: Template, gain: float) -> np.ndarray:
    """Backward map that makes the subcutaneous fat ``gain`` times as thick as the template's."""
    kz = np.clip(np.round((q[:, 2] - t.origin[2]) / t.spacing[2]).astype(int), 0, len(t.body_centre_mm) - 1)
    c = t.body_centre_mm[kz]
    dx, dy = q[:, 0] - c[:, 0], q[:, 1] - c[:, 1]
    r = np.hypot(dx, dy)
    n_ang = t.fat_inner_mm.shape[1]
    a = np.round(np.arctan2(dy, dx) / (2 * np.pi) * n_ang).astype(int) % n_ang
    r_in = t.fat_inner_mm[kz, a]
    outside = (r > r_in) & (r_in > 0)
    r_t = np.where(outside, r_in + (r - r_in) / gain, r)
    f = np.where(r > 1e-6, r_t / np.maximum(r, 1e-6), 1.0)
    out = q.copy()
    out[:, 0] = c[:, 0] + dx * f
    out[:, 1] = c[:, 1] + dy * f
    return out


@dataclass
class Deformation:
    body: Body
    morph: Morphology
    template: Template = field(init=False)

    def __post_init__(self):
        self.template = load_template(self.body.case)

    def to_template(self, p: np.ndarray) -> np.ndarray:
        """Template points (mm) of exam-frame points ``p`` [N, 3]."""
        g = geometry(self.body.case)
        u = (p - np.asarray(FOV_CENTRE)) / self.body.scale
        q = g.anchor + u + self.body.elastic(u)
        m = self.morph
        liver, spleen, caudate = g.size_factors()
        q = _grow(q, g.liver_centre, g.liver_radius_mm, liver * m.liver)
        q = _grow(q, g.right_lobe_centre, 0.55 * g.liver_radius_mm, m.right_lobe)
        q = _grow(q, g.caudate_centre, 28.0, caudate * m.caudate)
        q = _grow(q, g.spleen_centre, 1.2 * g.spleen_radius_mm, spleen * m.spleen)
        q = _grow(q, g.gallbladder_centre, 22.0, m.gallbladder)
        return _fat_stretch(q, self.template, self.body.fat_mm / TEMPLATE_FAT_MM)

    def warp_labels(self, origin, spacing, shape_xyz) -> np.ndarray:
        """The template's classes on the exam grid [z, y, x] (uint8)."""
        ref = sitk.Image([int(n) for n in shape_xyz], sitk.sitkUInt8)
        ref.SetOrigin([float(o) for o in origin])
        ref.SetSpacing([float(s) for s in spacing])
        lo = np.asarray(origin, float) - COARSE_MM
        hi = lo + np.asarray(spacing) * (np.asarray(shape_xyz) - 1) + 2 * COARSE_MM
        n = np.ceil((hi - lo) / COARSE_MM).astype(int) + 1
        axes = [lo[i] + COARSE_MM * np.arange(n[i]) for i in range(3)]
        zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        p = np.stack([xx, yy, zz], -1).reshape(-1, 3)
        disp = (self.to_template(p) - p).reshape(n[2], n[1], n[0], 3)
        field_img = sitk.GetImageFromArray(disp.astype(np.float64), isVector=True)
        field_img.SetOrigin(lo.tolist())
        field_img.SetSpacing([COARSE_MM] * 3)
        tr = sitk.DisplacementFieldTransform(field_img)
        out = sitk.Resample(_template_image(self.body.case), ref, tr, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        return sitk.GetArrayFromImage(out)
