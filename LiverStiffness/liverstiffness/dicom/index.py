"""Index a DICOM study folder from headers only, and group its files into series.

Only the attributes the selection rules and the readers need are read (``specific_tags``, no
pixel data), so thousands of files index in seconds. Files that are not DICOM (a README, a
DICOMDIR, thumbnails) are counted and skipped.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..imageio import B_VALUE_TAGS, _dicom_b_value

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

#: Header attributes read from every file (keywords), plus the vendor b-value tags.
HEADER_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "InstanceNumber",
    "Modality", "SeriesDescription", "ProtocolName", "StudyDescription", "StudyDate", "Manufacturer",
    "ManufacturerModelName", "MagneticFieldStrength", "ImageType", "ScanningSequence", "SequenceVariant",
    "ScanOptions", "EchoTime", "EchoNumbers", "RepetitionTime", "FlipAngle", "ContrastBolusAgent",
    "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns", "NumberOfFrames",
    "PatientID", "PatientName", "PatientAge", "PatientSex", "PatientSize", "PatientWeight", "PatientBirthDate",
    "AccessionNumber", "FrameOfReferenceUID", "DiffusionBValue",
)

# Fat-water chemical shift, 3.4 ppm of the proton frequency (42.577 MHz/T): 144.8 Hz per tesla.
FAT_WATER_SHIFT_HZ_PER_T = 3.4e-6 * 42.577e6
# An echo is in phase (opposed phase) when fat and water have turned within this many cycles of
# a whole (half) turn apart: 0.15 cycles is ±0.7 ms at 1.5 T, enough for scanners' rounding.
PHASE_TOLERANCE_CYCLES = 0.15


@dataclass
class Instance:
    """One image file: what selection and reading need to know about it."""

    path: Path
    sop_uid: str
    instance_number: int | None
    position: tuple[float, float, float] | None      # ImagePositionPatient, mm (LPS)
    orientation: tuple[float, ...] | None            # ImageOrientationPatient (row, column cosines)
    echo_time_ms: float | None
    b_value: float | None                            # s/mm², standard or vendor tag
    image_type: tuple[str, ...] = ()
    frames: int = 1

    def along_normal(self) -> float:
        """Position along the slice normal (mm), the order slices are stacked in."""
        iop = np.asarray(self.orientation, float)
        return float(np.dot(np.cross(iop[:3], iop[3:]), np.asarray(self.position, float)))


@dataclass
class Series:
    """A series of the study, summarised from its instances' headers."""

    uid: str
    number: int | None
    description: str
    modality: str
    sop_class_uid: str
    study_uid: str
    instances: list[Instance] = field(default_factory=list)
    protocol: str = ""
    manufacturer: str = ""
    field_strength_t: float | None = None
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    scan_options: tuple[str, ...] = ()
    repetition_time_ms: float | None = None
    flip_angle_deg: float | None = None
    contrast_agent: str = ""
    header: object = None                            # the first instance's header (pydicom Dataset)

    @property
    def files(self) -> list[Path]:
        return [i.path for i in self.instances]

    @property
    def image_type(self) -> tuple[str, ...]:
        """Every ImageType value seen in the series (vendors mark derived maps per instance)."""
        seen: list[str] = []
        for inst in self.instances:
            seen += [v for v in inst.image_type if v not in seen]
        return tuple(seen)

    @property
    def echo_times_ms(self) -> tuple[float, ...]:
        return tuple(sorted({round(i.echo_time_ms, 3) for i in self.instances if i.echo_time_ms is not None}))

    @property
    def b_values(self) -> tuple[float, ...]:
        return tuple(sorted({round(i.b_value, 1) for i in self.instances if i.b_value is not None}))

    @property
    def n_positions(self) -> int:
        return len({tuple(np.round(i.position, 2)) for i in self.instances if i.position is not None})

    @property
    def multiframe(self) -> bool:
        return any(i.frames > 1 for i in self.instances)

    @property
    def normal(self) -> np.ndarray | None:
        first = next((i for i in self.instances if i.orientation is not None), None)
        if first is None:
            return None
        iop = np.asarray(first.orientation, float)
        return np.cross(iop[:3], iop[3:])

    @property
    def orientation(self) -> str:
        """axial, coronal or sagittal (the slice normal within 30° of that axis), else oblique."""
        n = self.normal
        if n is None:
            return "unknown"
        n = np.abs(n) / (np.linalg.norm(n) or 1.0)
        axis = int(np.argmax(n))
        if n[axis] < np.cos(np.deg2rad(30)):
            return "oblique"
        return ("sagittal", "coronal", "axial")[axis]

    def echo_phase(self, te_ms: float) -> str:
        """'in', 'opposed' or 'neither': where fat and water stand at echo time ``te_ms``
        at this series' field strength."""
        if not self.field_strength_t:
            return "neither"
        cycles = te_ms * 1e-3 * FAT_WATER_SHIFT_HZ_PER_T * self.field_strength_t
        frac = cycles - np.floor(cycles)
        if min(frac, 1 - frac) <= PHASE_TOLERANCE_CYCLES:
            return "in"
        if abs(frac - 0.5) <= PHASE_TOLERANCE_CYCLES:
            return "opposed"
        return "neither"

    def label(self) -> str:
        return f"#{self.number if self.number is not None else '?'} {self.description or '(no description)'}"


@dataclass
class StudyIndex:
    """All series found under a folder (one study), and what was skipped."""

    folder: Path
    series: list[Series]
    study_uid: str
    skipped_files: int = 0

    def by_uid(self, uid: str) -> Series | None:
        return next((s for s in self.series if s.uid == uid), None)

    def find(self, key: str) -> Series | None:
        """A series by SeriesInstanceUID or by series number ('7' or '#7')."""
        hit = self.by_uid(key)
        if hit is not None:
            return hit
        text = key.lstrip("#")
        if text.isdigit():
            matches = [s for s in self.series if s.number == int(text)]
            return matches[0] if len(matches) == 1 else None
        return None

    @property
    def image_series(self) -> list[Series]:
        return [s for s in self.series if s.sop_class_uid != SEG_SOP_CLASS]

    @property
    def seg_series(self) -> list[Series]:
        return [s for s in self.series if s.sop_class_uid == SEG_SOP_CLASS]


def _number(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _strings(value) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, (str, bytes)):
        value = [value]
    return tuple(str(v).strip().upper() for v in value)


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    tags = list(HEADER_KEYWORDS) + [pydicom.tag.Tag(*t) for t in B_VALUE_TAGS]
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=tags)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError):
        return None


def _files_under(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return out


def index_study(folder: str | Path, study_uid: str | None = None) -> StudyIndex:
    """Read every file's header under ``folder`` and group them into series of one study.

    A folder with several studies needs ``study_uid``; the error lists them.
    """
    folder = Path(folder)
    where = f"study {folder}"
    if not folder.is_dir():
        raise InputError(where, "is not a folder")
    groups: dict[str, list] = defaultdict(list)
    skipped = 0
    for path in _files_under(folder):
        ds = _read_header(path)
        if ds is None or "SeriesInstanceUID" not in ds or str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP_CLASS:
            skipped += 1
            continue
        groups[str(ds.SeriesInstanceUID)].append((path, ds))
    if not groups:
        raise InputError(where, f"holds no DICOM image ({skipped} file(s) looked at)")
    studies = sorted({str(items[0][1].get("StudyInstanceUID", "")) for items in groups.values()})
    if study_uid is None and len(studies) > 1:
        raise InputError(where, f"holds {len(studies)} studies ({', '.join(studies)}); choose one with --study-uid")
    chosen = study_uid or studies[0]
    if chosen not in studies:
        raise InputError(where, f"holds no study {chosen} (it holds {', '.join(studies)})")
    series = [_series(uid, items) for uid, items in groups.items()
              if str(items[0][1].get("StudyInstanceUID", "")) == chosen]
    series.sort(key=lambda s: (s.number if s.number is not None else 10**9, s.uid))
    return StudyIndex(folder, series, chosen, skipped)


def _series(uid: str, items: list) -> Series:
    first = items[0][1]
    instances = []
    for path, ds in items:
        pos, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        instances.append(Instance(
            path=path, sop_uid=str(ds.get("SOPInstanceUID", "")), instance_number=_int(ds.get("InstanceNumber")),
            position=tuple(float(v) for v in pos) if pos is not None and len(pos) == 3 else None,
            orientation=tuple(float(v) for v in iop) if iop is not None and len(iop) == 6 else None,
            echo_time_ms=_number(ds.get("EchoTime")), b_value=_dicom_b_value(ds),
            image_type=_strings(ds.get("ImageType")), frames=_int(ds.get("NumberOfFrames")) or 1))
    instances.sort(key=lambda i: (i.instance_number if i.instance_number is not None else 0, str(i.path)))
    return Series(
        uid=uid, number=_int(first.get("SeriesNumber")), description=str(first.get("SeriesDescription", "") or ""),
        modality=str(first.get("Modality", "") or "").upper(), sop_class_uid=str(first.get("SOPClassUID", "")),
        study_uid=str(first.get("StudyInstanceUID", "")), instances=instances,
        protocol=str(first.get("ProtocolName", "") or ""), manufacturer=str(first.get("Manufacturer", "") or ""),
        field_strength_t=_field_strength(first.get("MagneticFieldStrength")),
        scanning_sequence=_strings(first.get("ScanningSequence")), sequence_variant=_strings(first.get("SequenceVariant")),
        scan_options=_strings(first.get("ScanOptions")), repetition_time_ms=_number(first.get("RepetitionTime")),
        flip_angle_deg=_number(first.get("FlipAngle")), contrast_agent=str(first.get("ContrastBolusAgent", "") or "").strip(),
        header=first)


def _int(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _field_strength(value) -> float | None:
    """Tesla; some old headers give it in gauss (15000 for 1.5 T)."""
    b = _number(value)
    if b is None or b <= 0:
        return None
    return b / 10000.0 if b > 100 else b
