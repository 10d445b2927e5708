"""Registration of T2w and DWI to T1w that cannot go absurd, and the bias-field flattening it
and mask QA use.

Each sequence of an abdominal exam is its own breath-hold, so the liver moves between them:
millimetres, mostly along the body axis, up to about two centimetres. The diaphragm drifts
during a single breath-hold (0.1–7.9 mm/s at end inspiration, Holland et al., Radiology
1998;209:483–489; up to 5.6 mm in 24 s, Khot et al., Br J Radiol 2020;93:20190549) and right
hemidiaphragm positions drift by 1–18 mm over repeated breath-holds (Magn Reson Med
2014;72:850–857, table 1). A registration that claims more than :data:`MAX_SHIFT_MM` has not
found the liver: it has failed.

The registration (translation only, Mattes mutual information, two levels) runs on liver-centred
4 mm copies of both images whose smooth multiplicative bias field has been divided out
(:func:`flatten_bias`): a strong 3 T bias field otherwise pulls the fit towards bright corners.
Its result is then checked by an independent measure, the normalised-gradient-field agreement
of the two images around the liver (:func:`ngf_similarity`): it is accepted only when it is
inside the bound and agrees better than the scanner geometry does. Otherwise the scanner
geometry is kept, and the result says why, so that the report can. When the images agree
clearly better at a place beyond the bound, the sequence does not show the same liver position
at all (a wrong origin, a different exam): that is an input error, not something to correct.

Rotations are not estimated: between breath-holds of one session they are a few degrees at
most, within one model voxel (2° at 100 mm from the liver's centre is 3.5 mm; the model sees
6–8 mm voxels), and a rotation is the parameter a weak-contrast registration (a single
b = 800 DWI) gets wrong first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from . import spatial
from .errors import InputError

#: The largest breath-hold displacement between sequences a registration may claim (mm); see above.
MAX_SHIFT_MM = 20.0
#: Beyond the bound, a claim at which the images agree better than this (NGF gain over the scanner
#: geometry) means the sequence does not show the liver where the T1w does.
DISPLACED_NGF_GAIN = 0.01
#: A move is accepted only when the images agree better by more than this (NGF, 0–1): below it the
#: difference is noise (measured: moves with gains under 0.001 on single-b DWIs at 3 T were 4–7 mm
#: wrong; correct moves of 4 mm or more gained 0.003–0.045).
MIN_NGF_GAIN = 0.002
#: Below this many mm a rejected registration is not worth a warning (the scanner geometry is as good).
WARN_REJECTED_MM = 5.0
#: Width (mm) of the Gaussian that estimates the smooth bias field (organs are smaller, the field larger).
BIAS_SIGMA_MM = 30.0
GRID_MM = 4.0            # registration grid: breath-hold shifts are mm-scale, slices 5–8 mm thick
#: How far the check for a displaced sequence looks (mm), and its step. Measured on phantom exams
#: of sites A, B and a 3 T single-b DWI site: sequences moved 25–60 mm agree 16–128 % better at
#: the right place than where they are (found within one step); aligned ones at most 6 % better
#: one step away.
SEARCH_MM = 64.0
COARSE_MM = 8.0
DISPLACED_GAIN = 0.12


@dataclass
class SequenceRegistration:
    """One sequence → T1w: the transform used (T1w points → sequence points, as sitk.Resample
    wants), what the registration claimed and whether it was accepted."""

    transform: sitk.Transform
    status: str                      # "registered", "scanner geometry" or "not registered"
    claimed_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ngf_gain: float = 0.0            # agreement at the claim minus at the scanner geometry
    reason: str = ""

    @property
    def translation_mm(self) -> np.ndarray:
        return np.array(self.transform.GetTranslation() if hasattr(self.transform, "GetTranslation")
                        else self.transform.GetOffset(), float)

    def warning(self, name: str) -> str | None:
        """A line for the report when the sequence had to stay where the scanner put it."""
        if self.status != "scanner geometry":
            return None
        if self.reason.startswith("it failed"):
            return (f"{name.upper()} → T1w registration {self.reason}: the {name.upper()} was used in the scanner's "
                    "geometry, uncorrected for breath-hold differences")
        if float(np.linalg.norm(self.claimed_mm)) < WARN_REJECTED_MM:
            return None
        return (f"{name.upper()} → T1w registration rejected ({self.reason}): the {name.upper()} was used in the "
                "scanner's geometry, uncorrected for breath-hold differences")

    def to_dict(self, name: str) -> dict:
        """For the report: the translation used, the status, what was claimed, and the warning."""
        tr = self.translation_mm
        out = {"translation_mm": [round(float(v), 2) for v in tr], "rotation_deg": [0.0, 0.0, 0.0],
               "status": self.status, "claimed_mm": [round(float(v), 2) for v in self.claimed_mm],
               "ngf_gain": round(float(self.ngf_gain), 4)}
        if self.reason:
            out["reason"] = self.reason
        if self.warning(name):
            out["warning"] = self.warning(name)
        return out


def identity(status: str = "not registered") -> SequenceRegistration:
    return SequenceRegistration(sitk.Euler3DTransform(), status)


def flatten_bias(img: sitk.Image, sigma_mm: float = BIAS_SIGMA_MM, coarse: bool = False) -> sitk.Image:
    """``img`` divided by its smooth multiplicative field, estimated as a Gaussian average of the
    body's signal (background excluded, normalised by the body fraction so that edges of the body
    are not darkened). Tissue contrast at organ scale stays; a field that varies over tens of
    centimetres (3 T B1 inhomogeneity, coil sensitivity) goes. Background becomes 0.

    ``coarse``: estimate the field on blocks of up to sigma/2 (at least 8 per axis) and
    interpolate it back — a tenth of the work; the registration was validated with it (62
    sequences: median error 1.56 mm, worst 4.05 mm), the mask fit with the exact field."""
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    top = float(np.percentile(arr, 98)) if arr.size else 0.0
    body = (arr > 0.1 * top).astype(np.float32) if top > 0 else np.zeros_like(arr)

    factors = [max(1, min(int(sigma_mm / (2 * sp)), n // 8)) if coarse else 1
               for sp, n in zip(img.GetSpacing(), img.GetSize())]

    def smooth(a: np.ndarray) -> np.ndarray:
        im = sitk.GetImageFromArray(a)
        im.CopyInformation(img)
        if max(factors) == 1:
            return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(im, float(sigma_mm)))
        small = sitk.SmoothingRecursiveGaussian(sitk.BinShrink(im, factors), float(sigma_mm))
        return sitk.GetArrayFromImage(sitk.Resample(small, im, sitk.Transform(), sitk.sitkLinear, 0.0,
                                                    sitk.sitkFloat32, True))   # nearest-neighbour beyond the edge

    field = smooth(arr * body) / np.maximum(smooth(body), 1e-3)
    out = np.where(body > 0, arr / np.maximum(field, 1e-6 * max(top, 1e-12)), 0.0).astype(np.float32)
    res = sitk.GetImageFromArray(out)
    res.CopyInformation(img)
    return res


def ngf_similarity(fixed: np.ndarray, moving: np.ndarray, region: np.ndarray, spacing_zyx) -> float:
    """Normalised-gradient-field agreement of two arrays on one grid inside ``region``: the mean
    of cos² of the angle between their gradients, each damped where it is weaker than its median
    (noise). 0: unrelated; 1: every edge in the same place. Insensitive to contrast inversions
    and to smooth intensity fields, so it judges T1w against T2w or DWI alike."""
    gf = np.stack(np.gradient(fixed, *spacing_zyx))
    gm = np.stack(np.gradient(moving, *spacing_zyx))
    nf, nm = (gf ** 2).sum(0)[region], (gm ** 2).sum(0)[region]
    if nf.size == 0:
        return 0.0
    dot = (gf * gm).sum(0)[region]
    ef, em = float(np.median(nf)) or 1e-12, float(np.median(nm)) or 1e-12
    return float(np.mean(dot ** 2 / ((nf + ef) * (nm + em))))


def resample_near(img: sitk.Image, grid: sitk.Image, interpolation: str = "linear", pixel=sitk.sitkFloat32) -> sitk.Image:
    """``img`` resampled onto the coarser ``grid``: cropped to the grid's neighbourhood, averaged
    over whole blocks of voxels (a box filter of the target's size, what a larger voxel measures)
    and then resampled, anti-aliased for what is left — several times cheaper than smoothing the
    full-resolution image."""
    near = spatial.crop_to_cover(img, grid, margin_mm=3 * GRID_MM)
    if interpolation != "nearest":
        factors = [max(1, int(d // s)) for d, s in zip(grid.GetSpacing(), near.GetSpacing())]
        if max(factors) > 1 and all(n >= 2 * f for n, f in zip(near.GetSize(), factors)):
            near = sitk.BinShrink(sitk.Cast(near, sitk.sitkFloat32), factors)
    return spatial.resample_like(near, grid, interpolation=interpolation, pixel=pixel)


def _moving_grid(moving: sitk.Image, fixed: sitk.Image) -> sitk.Image:
    """``moving`` (bias flattened) on the GRID_MM grid of ``fixed`` extended by SEARCH_MM on
    every side, so that the two grids share voxel positions."""
    pad = round(SEARCH_MM / GRID_MM)
    size = [n + 2 * pad for n in fixed.GetSize()]
    origin = np.array(fixed.GetOrigin()) - pad * GRID_MM
    grid = spatial.grid_image(origin, (GRID_MM,) * 3, size)
    return flatten_bias(resample_near(moving, grid), coarse=True)


def _unit_gradients(a: np.ndarray, step_mm: float, where: np.ndarray) -> np.ndarray:
    g = np.stack(np.gradient(a, step_mm))
    n2 = (g ** 2).sum(0)
    eps = float(np.median(n2[where])) if where.any() else 0.0
    return g / np.sqrt(n2 + (eps or 1e-12))


def agreement_map(fixed: sitk.Image, region: sitk.Image, mov: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The normalised-gradient-field agreement of ``fixed`` (inside ``region``) with ``mov``
    moved by every translation up to SEARCH_MM, at COARSE_MM steps, in one pass of FFT
    correlations (the cos² of NGF expands into six products of gradient components).
    Returns the agreement [n] and the translations [n, 3] (mm, LPS; T1w point → sequence)."""
    pad = round(SEARCH_MM / GRID_MM)
    f_arr = np.zeros(sitk.GetArrayViewFromImage(mov).shape, np.float32)
    r_arr = np.zeros_like(f_arr)
    inner = tuple(slice(pad, pad + n) for n in reversed(fixed.GetSize()))
    f_arr[inner] = sitk.GetArrayViewFromImage(fixed)
    r_arr[inner] = sitk.GetArrayViewFromImage(region) > 0
    k = round(COARSE_MM / GRID_MM)

    def coarse(a: np.ndarray) -> np.ndarray:  # block means: k × k × k voxels → one
        n = [s - s % k for s in a.shape]
        a = a[:n[0], :n[1], :n[2]]
        return a.reshape(n[0] // k, k, n[1] // k, k, n[2] // k, k).mean(axis=(1, 3, 5))

    f, m, r = coarse(f_arr), coarse(sitk.GetArrayFromImage(mov)), coarse(r_arr) > 0.5
    nf = _unit_gradients(f, COARSE_MM, r) * r
    nm = _unit_gradients(m, COARSE_MM, r)
    total = np.zeros(f.shape)
    for i in range(3):
        for j in range(i, 3):
            corr = np.fft.irfftn(np.conj(np.fft.rfftn(nf[i] * nf[j])) * np.fft.rfftn(nm[i] * nm[j]), s=f.shape, axes=(0, 1, 2))
            total += (1 if i == j else 2) * corr          # corr[t] = Σ_x a(x) b(x + t)
    total /= max(int(r.sum()), 1)
    shifts_zyx = np.stack(np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n) * COARSE_MM for n in f.shape], indexing="ij"), -1)
    within = (np.abs(shifts_zyx) <= SEARCH_MM).all(-1)
    return total[within], shifts_zyx[within][:, ::-1]


def _check_not_displaced(fixed: sitk.Image, region: sitk.Image, mov: sitk.Image, name: str,
                         max_shift_mm: float) -> None:
    """InputError when the sequence agrees clearly best with the T1w at a place beyond the
    breath-hold bound (a wrong origin or a different exam), which no bounded search can reach."""
    score, shifts = agreement_map(fixed, region, mov)
    at_zero = float(score[np.argmin(np.abs(shifts).sum(1))])
    best = int(np.argmax(score))
    far = float(np.linalg.norm(shifts[best]))
    if far > max_shift_mm + COARSE_MM / 2 and score[best] > (1 + DISPLACED_GAIN) * at_zero:
        raise InputError(name, f"shows the liver about {far:.0f} mm from where the T1w shows it (more than the "
                               f"{max_shift_mm:.0f} mm breath-holds explain); check its origin and orientation")


def _translation(fixed: sitk.Image, moving: sitk.Image, region: sitk.Image) -> np.ndarray:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(24)            # T1w vs T2w/DWI: different contrasts
    # Half the voxels on a regular grid (fixed seed: the same answer on every run), and image
    # gradients by finite differences at the samples instead of gradient images filtered at each
    # level: about half the time of every voxel with gradient images, the same accuracy.
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.5, 1)
    reg.MetricUseFixedImageGradientFilterOff()
    reg.MetricUseMovingImageGradientFilterOff()
    reg.SetMetricFixedMask(region)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 0.05, 60, relaxationFactor=0.5)  # stop at 0.05 mm steps
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([4.0, 2.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(sitk.TranslationTransform(3), inPlace=False)
    out = reg.Execute(fixed, moving)
    tr = out.GetNthTransform(0) if isinstance(out, sitk.CompositeTransform) else out
    return np.array(sitk.TranslationTransform(tr).GetOffset(), float)


def _as_euler(t_mm) -> sitk.Euler3DTransform:
    tr = sitk.Euler3DTransform()
    tr.SetTranslation([float(v) for v in t_mm])
    return tr


def check_not_displaced(fixed: sitk.Image, moving: sitk.Image, region: sitk.Image, name: str,
                        max_shift_mm: float = MAX_SHIFT_MM) -> None:
    """The displacement check of :func:`register_sequence` alone (for models that do not register)."""
    _check_not_displaced(fixed, region, _moving_grid(moving, fixed), name, max_shift_mm)


def register_sequence(fixed: sitk.Image, moving: sitk.Image, region: sitk.Image, name: str,
                      max_shift_mm: float = MAX_SHIFT_MM) -> SequenceRegistration:
    """Register ``moving`` to ``fixed`` (a bias-flattened liver-centred T1w crop; ``region`` the
    voxels that count) and check the result; see the module docstring. Raises InputError when the
    sequence's liver lies clearly beyond the breath-hold bound."""
    mov = _moving_grid(moving, fixed)
    _check_not_displaced(fixed, region, mov, name, max_shift_mm)
    try:
        claim = _translation(fixed, mov, region)
    except RuntimeError as exc:       # ITK gives up (e.g. too few samples in the region): no move
        first = [ln for ln in str(exc).splitlines() if ln.strip()][-1:] or ["unknown reason"]
        return SequenceRegistration(sitk.Euler3DTransform(), "scanner geometry",
                                    reason=f"it failed ({first[0].strip()[:120]})")
    f = sitk.GetArrayViewFromImage(fixed)
    r = sitk.GetArrayViewFromImage(region) > 0
    sp = fixed.GetSpacing()[::-1]

    def agreement(t_mm) -> float:
        m = sitk.GetArrayFromImage(spatial.resample_like(mov, fixed, _as_euler(t_mm), antialias=False))
        return ngf_similarity(f, m, r, sp)

    gain = agreement(claim) - agreement((0.0, 0.0, 0.0))
    size = float(np.linalg.norm(claim))
    claimed = tuple(float(v) for v in claim)
    if size > max_shift_mm:
        if gain > DISPLACED_NGF_GAIN:
            raise InputError(name, f"shows the liver {size:.0f} mm from where the T1w shows it (more than the "
                                   f"{max_shift_mm:.0f} mm breath-holds explain); check its origin and orientation")
        return SequenceRegistration(sitk.Euler3DTransform(), "scanner geometry", claimed, gain,
                                    f"it claimed {size:.0f} mm, beyond the {max_shift_mm:.0f} mm breath-hold bound")
    if gain <= MIN_NGF_GAIN:
        return SequenceRegistration(sitk.Euler3DTransform(), "scanner geometry", claimed, gain,
                                    f"its {size:.0f} mm shift did not improve the agreement of the images")
    return SequenceRegistration(_as_euler(claim), "registered", claimed, gain)


def registration_target(t1w: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """A liver-centred 4 mm crop (240 × 208 × 208 mm) of the T1w with its bias flattened, and the
    liver mask dilated by ~2 cm: where registration is judged."""
    centre = spatial.centroid_mm(mask)
    grid = spatial.centred_grid(centre, (GRID_MM,) * 3, (60, 52, 52))
    fixed = flatten_bias(resample_near(t1w, grid), coarse=True)
    liver = resample_near(mask, grid, interpolation="nearest", pixel=sitk.sitkUInt8)
    return fixed, sitk.BinaryDilate(liver, [6, 6, 4])
