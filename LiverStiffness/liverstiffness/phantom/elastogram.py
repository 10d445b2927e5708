"""The truth elastogram of a synthetic exam: what 2-D MR elastography would measure, and read.

MRE acquires a few thick axial slices through the liver's widest part (``N_SLICES`` of
``SLICE_MM``, in-plane about ``INPLANE_MM``); the wave inversion gives a stiffness map (kPa) and a
confidence mask (docs/phantom.md, "The elastogram behind the number"). Here:

- **stiffness where the images have disease**: the local fibrosis stage that moves this exam's
  T1, T2 and ADC voxel by voxel (``disease.liver_maps``: patches, reticular bands at F4, lobar
  differences from the anatomy's caudate and right-lobe changes) becomes a local stiffness by the
  label's own relation, 1.9 · e^(0.33 f) · (1 + 0.15 · inflammation);
- **what the inversion does**: it smooths over about a centimetre (a Gaussian of ``INVERSION_SIGMA_MM``
  within the parenchyma, then the slice's thickness), adds correlated noise (``VOXEL_NOISE_SD``),
  and fails at the liver edge, at large vessels and where the waves from the driver (anterior, on
  the patient's right) have faded: there the values are erratic (``ARTEFACT_SD``) and the
  confidence mask is 0;
- **what a reader reports**: the mean over the confident liver on the slices (``reader_roi``;
  readers draw their ROIs about 1 cm inside the edge, away from vessels and low-confidence areas).
  The map is scaled so that this mean *is* the exam's label (with its 8 % test–retest noise): the
  label keeps its published stage–stiffness relation and every cohort made before keeps its
  labels, while the map carries the regional pattern of the local stage;
- the MRE is its own breath-hold: its grid is shifted against the T1w like the T2w's.

Everything here draws from its own random stream (``cohort._run``), so the images of an exam are
the same with and without its elastogram.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from . import tissues as T
from .atlas import C
from .fields import FourierField

N_SLICES = 4                  # axial MRE slices (typical protocol: 4 × 10 mm)
SLICE_MM = 10.0
INPLANE_MM = 4.0              # 3–4 mm in-plane (docs/phantom.md)
INVERSION_SIGMA_MM = 4.0      # the inversion's smoothing (FWHM ≈ 9 mm, about a sixth of the 60 Hz wavelength)
VOXEL_NOISE_SD = 0.10         # correlated log-noise of the map; the ROI mean averages it to ~1 %
NOISE_WAVELENGTH_MM = (15.0, 40.0)
ARTEFACT_SD = 0.35            # log-noise where the inversion fails (edge, vessels, low amplitude)
EDGE_MM = 8.0                 # confidence excludes this far from the liver edge (readers: ~1 cm inside)
VESSEL_MM = 4.0               # ... and this far from large intrahepatic vessels
ATTENUATION_MM = 120.0        # wave amplitude falls e-fold over this distance from the driver
MIN_AMPLITUDE = 0.2           # below it the inversion is unreliable (left lobe far from the driver)
BACKGROUND_KPA = 2.5          # other tissues on the slices (muscle, spleen, bowel: 2–4 kPa), for display
SLAB_JITTER_MM = 5.0          # how far the technologist's slab misses the liver's widest level


@dataclass
class Elastogram:
    kpa: sitk.Image            # [slices, y, x] float32, kPa
    confidence: sitk.Image     # uint8, 1 where the inversion is reliable
    liver_fraction: np.ndarray  # [slices, y, x] the truth liver's share of each MRE voxel
    roi: np.ndarray            # [slices, y, x] bool: the reader's ROI (confident liver)
    roi_mean_kpa: float


def local_stiffness_kpa(stage: np.ndarray, inflammation: float) -> np.ndarray:
    """The label's relation (disease.DiseaseState.stiffness_kpa) at each voxel's local stage."""
    return 1.9 * np.exp(0.33 * stage) * (1 + 0.15 * inflammation)


def _slab_weights(z_centres: np.ndarray, plane_z: np.ndarray, spacing: float) -> np.ndarray:
    """[slices, planes] share of each anatomy plane inside each MRE slice (overlap length)."""
    lo, hi = plane_z - spacing / 2, plane_z + spacing / 2
    s_lo, s_hi = z_centres[:, None] - SLICE_MM / 2, z_centres[:, None] + SLICE_MM / 2
    return np.clip(np.minimum(hi, s_hi) - np.maximum(lo, s_lo), 0, None) / spacing


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k × k in-plane blocks of [slices, y, x] (edges cropped to a multiple of k)."""
    s, ny, nx = a.shape
    a = a[:, :ny - ny % k, :nx - nx % k]
    return a.reshape(s, ny // k, k, nx // k, k).mean(axis=(2, 4))


def simulate(anat, inflammation: float, label_kpa: float, shift_mm, rng: np.random.Generator) -> Elastogram:
    """The elastogram of ``anat`` (``anatomy.Anatomy`` with its ``stage`` map), scaled so that the
    reader's ROI mean equals ``label_kpa``."""
    g = anat.grid
    sp = float(g.spacing[0])
    par = anat.labels == T.TISSUES["liver"].label
    liver = anat.liver
    vessel = anat.classes == C["hepatic_vessel"]
    body = ~np.isin(anat.classes, (C["air"], C["bowel_gas"], C["lung"]))
    _, _, z_axis = g.axes()
    plane_z = z_axis[:, 0, 0]
    # The slab: centred on the liver's widest axial level, as the technologist places it.
    area = liver.sum(axis=(1, 2))
    z0 = float(plane_z[int(np.argmax(area))] + rng.normal(0, SLAB_JITTER_MM))
    centres = z0 + (np.arange(N_SLICES) - (N_SLICES - 1) / 2) * SLICE_MM
    w = _slab_weights(centres, plane_z, sp)
    used = np.flatnonzero(w.sum(0) > 0)
    lo, hi = max(used.min() - 3, 0), min(used.max() + 4, len(plane_z))
    w = w[:, lo:hi]
    sl = slice(lo, hi)
    # Local stiffness, smoothed within the parenchyma as the inversion does (normalised convolution).
    k_local = np.where(par[sl], local_stiffness_kpa(anat.stage[sl], inflammation), 0.0)
    sigma = INVERSION_SIGMA_MM / sp
    num = ndimage.gaussian_filter(k_local * par[sl], sigma)
    den = ndimage.gaussian_filter(par[sl].astype(np.float64), sigma)

    def slab(a):     # anatomy planes → MRE slices (the slice's thickness), then in-plane blocks
        out = np.tensordot(w, a, axes=(1, 0)) / w.sum(1)[:, None, None]
        return _block_mean(out, max(1, int(round(INPLANE_MM / sp))))
    num_s, den_s = slab(num), slab(den)
    liver_f, par_f = slab(liver[sl].astype(np.float64)), slab(par[sl].astype(np.float64))
    vessel_f, body_f = slab(vessel[sl].astype(np.float64)), slab(body[sl].astype(np.float64))
    stiff = np.where(den_s > 1e-3, num_s / np.maximum(den_s, 1e-3), BACKGROUND_KPA)
    k = max(1, int(round(INPLANE_MM / sp)))
    spacing = (sp * k, sp * k, SLICE_MM)
    origin = (g.origin[0] + (k - 1) * sp / 2, g.origin[1] + (k - 1) * sp / 2, float(centres[0]))
    ns, ny, nx = stiff.shape
    x = origin[0] + spacing[0] * np.arange(nx)[None, None, :]
    y = origin[1] + spacing[1] * np.arange(ny)[None, :, None]
    z = centres[:, None, None]
    x, y, z = np.broadcast_arrays(x, y, z)
    noise = FourierField.random(rng, NOISE_WAVELENGTH_MM, n=12)(x, y, z)
    erratic = FourierField.random(rng, (8.0, 20.0), n=12)(x, y, z)
    background = FourierField.random(rng, (30.0, 80.0), n=8)(x, y, z)
    modulation = FourierField.random(rng, (60.0, 120.0), n=6)(x, y, z)
    # Where the inversion fails: near the edge (either side), near large vessels, low wave amplitude.
    in_liver = liver_f >= 0.5
    pix = spacing[0]
    d_edge = np.stack([np.where(m, ndimage.distance_transform_edt(m), ndimage.distance_transform_edt(~m))
                       for m in in_liver]) * pix
    d_vessel = np.stack([ndimage.distance_transform_edt(~(v > 0.3)) for v in vessel_f]) * pix
    xd, yd = _driver(body_f[ns // 2] > 0.5, x[0], y[0])
    amplitude = np.exp(-np.hypot(x - xd, y - yd) / ATTENUATION_MM + 0.3 * modulation)
    fails = np.maximum.reduce([np.exp(-d_edge / 5.0), np.exp(-d_vessel / 4.0), (amplitude < MIN_AMPLITUDE) * 1.0])
    liver_kpa = stiff * np.exp(VOXEL_NOISE_SD * noise + ARTEFACT_SD * fails * erratic)
    other_kpa = BACKGROUND_KPA * np.exp(0.35 * background + ARTEFACT_SD * erratic)
    share = np.clip(par_f / np.maximum(liver_f, 1e-6), 0, 1) * liver_f   # parenchyma's share of the voxel
    kpa = share * liver_kpa + (1 - share) * other_kpa
    kpa = np.where(body_f > 0.5, kpa, 0.0)
    confident = (body_f > 0.5) & (amplitude >= MIN_AMPLITUDE) & (d_edge > EDGE_MM) & (d_vessel > VESSEL_MM)
    roi = confident & in_liver & (par_f >= 0.5)
    if not roi.any():                       # a sliver of liver: the reader takes what there is
        roi = in_liver & (par_f >= 0.5)
    scale = label_kpa / float(kpa[roi].mean())
    kpa = (kpa * scale).astype(np.float32)

    def image(a, pixel_type):
        img = sitk.GetImageFromArray(a.astype(pixel_type))
        img.SetSpacing(spacing)
        img.SetOrigin(tuple(float(o + s) for o, s in zip(origin, shift_mm)))   # its own breath-hold
        return img
    return Elastogram(image(kpa, np.float32), image(confident, np.uint8), liver_f.astype(np.float32), roi,
                      float(kpa[roi].mean()))


def _driver(body: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Where the passive driver sits (mm): on the anterior body wall (the body's smallest y, LPS)
    on the patient's right (a quarter of the way across the body from low x), on one slice."""
    if not body.any():
        return float(x.min()), float(y.min())
    xd = float(np.percentile(x[body], 25))
    column = body & (np.abs(x - xd) <= 2 * (x[0, 1] - x[0, 0] if x.shape[1] > 1 else 1.0))
    return xd, float(y[column].min() if column.any() else y[body].min())


def reader_mean_kpa(kpa: np.ndarray, confidence: np.ndarray, liver: np.ndarray) -> float:
    """What a reader reports from an elastogram: the mean over the confident liver (arrays on the
    MRE grid; ``liver`` boolean)."""
    roi = (confidence > 0) & liver
    return float(kpa[roi].mean()) if roi.any() else float("nan")
