"""The chosen series of a study as the core's inputs: images, the liver mask and patient facts.

Slices are stacked in order along the slice normal (cross product of the row and column
directions), which is also the order of the frames of the SEG and Parametric Map written back:
index ``k`` of the image read here is ``sorted_instances(...)[k]``. A role the study has no
series for is None in the exam (any non-empty subset of T1w, T2w and DWI is an exam); the
reference image (T1w, else T2w, else the DWI's lowest b-value) is read from
``reference_instances``.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..imageio import DwiData, dwi_from_volumes, read_mask
from ..input_checks import check_geometry, check_values
from ..manifest import AGE_RANGE, BMI_RANGE, PatientFacts
from ..preprocess import ExamImages, check_exam
from .index import SEG_SOP_CLASS, Instance
from .selection import ROLE_NAMES, StudySelection


def sorted_instances(instances: list[Instance], where: str) -> list[Instance]:
    """The instances of one 3-D volume in slice order; two images at one position is an error."""
    missing = [i for i in instances if i.position is None or i.orientation is None]
    if missing:
        raise InputError(where, f"{len(missing)} image(s) have no ImagePositionPatient/ImageOrientationPatient")
    ordered = sorted(instances, key=lambda i: i.along_normal())
    steps = np.diff([i.along_normal() for i in ordered])
    if len(ordered) < 2:
        raise InputError(where, "has fewer than 2 slices: not a 3-D volume")
    if np.any(np.abs(steps) < 1e-3):
        raise InputError(where, "has two images at the same slice position (several echoes, repeats or "
                                "b-values in one series): choose the series with --t1w-series/--t2w-series, or edit the rules")
    return ordered


def read_instances(instances: list[Instance], where: str) -> sitk.Image:
    """One 3-D float32 volume (LPS geometry) from single-frame images, in slice order."""
    ordered = sorted_instances(instances, where)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(i.path) for i in ordered])
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(where, f"cannot be read ({str(exc).strip().splitlines()[-1][:160]})") from None
    img = sitk.Cast(img, sitk.sitkFloat32)
    check_geometry(img, where)      # the same checks as files get (input_checks)
    check_values(img, where)
    return img


def lowest_b_instances(instances: list[Instance]) -> list[Instance]:
    """The instances of a DWI series' lowest b-value (the DWI's image of the anatomy)."""
    low = min(round(i.b_value, 1) for i in instances)
    return [i for i in instances if round(i.b_value, 1) == low]


def reference_instances(selection: StudySelection) -> list[Instance]:
    """The images the exam's reference grid comes from, in slice order: the T1w series (its
    in-phase echo), else the T2w, else the DWI's lowest b-value. The mask and attention maps of a
    prediction, and the SEG and Parametric Map written back, are on this grid."""
    role = selection.reference_role
    instances = selection.chosen[role].instances
    if role == "dwi":
        instances = lowest_b_instances(instances)
    return sorted_instances(instances, f"{ROLE_NAMES[role]} series {selection.chosen[role].series.label()}")


def read_dwi_instances(instances: list[Instance], where: str, fit_adc: bool = True) -> DwiData:
    """A DWI series split by b-value (s/mm²), one volume per b, with the ADC when two or more."""
    groups: dict[float, list[Instance]] = defaultdict(list)
    for inst in instances:
        groups[round(inst.b_value, 1)].append(inst)
    b_values = sorted(groups)
    images = [read_instances(groups[b], f"{where} (b = {b:g})") for b in b_values]
    return dwi_from_volumes(images, b_values, where, fit_adc)


def _age_years(text: str) -> float | None:
    """DICOM age string '058Y', '006M', '010W', '020D' → years."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(text or ""))
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return n / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[unit]


def patient_facts_from_header(ds) -> tuple[PatientFacts, dict]:
    """Age, sex and BMI from a DICOM header (PDFF is never in it), and where each came from.
    Values outside the plausible ranges are dropped, not guessed."""
    facts, source = PatientFacts(), {}
    age = _age_years(ds.get("PatientAge", "")) if ds is not None else None
    if age is not None and AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        facts.age, source["age"] = round(age, 1), "DICOM PatientAge"
    sex = str(ds.get("PatientSex", "") or "").upper() if ds is not None else ""
    if sex in ("F", "M"):
        facts.sex, source["sex"] = sex, "DICOM PatientSex"
    try:
        weight, height = float(ds.get("PatientWeight") or 0), float(ds.get("PatientSize") or 0)
    except (TypeError, ValueError, AttributeError):
        weight = height = 0.0
    if weight > 0 and 0.5 < height < 2.5:
        bmi = weight / height**2
        if BMI_RANGE[0] <= bmi <= BMI_RANGE[1]:
            facts.bmi, source["bmi"] = round(bmi, 1), "DICOM PatientWeight / PatientSize²"
    return facts, source


def merge_facts(given: PatientFacts, from_header: PatientFacts, header_source: dict) -> tuple[PatientFacts, dict]:
    """What the user typed wins; the header fills the rest. Returns the facts and their sources."""
    merged, source = PatientFacts(), {}
    for name in ("age", "sex", "bmi", "pdff", "ast", "alt", "platelets"):
        if getattr(given, name) is not None:
            setattr(merged, name, getattr(given, name))
            source[name] = "given"
        elif getattr(from_header, name) is not None:
            setattr(merged, name, getattr(from_header, name))
            source[name] = header_source[name]
    return merged, source


def is_dicom_seg(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM Segmentation file (looked up in its header only)."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        if fh.read(132)[128:] != b"DICM":
            return False
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def read_mask_file(path: str | Path, mask_label: int | None = None) -> sitk.Image:
    """A liver mask file: NIfTI/NRRD/MHA labelmap, a DICOM folder, or a DICOM SEG file."""
    if is_dicom_seg(path):
        from .seg import read_seg_mask

        return read_seg_mask(path, "mask")
    return read_mask(path, mask_label, "mask")


def read_study_exam(selection: StudySelection, mask=None, mask_label: int | None = None, segmenter=None,
                    fit_adc: bool = True) -> tuple[ExamImages, dict | None]:
    """The exam of a study: T1w, T2w and DWI from the chosen series (a role with none: None, and
    ``left_out`` says why); the mask from ``mask`` (a file), from the study's liver SEG (``mask``
    None), or made by ``segmenter`` (``mask`` 'auto'). Returns the images and, for an automatic
    mask, how it was made."""
    chosen = selection.chosen
    if not chosen:
        raise InputError(f"study {selection.index.folder}", "has no T1w, T2w or DWI series")
    where = {r: f"{ROLE_NAMES[r]} series {c.series.label()}" for r, c in chosen.items()}
    t1 = read_instances(chosen["t1w"].instances, where["t1w"]) if "t1w" in chosen else None
    t2 = read_instances(chosen["t2w"].instances, where["t2w"]) if "t2w" in chosen else None
    dwi = read_dwi_instances(chosen["dwi"].instances, where["dwi"], fit_adc) if "dwi" in chosen else None
    paths = {r: f"{selection.index.folder} {where[r]} ({c.series.uid})" for r, c in chosen.items()}
    left_out = {r: why for r, why in selection.missing.items() if r not in chosen}
    if mask is not None and str(mask) == "auto":
        from ..segmentation.auto_mask import auto_mask

        if segmenter is None:
            raise InputError("--mask auto", "no segmenter given")
        if t2 is None:
            raise InputError("--mask auto", f"needs a T2w series (the liver model segments T2-weighted images); study "
                                            f"{selection.index.folder} has none: {left_out.get('t2w', 'not given')}")
        images, info = auto_mask(t1, t2, dwi, paths, segmenter, register=True)
        images.left_out = left_out
        return images, info
    if mask is not None:
        liver = read_mask_file(mask, mask_label)
        paths["mask"] = str(Path(mask).resolve())
    else:
        if selection.mask_series is None:
            raise InputError(f"study {selection.index.folder}", "has no liver SEG: give --mask FILE or --mask auto")
        from .seg import read_seg_mask

        seg = selection.mask_series
        liver = read_seg_mask(seg.files[0], f"mask SEG {seg.label()}")
        paths["mask"] = f"{selection.index.folder} SEG {seg.label()} ({seg.uid})"
    images = ExamImages(t1, t2, dwi, liver, paths, left_out=left_out)
    check_exam(images)
    return images, None
