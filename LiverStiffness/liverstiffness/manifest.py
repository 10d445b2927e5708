"""The cohort manifest: one CSV row per exam, read by every cohort command.

Columns (paths relative to the CSV's folder)::

    case_id, patient_id, site, vendor, field_strength, t1w, t2w, dwi, dwi_b, mask,
    age, sex, bmi, pdff, stiffness_kpa

An optional ``study`` column names a DICOM study folder: ``predict`` and ``qa`` then read the
exam from it (series chosen by the selection rules, the mask from the study's liver SEG when the
``mask`` cell is empty) and ``t1w``, ``t2w``, ``dwi`` and ``dwi_b`` may be empty.

Any of ``t1w``, ``t2w`` and ``dwi`` may be empty (a protocol without that sequence), as long as
one is given; ``dwi_b`` is then empty too when there is no DWI.

``sex`` is F or M, ``field_strength`` in tesla, ``dwi_b`` in s/mm² (one value for a 3-D DWI, or
several separated by ``;`` for a 4-D DWI in the order of its volumes), ``pdff`` in percent and
optional, ``stiffness_kpa`` empty when unknown. Optional blood-test columns ``ast`` and ``alt``
(U/L) and ``platelets`` (10⁹/L), each of which may be empty; FIB-4 is computed from them with
the age (:func:`fib4`), never read. Repeat exams share a ``patient_id``. An empty
``mask`` asks ``predict`` and ``qa`` for an automatic mask (training and evaluation need one). An
optional ``mask_label`` column gives the liver's label in multi-label masks. Optional ``mre_map``
and ``mre_confidence`` columns name the exam's elastogram (kPa) and its confidence mask (nonzero:
reliable), both on the MRE grid, empty where an exam has none; training learns from them.

Manifests travel between sites, so they are untrusted input: a ``case_id`` becomes a folder
name, so it must be a plain name (letters, digits, ``.``, ``_``, ``-``; see :func:`check_case_id`)
and unique, also ignoring case; image paths are resolved against the manifest's folder unless
absolute; no column names an output place.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .mre import PLAUSIBLE_KPA

COLUMNS = (
    "case_id", "patient_id", "site", "vendor", "field_strength", "t1w", "t2w", "dwi", "dwi_b",
    "mask", "age", "sex", "bmi", "pdff", "stiffness_kpa",
)
IMAGE_COLUMNS = ("t1w", "t2w", "dwi", "mask")
SEQUENCE_COLUMNS = ("t1w", "t2w", "dwi")   # any may be empty, not all
LAB_COLUMNS = ("ast", "alt", "platelets")   # optional; written when any exam has one
MRE_COLUMNS = ("mre_map", "mre_confidence")   # optional, together: the elastogram and its confidence mask
OPTIONAL_COLUMNS = ("pdff", "mask_label", *LAB_COLUMNS, *MRE_COLUMNS)
STUDY_COLUMN = "study"           # optional: a DICOM study folder
# A case_id is used as a folder name under the output folder: a plain, portable name only.
SAFE_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Names the batch writes itself, and names Windows reserves for devices.
RESERVED_NAMES = {"predictions.csv", "qa.csv", "manifest.csv", "con", "prn", "aux", "nul",
                  *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}

# Plausible ranges for patient facts; outside them the value is a typing or unit error.
AGE_RANGE = (0.0, 120.0)        # years
BMI_RANGE = (10.0, 80.0)        # kg/m²
PDFF_RANGE = (0.0, 100.0)       # percent
FIELD_RANGE = (0.1, 11.7)       # tesla
B_VALUE_RANGE = (0.0, 5000.0)   # s/mm²
AST_RANGE = (1.0, 10000.0)      # U/L (acute hepatitis reaches thousands)
ALT_RANGE = (1.0, 10000.0)      # U/L
PLATELETS_RANGE = (1.0, 2000.0)  # 10⁹/L (a count per µL, e.g. 250000, is a unit error)


@dataclass
class PatientFacts:
    """Clinical covariates; ``None`` means unknown (the model has a missing-value path)."""

    age: float | None = None
    sex: str | None = None  # "F" or "M"
    bmi: float | None = None
    pdff: float | None = None
    ast: float | None = None        # aspartate aminotransferase, U/L
    alt: float | None = None        # alanine aminotransferase, U/L
    platelets: float | None = None  # platelet count, 10⁹/L

    @property
    def fib4(self) -> float | None:
        """FIB-4 from the age and the labs, or None when any of them is unknown (:func:`fib4`)."""
        return fib4(self.age, self.ast, self.alt, self.platelets)

    def validate(self, where: str = "patient") -> PatientFacts:
        _check_range(self.age, AGE_RANGE, f"{where} age", "years")
        _check_range(self.bmi, BMI_RANGE, f"{where} BMI", "kg/m²")
        _check_range(self.pdff, PDFF_RANGE, f"{where} PDFF", "%")
        _check_range(self.ast, AST_RANGE, f"{where} AST", "U/L")
        _check_range(self.alt, ALT_RANGE, f"{where} ALT", "U/L")
        _check_range(self.platelets, PLATELETS_RANGE, f"{where} platelets", "10⁹/L")
        if self.sex is not None and self.sex not in ("F", "M"):
            raise InputError(f"{where} sex", f"must be F or M, got {self.sex!r}")
        return self


def fib4(age: float | None, ast: float | None, alt: float | None, platelets: float | None) -> float | None:
    """FIB-4 = age (years) × AST (U/L) / (platelets (10⁹/L) × √ALT (U/L)) (Sterling et al.,
    Hepatology 2006); None when any input is unknown or not positive."""
    if any(v is None for v in (age, ast, alt, platelets)) or min(age, ast, alt, platelets) <= 0:
        return None
    return float(age) * float(ast) / (float(platelets) * math.sqrt(float(alt)))


@dataclass
class ExamRecord:
    """One manifest row with resolved absolute paths."""

    case_id: str
    patient_id: str
    t1w: Path | None                     # None: the exam has no such sequence
    t2w: Path | None
    dwi: Path | None
    mask: Path | None                    # None: automatic (an empty manifest cell)
    dwi_b: tuple[float, ...]
    site: str = ""
    vendor: str = ""
    field_strength: float | None = None
    facts: PatientFacts = field(default_factory=PatientFacts)
    stiffness_kpa: float | None = None
    mask_label: int | None = None
    study: Path | None = None            # a DICOM study folder (the images come from it)
    mre_map: Path | None = None          # the elastogram (kPa), when the exam has one
    mre_confidence: Path | None = None   # its confidence mask (nonzero: reliable)

    def as_row(self, base: Path) -> dict:
        """The CSV row, with paths relative to ``base``."""
        row = {
            "case_id": self.case_id, "patient_id": self.patient_id, "site": self.site,
            "vendor": self.vendor, "field_strength": _fmt(self.field_strength),
            "dwi_b": ";".join(_fmt(b) for b in self.dwi_b),
            "age": _fmt(self.facts.age), "sex": self.facts.sex or "", "bmi": _fmt(self.facts.bmi),
            "pdff": _fmt(self.facts.pdff), "stiffness_kpa": _fmt(self.stiffness_kpa),
            "mask_label": _fmt(self.mask_label),
            **{col: _fmt(getattr(self.facts, col)) for col in LAB_COLUMNS},
        }
        optional = ((STUDY_COLUMN,) if self.study is not None else ()) + (MRE_COLUMNS if self.mre_map is not None else ())
        for col in IMAGE_COLUMNS + optional:
            if getattr(self, col) is None:
                row[col] = ""
                continue
            p = Path(getattr(self, col)).resolve()
            try:
                row[col] = p.relative_to(base).as_posix()
            except ValueError:
                row[col] = str(p)
        return row


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
    return str(v)


def _check_range(value, bounds, what, unit):
    if value is None:
        return
    if not math.isfinite(value) or not bounds[0] <= value <= bounds[1]:
        raise InputError(what, f"{value} {unit} is outside the plausible range {bounds[0]}–{bounds[1]} {unit}")


def _number(text: str, what: str, required: bool = False) -> float | None:
    text = (text or "").strip()
    if not text:
        if required:
            raise InputError(what, "is empty")
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(what, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(what, f"{text!r} is not a finite number")
    return value


def parse_b_values(text: str, what: str = "dwi_b") -> tuple[float, ...]:
    """``"800"`` or ``"0;50;800"`` → b-values in s/mm²."""
    parts = [p for p in str(text).replace(",", ";").split(";") if p.strip()]
    if not parts:
        raise InputError(what, "no b-value given (s/mm²)")
    values = tuple(_number(p, what, required=True) for p in parts)
    for b in values:
        _check_range(b, B_VALUE_RANGE, what, "s/mm²")
    return values


def check_case_id(case_id: str, where: str) -> str:
    """``case_id`` if it is a safe folder name (it never leaves the output folder), else InputError."""
    if (not SAFE_CASE_ID.fullmatch(case_id) or case_id.endswith(".")
            or case_id.lower() in RESERVED_NAMES or case_id.split(".")[0].lower() in RESERVED_NAMES):
        raise InputError(where, f"case_id {case_id!r} is not a safe folder name: use letters, digits, '.', '_' and '-', "
                                "starting with a letter or digit, at most 128 characters")
    return case_id


def _image_path(text: str, base: Path, where: str) -> Path:
    if "\x00" in text:
        raise InputError(where, "contains a NUL character")
    p = Path(text).expanduser() if text.startswith("~") else Path(text)
    return p if p.is_absolute() else base / p


def _label(text: str, where: str) -> int | None:
    value = _number(text, where)
    if value is None:
        return None
    if value != int(value) or not 1 <= value <= 65535:
        raise InputError(where, f"{text!r} is not a label value (a whole number 1–65535)")
    return int(value)


def read_manifest(path: str | Path, require_label: bool = False, check_files: bool = True) -> list[ExamRecord]:
    """Read and validate a manifest. Raises :class:`InputError` naming the row and column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    base = path.resolve().parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable CSV ({exc})") from None
    missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL_COLUMNS]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    if not rows:
        raise InputError(path, "has no rows")

    records, seen = [], set()
    for line, raw in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        where = f"{path.name} line {line}"
        case_id = row["case_id"]
        if not case_id:
            raise InputError(where, "case_id is empty")
        check_case_id(case_id, where)
        if case_id.lower() in seen:
            raise InputError(where, f"case_id {case_id!r} appears twice (ignoring case: folders would collide)")
        seen.add(case_id.lower())
        paths = {}
        study = row.get(STUDY_COLUMN, "")
        if study:
            paths[STUDY_COLUMN] = _image_path(study, base, f"{where} ({case_id}) study")
            if check_files and not paths[STUDY_COLUMN].is_dir():
                raise InputError(f"{where} ({case_id}) study", f"{paths[STUDY_COLUMN]} is not a folder")
        if not study and not any(row[col] for col in SEQUENCE_COLUMNS):
            raise InputError(f"{where} ({case_id})", "has no image: t1w, t2w and dwi are all empty")
        for col in IMAGE_COLUMNS:
            if not row[col] and col in SEQUENCE_COLUMNS:
                paths[col] = None          # the protocol has no such sequence (or the study names it)
                continue
            if not row[col] and (col == "mask" or study) and not require_label:
                paths[col] = None          # automatic mask (predict, qa), or read from the study
                continue
            if not row[col]:
                hint = " (automatic masks are for predict and qa; training and evaluation need a mask)" if col == "mask" else ""
                raise InputError(f"{where} ({case_id}) {col}", f"is empty{hint}")
            p = _image_path(row[col], base, f"{where} ({case_id}) {col}")
            if check_files and not p.exists():
                raise InputError(f"{where} ({case_id}) {col}", f"{p} not found")
            paths[col] = p
        if bool(row.get("mre_map")) != bool(row.get("mre_confidence")):
            given, empty = ("mre_map", "mre_confidence") if row.get("mre_map") else ("mre_confidence", "mre_map")
            raise InputError(f"{where} ({case_id}) {empty}", f"is empty while {given} is given (an elastogram "
                             "is used with its confidence mask)")
        for col in MRE_COLUMNS:
            paths[col] = _image_path(row[col], base, f"{where} ({case_id}) {col}") if row.get(col) else None
            if check_files and paths[col] is not None and not paths[col].is_file():
                raise InputError(f"{where} ({case_id}) {col}", f"{paths[col]} not found")
        sex = row["sex"].upper() or None
        facts = PatientFacts(
            age=_number(row["age"], f"{where} age"), sex=sex,
            bmi=_number(row["bmi"], f"{where} bmi"), pdff=_number(row.get("pdff", ""), f"{where} pdff"),
            **{col: _number(row.get(col, ""), f"{where} {col}") for col in LAB_COLUMNS},
        ).validate(f"{where} ({case_id})")
        stiffness = _number(row["stiffness_kpa"], f"{where} stiffness_kpa", required=require_label)
        if stiffness is not None:
            _check_range(stiffness, PLAUSIBLE_KPA, f"{where} ({case_id}) stiffness_kpa", "kPa")
        fs = _number(row["field_strength"], f"{where} field_strength")
        _check_range(fs, FIELD_RANGE, f"{where} ({case_id}) field_strength", "T")
        records.append(ExamRecord(
            case_id=case_id, patient_id=row["patient_id"] or case_id, site=row["site"],
            vendor=row["vendor"], field_strength=fs,
            dwi_b=parse_b_values(row["dwi_b"], f"{where} dwi_b") if row["dwi_b"] or (row["dwi"] and not study) else (),
            facts=facts, stiffness_kpa=stiffness, mask_label=_label(row.get("mask_label", ""), f"{where} mask_label"),
            **paths,
        ))
    return records


def write_manifest(path: str | Path, records: list[ExamRecord]) -> None:
    path = Path(path)
    base = path.resolve().parent
    labs = any(getattr(r.facts, col) is not None for r in records for col in LAB_COLUMNS)
    columns = COLUMNS + (("mask_label",) if any(r.mask_label is not None for r in records) else ()) \
        + (LAB_COLUMNS if labs else ()) + ((STUDY_COLUMN,) if any(r.study is not None for r in records) else ()) \
        + (MRE_COLUMNS if any(r.mre_map is not None for r in records) else ())
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for rec in records:
            writer.writerow(rec.as_row(base))
