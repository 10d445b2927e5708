"""Anatomy templates derived from 15 real abdominal MRI scans (CHAOS T2-SPIR, manual organ labels).

Each template (``atlas/chaos_NN.npz``) is a uint8 map of the classes below on an axis-aligned LPS
grid (2.5 mm), built by ``recipes/build_phantom_atlas.py``: liver, spleen and kidneys from the
manual labels; body wall, fat, spine, bowel, fluid, lung, great and intrahepatic vessels from the
T2 intensities and simple geometry; the caudate lobe as a geometric region of the liver. Beside
the labels each file keeps a few landmarks (LPS mm) and the radial profile of the subcutaneous
fat (``fat_inner_mm``/``skin_mm`` per slice and angle around ``body_centre_mm``), which the
deformation uses to vary fat thickness with BMI.

Data: CHAOS challenge, CC BY-SA 4.0 (Kavur et al., Medical Image Analysis 2021); see
``atlas/README.md``. Held-out templates (``HELD_OUT``) are used only by site E, so that exams of
the external site have livers no training exam was built from.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

ATLAS_DIR = Path(__file__).with_name("atlas")
SPACING_MM = 2.5

# Atlas classes: (code, name, tissue in tissues.TISSUES). Several classes share a tissue: the
# distinction drives the deformation (subcutaneous vs visceral fat), the liver mask (hepatic
# vessels are inside it, great vessels not) or the disease model (caudate vs the rest).
CLASSES = (
    (0, "air", "air"),
    (1, "liver", "liver"),
    (2, "spleen", "spleen"),
    (3, "kidney_right", "kidney"),
    (4, "kidney_left", "kidney"),
    (5, "wall_muscle", "muscle"),
    (6, "back_muscle", "muscle"),
    (7, "subcutaneous_fat", "fat"),
    (8, "visceral_fat", "fat"),
    (9, "bone", "marrow"),
    (10, "viscera", "viscera"),
    (11, "fluid", "fluid"),
    (12, "gallbladder", "bile"),
    (13, "lung", "lung"),
    (14, "bowel_gas", "stomach_air"),
    (15, "great_vessel", "blood"),
    (16, "hepatic_vessel", "blood"),
    (17, "caudate", "liver"),
    (18, "spinal_canal", "fluid"),
)
C = {name: code for code, name, _ in CLASSES}
LIVER_CLASSES = (C["liver"], C["caudate"], C["hepatic_vessel"])   # what the liver mask covers
N_CLASSES = len(CLASSES)

# Case numbers of the 15 CHAOS T2-SPIR scans; the last four are held out for the external site.
TRAINING = (1, 2, 3, 8, 10, 15, 19, 20, 22, 32, 33)
HELD_OUT = (5, 13, 21, 31)


@dataclass(frozen=True)
class Template:
    case: int
    labels: np.ndarray            # [z, y, x] uint8 atlas classes
    origin: np.ndarray            # LPS mm of voxel [0, 0, 0]
    spacing: np.ndarray           # mm (x, y, z)
    landmarks: dict               # name → LPS mm (liver/spleen/caudate centroids, IVC, spine …)
    body_centre_mm: np.ndarray    # [z, 2] x, y of the body's centre per slice
    fat_inner_mm: np.ndarray      # [z, n_angles] radius where subcutaneous fat begins
    skin_mm: np.ndarray           # [z, n_angles] radius of the skin

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        return self.labels.shape[::-1]

    def index_of(self, points_mm: np.ndarray) -> np.ndarray:
        """Continuous [z, y, x] indices of LPS points [..., 3]."""
        return ((points_mm - self.origin) / self.spacing)[..., ::-1]


def template_path(case: int) -> Path:
    return ATLAS_DIR / f"chaos_{case:02d}.npz"


@cache
def load_template(case: int) -> Template:
    with np.load(template_path(case)) as z:
        names = [str(n) for n in z["landmark_names"]]
        return Template(
            case=case, labels=z["labels"], origin=z["origin"].astype(float), spacing=z["spacing"].astype(float),
            landmarks=dict(zip(names, z["landmarks"].astype(float))),
            body_centre_mm=z["body_centre_mm"].astype(np.float32),
            fat_inner_mm=z["fat_inner_mm"].astype(np.float32), skin_mm=z["skin_mm"].astype(np.float32))


def pool(held_out: bool) -> tuple[int, ...]:
    """Template cases a site draws its patients' anatomy from."""
    return HELD_OUT if held_out else TRAINING


def caudate_ratio(classes: np.ndarray) -> float:
    """Linear caudate/right-lobe ratio on the axial slice through the caudate's centroid:
    caudate width against the width of the liver to its right (Harbin-like, along x), on any
    axis-aligned class map [z, y, x] with equal in-plane spacing."""
    caud = classes == C["caudate"]
    if not caud.any():
        return float("nan")
    k = int(np.round(np.argwhere(caud)[:, 0].mean()))
    xs_c = np.flatnonzero(caud[k].any(0))
    xs_l = np.flatnonzero(np.isin(classes[k], LIVER_CLASSES).any(0))
    if len(xs_c) == 0 or len(xs_l) == 0:
        return float("nan")
    right = xs_c.min() - xs_l.min()
    return float((xs_c.max() - xs_c.min() + 1) / max(right, 1))
