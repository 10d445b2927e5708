"""Signal equations and acquisition of one sequence from the anatomy (../shared/PHANTOM.md).

Acquisition = signal on the fine grid → breath-hold shift (and EPI distortion for DWI) →
partial-volume blur and resampling onto the sequence's own grid (SimpleITK) → smooth
multiplicative bias field → vendor intensity scale → Rician noise.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .. import spatial
from . import tissues as T
from .anatomy import Anatomy, Grid
from .sites import SequenceGrid, SiteProfile

T2STAR_OVER_T2 = 0.6       # ours: T2* ≈ 0.6 T2 for the in-phase GRE echo
FSE_TR_MS = 2000.0          # effective TR of a single-shot FSE
DWI_TR_MS = 3000.0
FAT_SUPPRESSION = 0.05      # residual fat signal with fat saturation
FLOW_VOID = 0.12            # flowing blood on single-shot FSE and at b > 0 (our choice)


def _flags(anat: Anatomy, attr: str) -> np.ndarray:
    lut = np.zeros(256, bool)
    for t in T.TISSUES.values():
        lut[t.label] = getattr(t, attr)
    return lut[anat.labels]


def t1w_signal(anat: Anatomy, site: SiteProfile) -> np.ndarray:
    """Spoiled GRE, in-phase echo: PD · sin α (1 − E1) / (1 − cos α E1) · e^(−TE/T2*)."""
    a = np.deg2rad(site.flip_deg)
    e1 = np.exp(-site.tr_gre_ms / anat.t1)
    return anat.pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-site.te_gre_ms / (T2STAR_OVER_T2 * anat.t2))


def t2w_signal(anat: Anatomy, site: SiteProfile) -> np.ndarray:
    """Single-shot FSE: PD (1 − e^(−TR/T1)) e^(−TE/T2); flowing blood is dark."""
    s = anat.pd * (1 - np.exp(-FSE_TR_MS / anat.t1)) * np.exp(-site.te_fse_ms / anat.t2)
    return np.where(_flags(anat, "flow_void"), s * FLOW_VOID, s)


def dwi_signal(anat: Anatomy, site: SiteProfile, b: float) -> np.ndarray:
    """Fat-suppressed EPI: S_b = S_0 e^(−b · ADC), with the vendor's ADC bias."""
    s0 = anat.pd * (1 - np.exp(-DWI_TR_MS / anat.t1)) * np.exp(-site.te_dwi_ms / anat.t2)
    s0 = np.where(_flags(anat, "fat_suppressed_dwi"), s0 * FAT_SUPPRESSION, s0)
    s = s0 * np.exp(-b * anat.adc * 1e-3 * (1 + site.adc_bias))
    if b > 0:
        s = np.where(_flags(anat, "flow_void"), s * FLOW_VOID, s)
    return s


def grid_image(grid: Grid, array=None) -> sitk.Image:
    if array is None:
        return spatial.grid_image(grid.origin, grid.spacing, grid.shape_xyz)
    img = sitk.GetImageFromArray(array.astype(np.float32))
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
    """Smooth multiplicative field exp(amplitude · p(x, y, z)), p a random quadratic in [-1, 1]."""
    x, y, z = target.axes()
    u, v, w = x / 200.0, y / 150.0, (z - 55.0) / 120.0
    c = rng.normal(size=7)
    p = c[0] * u + c[1] * v + c[2] * w + c[3] * u * v + c[4] * u ** 2 + c[5] * v ** 2 + c[6] * w ** 2
    p = p / (np.abs(p).max() + 1e-9)
    return np.exp(amplitude * p).astype(np.float32)


def add_rician(arr: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    return np.sqrt((arr + rng.normal(0, sd, arr.shape)) ** 2 + rng.normal(0, sd, arr.shape) ** 2).astype(np.float32)


def acquire(anat: Anatomy, signal: np.ndarray, site: SiteProfile, seq: SequenceGrid, shift_mm,
            noise_sd: float, rng: np.random.Generator, distortion_mm: float = 0.0,
            bias: np.ndarray | None = None, centre=(0.0, 0.0, 55.0)) -> sitk.Image:
    """One acquired 3-D image of ``signal`` on the sequence grid, in vendor units.

    ``noise_sd`` is in signal units (before the vendor scale), so all b-values of one DWI share it.
    """
    target = sequence_grid(seq, centre)
    img = resample(grid_image(anat.grid, signal), target, _motion(shift_mm, distortion_mm, grid_image(target)))
    arr = sitk.GetArrayFromImage(img)
    if bias is None:
        bias = bias_field(target, site.bias_amplitude, rng)
    arr = add_rician(arr * bias, noise_sd, rng) * (1000.0 * site.intensity_scale)
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(img)
    return out
