"""From an exam's files to the model-ready tensor, in physical space.

Pipeline: read (``imageio``) → check the inputs against each other → optional N4 bias-field
correction → optional registration of the other sequences to the reference (separate
breath-holds; bounded and checked, see ``registration``) → one resampling of every channel onto a
liver-centred, axis-aligned crop at the spec's spacing → intensity normalisation by the body's
median signal in the crop (``normalise_to_body``). ``Prepared`` keeps the crop geometry and the
reference geometry, so anything computed on the crop (attention maps) can be mapped back.

Any non-empty subset of T1w, T2w and DWI is an exam: the reference is the first present of
T1w, T2w, DWI (its lowest b-value), the mask is carried onto its grid, and a missing sequence's
channels are zero, which is how the network tells "missing" (it was trained with sequence
dropout).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import spatial
from .errors import InputError
from .imageio import DwiData, read_dwi, read_mask, read_volume
from .input_checks import (
    check_dwi_against_liver,
    check_sequence_against_liver,
    check_sizes,
    liver_points,
)
from .registration import (
    SequenceRegistration,
    check_not_displaced,
    identity,
    register_sequence,
    registration_target,
)

CHANNELS = ("t1w", "t2w", "dwi", "adc", "mask")
SEQUENCES = ("t1w", "t2w", "dwi")   # the inputs a user gives; the first present is the reference
SEQUENCE_LABELS = {"t1w": "T1w", "t2w": "T2w", "dwi": "DWI"}
# Below this fraction of bounding-box overlap two sequences cannot be of the same abdomen.
MIN_SEQUENCE_OVERLAP = 0.2
# The mask must sit on tissue: its median signal in the reference image above this fraction of the
# image's 98th percentile. The liver is darker against fluid on T2w and against fat-free tissue on
# low-b DWI than on T1w: on 40 site-E phantoms the liver's ratio was at least 0.26 (T1w), 0.058
# (T2w), 0.13 (DWI b0), 0.19 on 15 real CHAOS T2-SPIR scans, while a mask moved 150 mm off the body
# gave medians of 0.025, 0.014 and 0.040.
MIN_MASK_SIGNAL_FRACTION = {"t1w": 0.15, "t2w": 0.04, "dwi": 0.08}
NORMALISED_CLIP = (0.0, 8.0)     # intensity / body median (fluid on T2w reaches ~6)
ADC_CLIP = (0.0, 4.0)            # 10⁻³ mm²/s
BODY_THRESHOLD = 0.2             # body = T1w above this fraction of its 95th percentile in the crop
# Without a T1w: the reference sequence above this fraction of its 95th percentile. Fat-suppressed
# T2w and DWI show less of the body than T1w, so a lower level; on 20 site-E phantom exams the
# T2w and DWI medians over this body were 0.97 (0.92–0.99) of those over the T1w body.
BODY_THRESHOLD_WITHOUT_T1W = 0.05


# How T1w, T2w and high-b DWI are put on a common scale (ADC stays in 10⁻³ mm²/s):
BODY_MEDIAN = ("body_median: each sequence divided by its median over the body (T1w above 0.2 x its 95th "
               "percentile, and the liver) inside the crop; ADC in 10^-3 mm2/s")


@dataclass(frozen=True)
class InputSpec:
    """What the model sees; written into every checkpoint so that it is self-describing."""

    channels: tuple[str, ...] = CHANNELS
    spacing_mm: tuple[float, float, float] = (6.0, 6.0, 8.0)   # x, y, z (LPS)
    # 384 × 240 × 192 mm around the liver: wide enough in x to hold the spleen (splenomegaly is
    # a sign of advanced fibrosis) and the abdominal wall (a reference tissue for contrasts).
    size: tuple[int, int, int] = (64, 40, 24)                  # voxels x, y, z
    normalisation: str = BODY_MEDIAN

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        return cls(tuple(d["channels"]), tuple(d["spacing_mm"]), tuple(d["size"]), d.get("normalisation", ""))

    def to_dict(self) -> dict:
        return asdict(self)


# Bump when preprocessing produces different tensors from the same inputs and options (e.g. new
# registration settings): caches made by an earlier version are then not reused.
# 3: bounded, checked translation on bias-flattened images; 4: body-median normalisation.
PREPROCESS_VERSION = 4


@dataclass
class PreprocessOptions:
    register: bool = True
    n4: bool = False
    mask_label: int | None = None


@dataclass
class ExamImages:
    """The images of one exam as read, on their own grids; a sequence not given is None."""

    t1w: sitk.Image | None
    t2w: sitk.Image | None
    dwi: DwiData | None
    mask: sitk.Image
    paths: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)   # warnings from the input checks, for the report
    mask_info: dict | None = None               # how an automatic mask was made (None: the mask was given)
    left_out: dict = field(default_factory=dict)  # sequence → why the user left it out (given, but unusable)

    @property
    def sequences(self) -> tuple[str, ...]:
        """The sequences present, in SEQUENCES order."""
        return tuple(name for name in SEQUENCES if getattr(self, name) is not None)

    def anatomy(self, name: str) -> sitk.Image | None:
        """The image that shows a sequence's anatomy best: T1w, T2w, or the DWI's lowest b-value."""
        if name == "dwi":
            return self.dwi.images[0] if self.dwi is not None else None
        return getattr(self, name)

    @property
    def reference_name(self) -> str:
        if not self.sequences:
            raise InputError("exam", "has no image: give at least one of T1w, T2w and DWI")
        return self.sequences[0]

    @property
    def reference(self) -> sitk.Image:
        """The grid results go back to (the T1w's when there is one)."""
        return self.anatomy(self.reference_name)

    def where(self, name: str) -> str:
        """An input named for messages: the sequence and its path."""
        return f"{name} {self.paths.get(name, '')}".strip()


@dataclass
class Prepared:
    tensor: np.ndarray            # [C, z, y, x] float32, channels as in spec.channels
    crop: sitk.Image              # geometry of the crop (values: the liver fraction)
    reference: sitk.Image         # the reference image (T1w when given; its grid is where results go back to)
    mask_ref: sitk.Image          # binary liver mask on the reference grid
    spec: InputSpec
    has_adc: bool
    sequences: tuple[str, ...] = SEQUENCES   # the sequences present (the others' channels are zero)
    reference_name: str = "t1w"
    registration: dict = field(default_factory=dict)
    liver_medians: dict = field(default_factory=dict)   # in the normalised units (liver/body ratio)
    body_medians: dict = field(default_factory=dict)    # the scanner units each sequence was divided by
    timings_s: dict = field(default_factory=dict)

    def to_reference(self, volume: np.ndarray, interpolation: str = "linear") -> sitk.Image:
        """Map a [z, y, x] array on the crop grid back onto the reference grid (zero outside the crop)."""
        img = sitk.GetImageFromArray(np.asarray(volume, np.float32))
        img.CopyInformation(self.crop)
        return spatial.resample_like(img, self.reference, interpolation=interpolation, antialias=False)


def read_exam(t1w, t2w, dwi, mask, dwi_b=None, mask_label: int | None = None) -> ExamImages:
    """Read an exam: any non-empty subset of T1w, T2w and DWI (None: not given) and the mask;
    every problem is an InputError naming the file. The headers are checked together first, so
    that an exam too large for memory is refused before any voxel is read
    (:func:`~.input_checks.check_sizes`)."""
    given = {name: Path(p) for name, p in (("t1w", t1w), ("t2w", t2w), ("dwi", dwi), ("mask", mask)) if p is not None}
    if not set(given) & set(SEQUENCES):
        raise InputError("exam", "has no image: give at least one of --t1w, --t2w and --dwi")
    check_sizes({name: p for name, p in given.items() if p.exists()})
    images = ExamImages(
        t1w=read_volume(t1w, "t1w", check_size=False) if t1w is not None else None,
        t2w=read_volume(t2w, "t2w", check_size=False) if t2w is not None else None,
        dwi=read_dwi(dwi, dwi_b, "dwi", check_size=False) if dwi is not None else None,
        mask=read_mask(mask, mask_label, "mask", check_size=False),
        paths={k: str(v.resolve()) for k, v in given.items()})
    check_exam(images)
    return images


def mask_on_reference(images: ExamImages) -> sitk.Image:
    """The liver mask on the reference grid (nearest neighbour: labels are not interpolated)."""
    return spatial.resample_like(images.mask, images.reference, interpolation="nearest", pixel=sitk.sitkUInt8)


def check_exam(images: ExamImages) -> None:
    """The inputs against each other (:mod:`.input_checks`): sequences overlap physically, the
    mask sits on tissue inside the reference image, every sequence covers the liver with no blank
    slice through it, and the DWI's signal and ADC in the liver are physical. Warnings (a partly
    covered liver) go to ``images.notes``."""
    ref, ref_name = images.reference, images.reference_name
    others = [(name, images.dwi.high_b if name == "dwi" else images.anatomy(name))
              for name in images.sequences if name != ref_name]
    for name, img in [*others, ("mask", images.mask)]:
        frac = spatial.overlap_fraction(ref, img)
        if frac < MIN_SEQUENCE_OVERLAP:
            raise InputError(images.where(name), f"does not overlap the {SEQUENCE_LABELS[ref_name]} image physically "
                                                 f"({frac:.0%} of its extent; check origin/orientation)")
    m = sitk.GetArrayFromImage(mask_on_reference(images)) > 0
    if not m.any():
        raise InputError(images.where("mask"), f"does not overlap the {SEQUENCE_LABELS[ref_name]} image (empty after "
                                               f"resampling to the {SEQUENCE_LABELS[ref_name]} grid)")
    arr = sitk.GetArrayViewFromImage(ref)
    body = np.percentile(arr, 98)
    if body <= 0 or np.median(arr[m]) < MIN_MASK_SIGNAL_FRACTION[ref_name] * body:
        raise InputError(images.where("mask"), f"does not cover the liver in the {SEQUENCE_LABELS[ref_name]} image "
                                               "(it lies mostly on background/air)")
    pts = liver_points(images.mask)
    notes = []
    sequences = [(name, images.anatomy(name)) for name in ("t1w", "t2w") if images.anatomy(name) is not None]
    sequences += [("dwi", im) for im in (images.dwi.images if images.dwi is not None else [])]
    for name, img in sequences:
        note = check_sequence_against_liver(img, pts, images.where(name), name)
        if note and note not in notes:
            notes.append(note)
    if images.dwi is not None:
        check_dwi_against_liver(images.dwi.b_values, images.dwi.images, images.dwi.adc, pts, images.where("dwi"))
    images.notes = notes


def n4_correct(img: sitk.Image, shrink: int = 4) -> sitk.Image:
    """N4 bias-field correction on a shrunk copy; the field is applied at full resolution."""
    body = sitk.OtsuThreshold(img, 0, 1, 200)
    small = sitk.Shrink(img, [shrink] * 3)
    small_mask = sitk.Shrink(body, [shrink] * 3)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([20, 10])
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(img)
    return sitk.Cast(img / sitk.Exp(log_field), sitk.sitkFloat32)


def _registration_target(images: ExamImages):
    """The bias-flattened liver-centred 4 mm crop of the reference image and the region (liver +
    ~2 cm) where registration is judged (see :mod:`.registration`)."""
    return registration_target(images.reference, images.mask)


def register_to_reference(images: ExamImages, replaced: dict | None = None) -> dict[str, SequenceRegistration]:
    """Each sequence other than the reference → the reference (separate breath-holds), judged
    around the liver, bounded to what breath-holds explain and checked against the scanner
    geometry (:mod:`.registration`). With a T1w: {"t2w": …, "dwi": …} for those present.

    The DWI is registered by its lowest b-value, which shows anatomy best. ``replaced`` gives
    images to use instead of those read (e.g. an N4-corrected T2w). InputError when a sequence
    shows the liver far beyond the bound.
    """
    fixed, region = _registration_target(images)
    replaced = replaced or {}
    return {name: register_sequence(fixed, replaced.get(name, images.anatomy(name)), region, images.where(name))
            for name in images.sequences if name != images.reference_name}


def check_sequences_in_place(images: ExamImages) -> None:
    """InputError when a sequence shows the liver far beyond breath-hold distance from the
    reference's (a wrong origin): the check registration makes, for models that do not register."""
    fixed, region = _registration_target(images)
    for name in images.sequences:
        if name != images.reference_name:
            check_not_displaced(fixed, images.anatomy(name), region, images.where(name))


def prepare(images: ExamImages, spec: InputSpec, options: PreprocessOptions | None = None,
            transforms: dict | None = None) -> Prepared:
    """Register, resample, crop and normalise one exam into the model's input.

    ``transforms`` (each other sequence → the reference, e.g. from mask QA) are used instead of
    registering again. A sequence not present gives zero channels (and no ADC without a DWI).
    """
    options = options or PreprocessOptions()
    timings = {}
    t0 = time.perf_counter()
    present, ref_name = images.sequences, images.reference_name
    anat = {"t1w": images.t1w, "t2w": images.t2w, "dwi": images.dwi.high_b if images.dwi is not None else None}
    adc = images.dwi.adc if images.dwi is not None else None
    replaced = {}
    if options.n4:
        anat = {name: n4_correct(img) if img is not None else None for name, img in anat.items()}
        replaced = {"t2w": anat["t2w"]} if anat["t2w"] is not None else {}
        timings["n4"] = time.perf_counter() - t0
    # QA's registrations were made on the uncorrected images: reuse them unless N4 changed those.
    reuse = transforms is not None and options.register and not options.n4
    transforms = dict(transforms) if reuse else {name: identity() for name in present if name != ref_name}
    if options.register and not reuse:
        t = time.perf_counter()
        transforms = register_to_reference(images, replaced)
        timings["register"] = time.perf_counter() - t
    elif not options.register:
        check_sequences_in_place(images)   # unregistered, a displaced sequence is still refused
    t = time.perf_counter()
    mask_ref = mask_on_reference(images)
    centre = spatial.centroid_mm(mask_ref)
    crop = spatial.centred_grid(centre, spec.spacing_mm, spec.size)
    fraction = spatial.resample_like(sitk.Cast(mask_ref, sitk.sitkFloat32), crop)
    liver = sitk.GetArrayFromImage(fraction)
    inside = liver > 0.5
    if inside.sum() < 8:
        raise InputError("mask", "covers fewer than 8 voxels of the model's grid (is it a liver mask?)")

    def moved(name):                   # the reference itself is not moved
        return transforms[name].transform if name in transforms else None

    sources = {name: (anat[name], moved(name)) for name in present}
    if adc is not None:
        sources["adc"] = (adc, moved("dwi"))
    raw = {}
    for name in spec.channels:
        img, tr = sources.get(name, (None, None))
        if name != "mask" and img is not None:
            raw[name] = sitk.GetArrayFromImage(spatial.resample_like(img, crop, tr))
    if "t1w" in raw:
        body = body_region(raw["t1w"], inside)
    else:                              # no T1w: the body as the reference sequence shows it
        ref_anatomy = sitk.GetArrayFromImage(spatial.resample_like(images.reference, crop))
        body = body_region(ref_anatomy, inside, BODY_THRESHOLD_WITHOUT_T1W)
    channels, liver_medians, body_medians = [], {}, {}
    for name in spec.channels:
        if name == "mask":
            channels.append(liver)
        elif name not in raw:  # a sequence not given, or no ADC from a single-b DWI: zero, as in sequence dropout
            channels.append(np.zeros_like(liver))
        elif name == "adc":
            channels.append(np.clip(raw[name], *ADC_CLIP))
            liver_medians[name] = round(float(np.median(raw[name][inside])), 4)
        else:
            scaled, body_medians[name] = normalise_to_body(raw[name], body, name)
            channels.append(scaled)
            liver_medians[name] = round(float(np.median(scaled[inside])), 4)
    timings["resample"] = time.perf_counter() - t
    return Prepared(
        tensor=np.stack(channels).astype(np.float32), crop=fraction, reference=images.reference, mask_ref=mask_ref,
        spec=spec, has_adc=adc is not None, sequences=present, reference_name=ref_name,
        registration={k: reg.to_dict(k) for k, reg in transforms.items()},
        liver_medians=liver_medians, body_medians=body_medians, timings_s=timings)


def body_region(t1w: np.ndarray, liver: np.ndarray, threshold: float = BODY_THRESHOLD) -> np.ndarray:
    """Voxels of the crop inside the body: T1w above a fifth of its 95th percentile (T1w shows fat,
    muscle and organs, not air or lung), plus the liver. One region for every sequence, which are
    aligned. (Otsu's threshold, tried first, often split bright fat from the rest of the body
    instead of the body from the air, and the "body median" then jumped between exams.) Without a
    T1w, the reference sequence with ``BODY_THRESHOLD_WITHOUT_T1W``."""
    level = float(np.percentile(t1w, 95))
    return (t1w > threshold * level) | liver


def normalise_to_body(arr: np.ndarray, body: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """``arr`` divided by its median over ``body``; returns it (clipped) and that median.

    Why the body and not the liver: vendor scale and receive gain cancel either way, but dividing
    by the liver's own median set the liver to 1 in every exam and threw away the contrast
    between the liver and its neighbours (spleen, muscle, fat), which is how the literature
    normalises these sequences (liver-to-spleen and liver-to-muscle ratios) and which a spatial
    model can read. The body median is dominated by many tissues, so it moves little with disease.
    """
    med = float(np.median(arr[body])) if body.any() else 0.0
    if not np.isfinite(med) or med <= 0:
        raise InputError(name, "has no signal over the body in the model's crop")
    return np.clip(arr / med, *NORMALISED_CLIP), med


def prepare_files(t1w, t2w, dwi, mask, spec: InputSpec, dwi_b=None, options: PreprocessOptions | None = None) -> Prepared:
    """``prepare`` of an exam's files (a sequence None: not given)."""
    options = options or PreprocessOptions()
    return prepare(read_exam(t1w, t2w, dwi, mask, dwi_b, options.mask_label), spec, options)
