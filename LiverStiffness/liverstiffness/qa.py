"""Liver-mask QA: measure the mask, compare it with the liver as each sequence shows it, and
raise named flags, each with a plain message, a severity, the threshold it crossed and the
slices (T1w k-index) and positions (LPS mm) where it shows.

Flags: EMPTY, NO_OVERLAP (severe: no estimate possible), MULTIPLE_COMPONENTS, HOLES, TRUNCATED,
MISREGISTERED, LEAKS, VOLUME_OUT_OF_RANGE (warnings). Thresholds are anatomical/physical and
live in :class:`QAThresholds`; every one can be changed by the user.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from . import spatial
from .errors import InputError
from .preprocess import SEQUENCE_LABELS, ExamImages, register_to_reference
from .registration import MAX_SHIFT_MM, flatten_bias, identity, resample_near

SEVERE, WARNING = "severe", "warning"
# The mask fit divides the image by its bias field, estimated at this width (mm). Measured on 11
# phantom exams (six 3 T exams with a strong field, amplitude 0.6, and five others): fit errors on
# clean masks fell from a median of 4.5 mm to 1.4 mm and on masks moved 8–19 mm from 4.2 to
# 1.9 mm, with no false alarm; 30 mm also flattened the liver's contrast to its neighbours and
# missed 12 mm shifts; N4 was as accurate on most but 12 mm off on one exam, and 1 s slower.
MASK_FIT_BIAS_SIGMA_MM = 100.0


@dataclass
class QAThresholds:
    """Plausibility limits. Volumes in mL, distances in mm, areas in cm²."""

    # Adult livers are ~1.0–2.5 L; below 700 mL or above 4 L the mask, not the liver, is the likely problem.
    min_volume_ml: float = 700.0
    max_volume_ml: float = 4000.0
    # A detached piece this large is not noise: the liver is one connected organ.
    min_extra_component_ml: float = 2.0
    # Enclosed holes: vessels run to the surface, so enclosed gaps this large are segmentation holes.
    min_hole_ml: float = 1.5
    # Liver cross-section on the first/last slice or at the field-of-view edge: the organ continues outside.
    max_boundary_area_cm2: float = 2.0
    # Breath-hold differences are a few mm; beyond this the mask sits off the liver of that sequence.
    # Along the slice axis, half a slice thickness is within the precision of the fit.
    max_shift_mm: float = 8.0
    # A shift is claimed only when the mask fits the liver clearly better there than where it is:
    # mutual information up by this fraction. Measured: clean manual masks on real T2w (CHAOS)
    # 0.11–0.19, where the fit still wanders up to 10 mm on weak contrast; masks moved 8–16 mm
    # on the phantoms 0.25–0.79.
    min_fit_gain: float = 0.2
    # Non-liver tissue inside the (aligned) mask, as one connected region, above this volume.
    min_leak_ml: float = 10.0
    # Narrower bright structures are vessels or ducts, not a neighbouring organ (portal vein ~13 mm).
    min_leak_width_mm: float = 10.0
    # Intensity ratios to the liver median that mark non-liver tissue (docs/phantom.md contrasts).
    bright_t2_ratio: float = 1.5          # kidney, spleen, bile, fluid: long T2
    spleen_t2_ratio: float = 1.2          # spleen (even beside a cirrhotic liver): brighter on T2w ...
    spleen_dwi_ratio: float = 1.3         # ... and on high-b DWI (low ADC)
    fat_t1_ratio: float = 1.6             # fat is bright on T1w GRE
    air_ratio: float = 0.15               # air/lung: no signal on T1w and T2w
    # How far the misregistration search looks, and the largest fit it may claim: the breath-hold
    # bound of the sequence registration (registration.MAX_SHIFT_MM, with its sources) plus the
    # fit's own error on the phantoms (up to 4 mm).
    shift_search_mm: float = MAX_SHIFT_MM + 4.0

    @classmethod
    def from_json(cls, path: str | Path) -> QAThresholds:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"--thresholds {path}", f"cannot be read as JSON ({exc})") from None
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"--thresholds {path}", f"unknown threshold(s) {', '.join(sorted(unknown))}")
        return cls(**{k: float(v) for k, v in d.items()})


@dataclass
class Flag:
    code: str
    severity: str
    message: str
    threshold: dict
    slices: list[int] = field(default_factory=list)
    positions_mm: list[list[float]] = field(default_factory=list)
    sequence: str | None = None


@dataclass
class QAResult:
    measurements: dict
    flags: list[Flag]
    thresholds: QAThresholds
    transforms: dict = field(default_factory=dict)   # T2w/DWI → T1w registrations, for reuse

    def summary(self) -> dict:
        return {"flags": [asdict(f) for f in self.flags], "volume_ml": self.measurements.get("volume_ml"),
                "n_components": self.measurements.get("n_components"), "ok": not self.flags}

    def to_dict(self) -> dict:
        return {"measurements": self.measurements, "flags": [asdict(f) for f in self.flags],
                "thresholds": asdict(self.thresholds)}


def _slices_of(arr_zyx: np.ndarray) -> list[int]:
    return [int(k) for k in np.flatnonzero(arr_zyx.reshape(arr_zyx.shape[0], -1).any(axis=1))]


def _positions(img: sitk.Image, labels: np.ndarray, ids) -> list[list[float]]:
    out = []
    for i in ids:
        zyx = np.argwhere(labels == i).mean(axis=0)
        out.append([round(v, 1) for v in img.TransformContinuousIndexToPhysicalPoint(zyx[::-1].tolist())])
    return out


def _box(zyx: np.ndarray, pad, shape) -> tuple[slice, ...]:
    """Slices [z, y, x] of the bounding box of the voxel indices ``zyx``, widened by ``pad``
    voxels per axis and clipped to ``shape``. (A SimpleITK image takes them reversed.)"""
    lo = np.maximum(zyx.min(0) - pad, 0)
    hi = np.minimum(zyx.max(0) + np.asarray(pad) + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _component_stats(mask: np.ndarray, voxel_ml: float):
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    vols = ndimage.sum(mask, labels, index=np.arange(1, n + 1)) * voxel_ml if n else np.array([])
    return labels, n, np.asarray(vols, float)


def edge_score(m: np.ndarray, surface: np.ndarray, image_on_ref: sitk.Image) -> float:
    """Agreement of the mask edge with the image's edges: mean gradient magnitude on the mask
    ``surface``, relative to the median inside the mask ``m`` (higher is better; ~0 on a flat
    region). Both are arrays on ``image_on_ref``'s grid."""
    # Only the mask's neighbourhood matters: the filter runs on its bounding box plus 4 sigma.
    sigma = float(max(image_on_ref.GetSpacing()[:2]))
    box = _box(np.argwhere(m), np.ceil(4 * sigma / np.array(image_on_ref.GetSpacing()[::-1])).astype(int), m.shape)
    image = image_on_ref[box[::-1]]
    grad = sitk.GetArrayFromImage(  # a copy: a view would outlive its temporary image
        sitk.GradientMagnitudeRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), sigma))
    level = float(np.median(sitk.GetArrayViewFromImage(image)[m[box]])) or 1.0
    return round(float(grad[surface[box]].mean() / level), 4)


def mask_fit_shift(mask_img: sitk.Image, image: sitk.Image) -> tuple[np.ndarray, float]:
    """Translation (mm, LPS) that moves the mask onto the liver as ``image`` shows it, and how
    much better it fits there: the relative gain in mutual information over no shift.

    The mask, blurred, is registered to the image by Mattes mutual information (translation
    only, coarse to fine, starting from no shift): MI peaks when the mask outlines a region of
    homogeneous liver signal. The image's smooth bias field is divided out first
    (:func:`~.registration.flatten_bias`): at 3 T it otherwise pulls a clean mask towards the
    brighter side of the liver.
    """
    centre = spatial.centroid_mm(mask_img)
    grid = spatial.centred_grid(centre, (3.0,) * 3, (90, 80, 80))  # 3 mm: the fit needs the detail
    fixed = flatten_bias(resample_near(image, grid), MASK_FIT_BIAS_SIGMA_MM)
    m = resample_near(sitk.Cast(mask_img, sitk.sitkFloat32), grid)
    moving = sitk.SmoothingRecursiveGaussian(m, 3.0)
    region = sitk.BinaryDilate(sitk.Cast(m > 0.5, sitk.sitkUInt8), [10, 10, 10])  # ~3 cm around the mask

    def method(start: sitk.TranslationTransform) -> sitk.ImageRegistrationMethod:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(16)
        # A quarter of the voxels (fixed seed: the same answer on every run), and image gradients
        # by finite differences at those samples instead of gradient images filtered at each level:
        # half the time, and the same accuracy on masks moved 8–16 mm (median error 0.9 mm).
        reg.SetMetricSamplingStrategy(reg.REGULAR)
        reg.SetMetricSamplingPercentage(0.25, 1)
        reg.MetricUseFixedImageGradientFilterOff()
        reg.MetricUseMovingImageGradientFilterOff()
        reg.SetMetricFixedMask(region)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(2.0, 0.05, 200, relaxationFactor=0.6)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([6.0, 2.0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetInitialTransform(start, inPlace=False)
        return reg

    try:
        out = method(sitk.TranslationTransform(3)).Execute(fixed, moving)
    except RuntimeError:          # ITK gives up (too few samples): no fit, hence no claim
        return np.zeros(3), 0.0
    tr = out.GetNthTransform(0) if isinstance(out, sitk.CompositeTransform) else out
    offset = sitk.TranslationTransform(tr).GetOffset()
    # Mattes MI is reported negated (lower is better).
    at_zero = method(sitk.TranslationTransform(3)).MetricEvaluate(fixed, moving)
    at_fit = method(sitk.TranslationTransform(3, offset)).MetricEvaluate(fixed, moving)
    gain = (at_zero - at_fit) / abs(at_zero) if at_zero else 0.0
    return -np.array(offset), float(gain)


# Devillard's median of 9 (after Paeth, Graphics Gems 1990): 19 compare-exchanges leave the
# median in place 4.
_MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
            (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def median_in_plane(arr: np.ndarray) -> np.ndarray:
    """3 × 3 in-plane median of a [z, y, x] array, edges replicated: the values of ITK's
    ``Median(image, [1, 1, 0])``, by a sorting network over whole arrays (several times faster
    than ITK's per-voxel selection; SciPy's median_filter is slower still)."""
    ny, nx = arr.shape[1:]
    p = np.pad(arr, ((0, 0), (1, 1), (1, 1)), mode="edge")
    v = [p[:, dy:dy + ny, dx:dx + nx] for dy in range(3) for dx in range(3)]
    for a, b in _MEDIAN9:
        v[a], v[b] = np.minimum(v[a], v[b]), np.maximum(v[a], v[b])
    return v[4]


def _leak_regions(images: dict[str, np.ndarray], core: np.ndarray, th: QAThresholds) -> dict[str, np.ndarray]:
    """Voxels of the mask's core whose signal pattern is not liver, by likely tissue."""
    rel = {}
    for name, arr in images.items():
        med = np.median(arr[core]) if core.any() else 0
        smooth = median_in_plane(arr)   # texture and noise are not tissue
        rel[name] = smooth / med if med > 0 else None
    kinds = {}
    t1, t2, dwi = rel.get("t1w"), rel.get("t2w"), rel.get("dwi")
    if t2 is not None:
        kinds["kidney, spleen, bile or fluid (bright on T2w)"] = t2 > th.bright_t2_ratio
        if dwi is not None:
            kinds["spleen (bright on T2w and DWI)"] = ((t2 > th.spleen_t2_ratio) & (dwi > th.spleen_dwi_ratio)
                                                       & (t2 <= th.bright_t2_ratio))
    if t1 is not None:
        kinds["fat (bright on T1w)"] = t1 > th.fat_t1_ratio
        if t2 is not None:
            kinds["air (no signal)"] = (t1 < th.air_ratio) & (t2 < th.air_ratio)
    return {k: v & core for k, v in kinds.items()}


_CROSS = ndimage.generate_binary_structure(3, 1)


def _disc(spacing, diameter_mm: float) -> np.ndarray:
    """A one-slice disc structuring element [1, y, x] of the given diameter."""
    ry, rx = (max(1, int(round(diameter_mm / 2 / s))) for s in (spacing[1], spacing[0]))
    yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    return (((yy * spacing[1]) ** 2 + (xx * spacing[0]) ** 2) <= (diameter_mm / 2) ** 2)[None]


def find_leaks(arrays: dict[str, np.ndarray], mask: np.ndarray, voxel_ml: float, th: QAThresholds,
               spacing=(1.0, 1.0, 1.0)) -> dict:
    """Connected non-liver regions ≥ min_leak_ml inside the mask, one voxel in from its edge
    (partial volume at the boundary is not a leak): kind → (labels, component ids, volumes)."""
    disc = _disc(spacing, th.min_leak_width_mm)
    core = ndimage.binary_erosion(mask, structure=_CROSS)
    leaks = {}
    if not core.any():
        return leaks
    # Everything happens inside the core: work on its bounding box, padded in-plane by the
    # filters' reach (median 1 voxel, disc radius), which gives exactly the full-grid answer.
    bb = _box(np.argwhere(core), [0, disc.shape[1] // 2 + 1, disc.shape[2] // 2 + 1], core.shape)
    for kind, region in _leak_regions({k: a[bb] for k, a in arrays.items()}, core[bb], th).items():
        if region.sum() * voxel_ml < th.min_leak_ml:
            continue  # the opening below only removes voxels: too few already for a leak
        # An in-plane opening with a disc of min_leak_width_mm removes tubes (vessels, bile
        # ducts) and keeps blobs (a neighbouring organ).
        region = ndimage.binary_opening(region, structure=disc)
        ll, ln, lv = _component_stats(region, voxel_ml)
        big = [i for i in range(ln) if lv[i] >= th.min_leak_ml]
        if big:
            labels = np.zeros(core.shape, ll.dtype)
            labels[bb] = ll
            leaks[kind] = (labels, big, lv)
    return leaks


def _leak_voxels(leaks: dict, shape) -> np.ndarray:
    out = np.zeros(shape, bool)
    for ll, big, _ in leaks.values():
        out |= ndimage.binary_dilation(np.isin(ll, [i + 1 for i in big]), structure=_CROSS)
    return out


def run_qa(images: ExamImages, thresholds: QAThresholds | None = None, register: bool = True) -> QAResult:
    """All measurements and flags for one exam (mask resampled onto the reference grid: the
    T1w's, or the first present of T2w and DWI; any subset of the sequences)."""
    th = thresholds or QAThresholds()
    ref, ref_name = images.reference, images.reference_name
    flags: list[Flag] = []
    meas: dict = {"reference_sequence": ref_name, "sequences": list(images.sequences)}
    if spatial.overlap_fraction(ref, images.mask) < 1e-6:
        flags.append(Flag("NO_OVERLAP", SEVERE, f"The mask does not overlap the {SEQUENCE_LABELS[ref_name]} image at all.", {}))
        return QAResult(meas, flags, th)
    mask_img = spatial.resample_like(images.mask, ref, interpolation="nearest", pixel=sitk.sitkUInt8)
    m = sitk.GetArrayFromImage(mask_img) > 0
    voxel_ml = spatial.voxel_volume_ml(ref)
    meas["volume_ml"] = round(float(m.sum() * voxel_ml), 1)
    if not m.any():
        flags.append(Flag("EMPTY", SEVERE, f"The liver mask is empty on the {SEQUENCE_LABELS[ref_name]} grid.", {}))
        return QAResult(meas, flags, th)

    # From here on, work in a box around the mask (with a margin, for the misregistration search):
    # the same answers on several times fewer voxels. Slice numbers in it are offset by z0.
    zyx = np.argwhere(m)
    sp = np.array(ref.GetSpacing())
    box = _box(zyx, np.ceil(th.shift_search_mm / sp[::-1]).astype(int) + 1, m.shape)
    ref_box = ref[box[::-1]]
    m_box, z0 = m[box], box[0].start

    # Size and shape.
    labels, n, vols = _component_stats(m_box, voxel_ml)
    order = np.argsort(vols)[::-1]
    meas["n_components"] = int(n)
    meas["component_volumes_ml"] = [round(float(vols[i]), 2) for i in order]
    meas["extent_mm"] = dict(zip("xyz", [round(float(v), 1) for v in (np.ptp(zyx[:, ::-1], axis=0) + 1) * sp]))
    surface = m_box & ~ndimage.binary_erosion(m_box)
    face_area = float(np.mean([sp[0] * sp[1], sp[0] * sp[2], sp[1] * sp[2]]))
    meas["surface_to_volume_per_mm"] = round(float(surface.sum() * face_area / (m.sum() * np.prod(sp))), 4)

    if not th.min_volume_ml <= meas["volume_ml"] <= th.max_volume_ml:
        flags.append(Flag("VOLUME_OUT_OF_RANGE", WARNING,
                          f"Mask volume {meas['volume_ml']:.0f} mL is outside the plausible adult liver range.",
                          {"min_volume_ml": th.min_volume_ml, "max_volume_ml": th.max_volume_ml}, _slices_of(m)))
    extra = [i for i in order[1:] if vols[i] >= th.min_extra_component_ml]
    if extra:
        sel = np.isin(labels, [i + 1 for i in extra])
        flags.append(Flag("MULTIPLE_COMPONENTS", WARNING,
                          f"{len(extra)} piece(s) separate from the main liver "
                          f"({', '.join(f'{vols[i]:.1f}' for i in extra)} mL).",
                          {"min_extra_component_ml": th.min_extra_component_ml}, [k + z0 for k in _slices_of(sel)],
                          _positions(ref_box, labels, [i + 1 for i in extra])))

    holes = ndimage.binary_fill_holes(m_box) & ~m_box  # the box's edge is background or the image's edge
    hl, hn, hv = _component_stats(holes, voxel_ml)
    meas["hole_volume_ml"] = round(float(holes.sum() * voxel_ml), 2)
    big = [i for i in range(hn) if hv[i] >= th.min_hole_ml]
    if big:
        sel = np.isin(hl, [i + 1 for i in big])
        flags.append(Flag("HOLES", WARNING, f"{len(big)} enclosed hole(s) in the mask ({sum(hv[i] for i in big):.1f} mL).",
                          {"min_hole_ml": th.min_hole_ml}, [k + z0 for k in _slices_of(sel)],
                          _positions(ref_box, hl, [i + 1 for i in big])))

    # Truncation: liver cross-section on the first/last slice or on the in-plane field-of-view edge.
    area_cm2 = {"first slice": m[0].sum() * sp[0] * sp[1] / 100, "last slice": m[-1].sum() * sp[0] * sp[1] / 100}
    edge = np.zeros_like(m)
    edge[:, [0, -1], :] = m[:, [0, -1], :]
    edge[:, :, [0, -1]] |= m[:, :, [0, -1]]
    area_cm2["in-plane edge"] = edge.sum() * sp[2] * float(np.mean(sp[:2])) / 100
    meas["boundary_area_cm2"] = {k: round(float(v), 2) for k, v in area_cm2.items()}
    cut = [k for k, v in area_cm2.items() if v > th.max_boundary_area_cm2]
    if cut:
        sl = ([0] if "first slice" in cut else []) + ([m.shape[0] - 1] if "last slice" in cut else [])
        sl += _slices_of(edge) if "in-plane edge" in cut else []
        flags.append(Flag("TRUNCATED", WARNING,
                          f"The mask reaches the {' and the '.join(cut)} of the {SEQUENCE_LABELS[ref_name]} image: "
                          "part of the liver is probably outside the field of view.",
                          {"max_boundary_area_cm2": th.max_boundary_area_cm2}, sorted(set(sl))))

    # Each sequence on the reference grid. The others are registered to it (rigid, as predict
    # does), so the mask-to-sequence offset = mask-to-reference offset + the sequence's
    # breath-hold offset.
    others = [name for name in images.sequences if name != ref_name]
    transforms = register_to_reference(images) if register else {name: identity() for name in others}
    seqs = {ref_name: (ref if ref_name != "dwi" else images.dwi.high_b, None)}
    seqs.update({name: (images.dwi.high_b if name == "dwi" else images.anatomy(name), transforms[name].transform)
                 for name in others})
    meas["registration_to_reference"] = {k: reg.to_dict(k) for k, reg in transforms.items()}
    on_ref = {k: spatial.resample_like(img, ref_box, tr) for k, (img, tr) in seqs.items()}
    arrays = {k: sitk.GetArrayFromImage(v) for k, v in on_ref.items()}
    meas["intensity_in_mask"] = {k: {"median": round(float(np.median(a[m_box])), 3),
                                     "p5": round(float(np.percentile(a[m_box], 5)), 3),
                                     "p95": round(float(np.percentile(a[m_box], 95)), 3),
                                     "iqr": round(float(np.subtract(*np.percentile(a[m_box], [75, 25]))), 3)}
                                 for k, a in arrays.items()}

    # Misregistration: where does the mask fit the liver best, in T1w and (through the
    # registration) in each other sequence?
    leaks = find_leaks(arrays, m_box, voxel_ml, th, sp)
    fit_mask = mask_img
    if leaks:  # fit the mask without the leaked tissue, so a leak does not pose as a shift
        clean_arr = m.copy()
        clean_arr[box] &= ~_leak_voxels(leaks, m_box.shape)
        clean = sitk.GetImageFromArray(clean_arr.astype(np.uint8))
        clean.CopyInformation(mask_img)
        fit_mask = clean
    shift, gain = mask_fit_shift(fit_mask, ref)
    meas["mask_fit_to_reference"] = {"offset_mm": [round(float(v), 1) for v in shift], "mi_gain": round(gain, 3)}
    if np.linalg.norm(shift) > th.shift_search_mm or gain < th.min_fit_gain:
        shift = np.zeros(3)  # the fit ran off, or fits no better than the mask as drawn: no claim
    meas["edge_alignment"] = {}
    for k, img in on_ref.items():
        offset = shift + (transforms[k].translation_mm if k in transforms else 0.0)
        beyond_slice = np.array([offset[0], offset[1], max(0.0, abs(offset[2]) - sp[2] / 2)])
        meas["edge_alignment"][k] = {"edge_score": edge_score(m_box, surface, img),
                                     "mask_offset_mm": [round(float(v), 1) for v in offset],
                                     "offset_mm": round(float(np.linalg.norm(beyond_slice)), 1)}
    off = {k: v for k, v in meas["edge_alignment"].items() if v["offset_mm"] > th.max_shift_mm}
    if off:
        worst = max(off, key=lambda k: off[k]["offset_mm"])
        note = "" if ref_name in off else " (a breath-hold difference between sequences; predict's registration corrects it)"
        flags.append(Flag("MISREGISTERED", WARNING,
                          f"The mask sits {off[worst]['offset_mm']:.0f} mm off the liver seen in "
                          f"{', '.join(k.upper() for k in off)}: "
                          f"it fits when moved by {off[worst]['mask_offset_mm']} mm (LPS){note}.",
                          {"max_shift_mm": th.max_shift_mm, "min_fit_gain": th.min_fit_gain}, _slices_of(m), sequence=worst))
    if ref_name not in off:
        shift = np.zeros(3)  # the mask is where it should be on its own grid

    # Leaks, judged on the mask moved onto the liver (so that a shift is not also called a leak).
    if shift.any():
        moved = sitk.Resample(mask_img, mask_img, sitk.TranslationTransform(3, (-shift).tolist()), sitk.sitkNearestNeighbor, 0)
        leaks = find_leaks(arrays, (sitk.GetArrayFromImage(moved) > 0)[box], voxel_ml, th, sp)
    meas["leak_volume_ml"] = {k: round(float(sum(lv[i] for i in big)), 1) for k, (ll, big, lv) in leaks.items()}
    if leaks:
        slices, pos = set(), []
        for ll, big, _lv in leaks.values():
            slices.update(k + z0 for k in _slices_of(np.isin(ll, [i + 1 for i in big])))
            pos += _positions(ref_box, ll, [i + 1 for i in big])
        flags.append(Flag("LEAKS", WARNING, "The mask includes tissue that is not liver: " +
                          "; ".join(f"{k}, {meas['leak_volume_ml'][k]:.0f} mL" for k in leaks) + ".",
                          {"min_leak_ml": th.min_leak_ml}, sorted(slices), pos))
    return QAResult(meas, flags, th, transforms)


