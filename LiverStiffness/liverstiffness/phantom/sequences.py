"""Signal equations and acquisition of one sequence from the anatomy (docs/phantom.md).

Each voxel holds water and fat (proton-density fat fraction): the signal is the sum of the two
compartments' signals, the fat one suppressed where the sequence suppresses fat (DWI always, T2w
at some sites). Acquisition = signal on the fine grid → breath-hold shift (and EPI distortion for
DWI) → partial-volume blur and resampling onto the sequence's own grid (SimpleITK) → smooth
multiplicative receive-bias field → vendor intensity scale → Rician noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .. import spatial
from . import tissues as T
from .anatomy import Anatomy, Grid
from .disease import T2STAR_OVER_T2
from .sites import SequenceGrid, SiteProfile

FAT_SUPPRESSION = 0.05      # residual fat signal with fat saturation / SPAIR
FLOW_VOID = 0.12            # flowing blood on single-shot FSE and at b > 0 (our choice)
# Receiver gain and vendor auto-scaling change an exam's raw intensities (ours: ±20 % per series),
# which is why raw signal means are not comparable between exams even at one site.
GAIN_LOG_SD = 0.2
# Cardiac pulsation dephases the left lobe's signal at high b (a well-known DWI artefact that
# inflates its ADC): up to this fraction lost at b ≥ 500, fading over ~5 cm (ours).
CARDIAC_LOSS_MAX = 0.45
CARDIAC_REACH_MM = 50.0
FAT = T.TISSUES["fat"]


@dataclass
class ExamPhysics:
    """Exam-level scanner state (differs between repeat exams of one person)."""

    b1: float = 1.0              # transmit scale: actual / nominal flip angle at the body's centre
    b1_lr: float = 0.0           # relative left-right B1 change across ±200 mm
    adc_scale: float = 1.0       # ADC calibration of this exam (all tissues)
    perfusion: float = 1.0       # splanchnic perfusion share of liver and spleen ADC (fasting state)
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)   # receiver gain / scaling of T1w, T2w, DWI
    cardiac_loss: float = 0.0    # DWI signal lost near the heart (left lobe) at high b

    @classmethod
    def sample(cls, site: SiteProfile, rng: np.random.Generator) -> ExamPhysics:
        from .disease import EXAM_ADC_SD, PERFUSION_ADC_SD
        centre = 1.0 if site.field_t < 2.25 else 0.92    # 3 T bodies see less B1 than nominal
        # The perfusion (IVIM) share of ADC is larger when the low b-value is 0 than when it is 50.
        ivim = 1.0 if min(site.b_values) < 25 else 0.6
        return cls(b1=float(np.clip(rng.normal(centre, site.b1_sd), 0.6, 1.2)),
                   b1_lr=float(rng.uniform(-1, 1) * site.b1_gradient),
                   adc_scale=float(np.clip(rng.normal(1.0, EXAM_ADC_SD), 0.75, 1.25)),
                   perfusion=float(np.clip(rng.normal(1.0, ivim * PERFUSION_ADC_SD), 0.75, 1.25)),
                   gain=tuple(float(g) for g in np.exp(rng.normal(0, GAIN_LOG_SD, 3))),
                   cardiac_loss=float(rng.uniform(0.0, CARDIAC_LOSS_MAX)))


def _flow_void(anat: Anatomy) -> np.ndarray:
    lut = np.zeros(256, bool)
    for t in T.TISSUES.values():
        lut[t.label] = t.flow_void
    return lut[anat.labels]


def _gre(t1, t2star, site: SiteProfile, flip_rad) -> np.ndarray:
    e1 = np.exp(-site.gre.tr_ms / t1)
    return np.sin(flip_rad) * (1 - e1) / (1 - np.cos(flip_rad) * e1) * np.exp(-site.gre.te_ms / t2star)


def t1w_signal(anat: Anatomy, site: SiteProfile, phys: ExamPhysics | None = None) -> np.ndarray:
    """Spoiled GRE, in-phase echo: PD · sin α (1 − E1) / (1 − cos α E1) · e^(−TE/T2*), water + fat;
    the flip angle follows the exam's B1 (with a left-right gradient)."""
    phys = phys or ExamPhysics()
    x, _, _ = anat.grid.axes()
    flip = np.deg2rad(site.gre.flip_deg) * phys.b1 * (1 + phys.b1_lr * np.clip(x / 200.0, -1, 1))
    t2s_w = 1.0 / (1.0 / (T2STAR_OVER_T2 * anat.t2) + anat.r2star_extra / 1000.0)
    t2s_f = 1.0 / (1.0 / (T2STAR_OVER_T2 * FAT.t2(site.field_t)) + anat.r2star_extra / 1000.0)
    ff = anat.fat_fraction
    water = _gre(anat.t1, t2s_w, site, flip)
    fat = _gre(FAT.t1(site.field_t), t2s_f, site, flip)
    return (anat.pd * ((1 - ff) * water + ff * fat)).astype(np.float32)


def t2w_signal(anat: Anatomy, site: SiteProfile, phys: ExamPhysics | None = None) -> np.ndarray:
    """(Single-shot) FSE: PD (1 − e^(−TR/T1)) e^(−TE/T2), water + (suppressed) fat; flowing blood dark."""
    tr, te = site.fse.tr_ms, site.fse.te_ms
    water = (1 - np.exp(-tr / anat.t1)) * np.exp(-te / anat.t2)
    fat = (1 - np.exp(-tr / FAT.t1(site.field_t))) * np.exp(-te / FAT.t2(site.field_t))
    if site.fse.fat_sat:
        fat = fat * FAT_SUPPRESSION
    ff = anat.fat_fraction
    s = anat.pd * ((1 - ff) * water + ff * fat)
    return np.where(_flow_void(anat), s * FLOW_VOID, s).astype(np.float32)


def dwi_signal(anat: Anatomy, site: SiteProfile, b: float, phys: ExamPhysics | None = None) -> np.ndarray:
    """Fat-suppressed EPI: S_b = S_0 e^(−b · ADC), with the vendor's and the exam's ADC scale."""
    phys = phys or ExamPhysics()
    tr, te = site.epi.tr_ms, site.epi.te_ms
    scale = (1 + site.adc_bias) * phys.adc_scale
    adc = anat.adc
    if phys.perfusion != 1.0:
        perfused = (anat.labels == T.TISSUES["liver"].label) | (anat.labels == T.TISSUES["spleen"].label)
        adc = np.where(perfused, adc * phys.perfusion, adc)
    water = (1 - np.exp(-tr / anat.t1)) * np.exp(-te / anat.t2) * np.exp(-b * adc * 1e-3 * scale)
    fat = (1 - np.exp(-tr / FAT.t1(site.field_t))) * np.exp(-te / FAT.t2(site.field_t)) * FAT_SUPPRESSION
    ff = anat.fat_fraction
    s = anat.pd * ((1 - ff) * water + ff * fat)
    if b > 0:
        s = np.where(_flow_void(anat), s * FLOW_VOID, s)
        if phys.cardiac_loss > 0:
            s = s * (1 - phys.cardiac_loss * min(b / 500.0, 1.0) * _near_heart(anat))
    return s.astype(np.float32)


def _near_heart(anat: Anatomy) -> np.ndarray:
    """Weight 1 at the top of the liver's left lobe (under the heart), fading with distance."""
    idx = np.argwhere(anat.liver)
    pts = anat.grid.points(idx)
    sel = (pts[:, 0] > np.percentile(pts[:, 0], 80)) & (pts[:, 2] > np.percentile(pts[:, 2], 50))
    c = pts[sel].mean(0) if sel.any() else pts.mean(0)
    x, y, z = anat.grid.axes()
    d2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
    return np.exp(-d2 / (2 * CARDIAC_REACH_MM ** 2)).astype(np.float32)


def grid_image(grid: Grid, array=None) -> sitk.Image:
    if array is None:
        return spatial.grid_image(grid.origin, grid.spacing, grid.shape_xyz)
    img = sitk.GetImageFromArray(array if array.dtype == np.uint8 else array.astype(np.float32))
    img.SetOrigin(grid.origin)
    img.SetSpacing(grid.spacing)
    return img


def sequence_grid(seq: SequenceGrid, centre) -> Grid:
    return Grid.covering(seq.fov, centre, seq.spacing)


def _motion(shift_mm, distortion_mm: float, reference: sitk.Image) -> sitk.Transform:
    """Maps a point of the acquired image to the anatomy: the organs appear moved by +shift."""
    moves = sitk.CompositeTransform(3)
    moves.AddTransform(sitk.TranslationTransform(3, [-float(s) for s in shift_mm]))
    if distortion_mm:
        # EPI distortion along phase encoding (y, anterior-posterior), smooth over x and z.
        lo, hi = spatial.bbox_mm(reference)
        shape_xyz = (24, 4, 16)
        coarse = spatial.grid_image(lo, (hi - lo) / (np.array(shape_xyz) - 1), shape_xyz)
        arr = np.zeros((16, 4, 24, 3))
        xs = np.linspace(0, np.pi, 24)[None, None, :]
        zs = np.linspace(0, np.pi, 16)[:, None, None]
        arr[..., 1] = distortion_mm * np.sin(xs) * np.sin(zs)
        field = sitk.GetImageFromArray(arr, isVector=True)
        field.CopyInformation(coarse)
        moves.AddTransform(sitk.DisplacementFieldTransform(field))
    return moves


def resample(signal: sitk.Image, target: Grid, transform: sitk.Transform | None = None) -> sitk.Image:
    """Resample onto ``target``, blurring first to mimic the voxel's partial-volume average."""
    return spatial.resample_like(signal, grid_image(target), transform)


def bias_field(target: Grid, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative receive field exp(amplitude · p): phased-array coils see the body's
    surface brighter than its centre (a radial term) plus a random tilt, p scaled to [-1, 1]."""
    x, y, z = target.axes()
    u, v, w = x / 200.0, y / 150.0, (z - 55.0) / 120.0
    c = rng.normal(size=6)
    p = 0.8 * (1.0 + 0.3 * c[0]) * (u ** 2 + v ** 2) + 0.3 * (c[1] * u + c[2] * v + c[3] * w) \
        + 0.2 * (c[4] * w ** 2 + c[5] * u * v)
    p = p - p.mean()
    p = p / (np.abs(p).max() + 1e-9)
    return np.exp(amplitude * p).astype(np.float32)


def add_rician(arr: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    return np.sqrt((arr + rng.normal(0, sd, arr.shape)) ** 2 + rng.normal(0, sd, arr.shape) ** 2).astype(np.float32)


def acquire(anat: Anatomy, signal: np.ndarray, site: SiteProfile, seq: SequenceGrid, shift_mm,
            noise_sd: float, rng: np.random.Generator, distortion_mm: float = 0.0,
            bias: np.ndarray | None = None, centre=(0.0, 0.0, 55.0), gain: float = 1.0) -> sitk.Image:
    """One acquired 3-D image of ``signal`` on the sequence grid, in vendor units times the
    exam's receiver ``gain``.

    ``noise_sd`` is in signal units (before the vendor scale), so all b-values of one DWI share it.
    """
    target = sequence_grid(seq, centre)
    img = resample(grid_image(anat.grid, signal), target, _motion(shift_mm, distortion_mm, grid_image(target)))
    arr = sitk.GetArrayFromImage(img)
    if bias is None:
        bias = bias_field(target, site.bias_amplitude, rng)
    arr = add_rician(arr * bias, noise_sd, rng) * (1000.0 * site.intensity_scale * gain)
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(img)
    return out
