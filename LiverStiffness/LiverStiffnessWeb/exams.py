"""Exams on disk for the web front end: folders under ``--data`` (never outside it), the series
in each, which sequence each one is, and the DWI b-values.

An exam is a folder holding image files (NIfTI, NRRD, MetaImage) and/or DICOM series folders.
Sequences are assigned from names (file name, DICOM SeriesDescription) where they are clear;
b-values come from DICOM tags, an FSL ``.bval`` file beside the DWI, or a ``manifest.csv``
(``liverstiffness synth`` writes one) in the exam's folder or above it, inside ``--data``.
Reading goes through the core's readers (``liverstiffness.imageio``), so files are understood
exactly as ``liverstiffness predict`` understands them.
"""
from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from liverstiffness.errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
ROLES = ("t1w", "t2w", "dwi", "mask")
# The patient facts a manifest row gives an exam (its blood-test columns are optional: manifest.LAB_COLUMNS).
FACT_COLUMNS = ("age", "sex", "bmi", "pdff", "ast", "alt", "platelets")
# Name patterns, tried in this order (a mask named "t1w_mask" is a mask, a "dwi_t2" is a DWI).
ROLE_PATTERNS = (
    ("mask", re.compile(r"mask|liver[_ -]?seg|segment|label|seg\b", re.I)),
    ("dwi", re.compile(r"dwi|diff|\bb\d{2,4}\b|trace|ep2d", re.I)),
    ("t1w", re.compile(r"t1|vibe|lava|thrive|dixon|in[_ -]?phase|opp", re.I)),
    ("t2w", re.compile(r"t2|haste|ssfse|spair|spir|tse", re.I)),
)
# Files beside an exam that are no series of it: a synthetic phantom's tissue labels (its ground
# truth, which no model reads; ``liverstiffness synth`` writes it into each exam folder).
NOT_SERIES = re.compile(r"^truth_labels\.", re.I)
# The exam's elastogram a manifest row names (its mre_map and mre_confidence columns): what a model
# that draws a stiffness map was trained against, never an input of the estimate.
TARGET_COLUMNS = ("mre_map", "mre_confidence")
MAX_DEPTH = 4          # how deep the exam list looks under --data
MAX_EXAMS = 500


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative``, resolved (links followed); InputError when it leaves ``root``."""
    root = Path(root).resolve()
    text = str(relative or ".")
    if "\x00" in text:
        raise InputError("exam", "invalid path")
    path = (root / text).resolve()
    if path != root and root not in path.parents:
        raise InputError(f"exam {text}", "is outside the data folder; only exams under --data can be opened")
    return path


def _is_image_file(p: Path) -> bool:
    return (p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and not p.name.startswith(".")
            and not NOT_SERIES.match(p.name))


def _is_dicom_file(p: Path) -> bool:
    if not p.is_file() or p.name.startswith("."):
        return False
    if p.suffix.lower() == ".dcm":
        return True
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_folder(p: Path) -> bool:
    try:
        return p.is_dir() and any(_is_dicom_file(f) for f in list(p.iterdir())[:20])
    except OSError:
        return False


def list_exams(root: Path) -> list[str]:
    """Folders under ``root`` (relative, '/'-separated) that hold image files or DICOM series."""
    root = Path(root).resolve()
    found = []

    def walk(folder: Path, depth: int) -> None:
        if len(found) >= MAX_EXAMS or depth > MAX_DEPTH:
            return
        try:
            children = sorted(folder.iterdir())
        except OSError:
            return
        if any(_is_image_file(c) for c in children) or any(_dicom_folder(c) for c in children if c.is_dir()):
            found.append(folder.relative_to(root).as_posix() if folder != root else ".")
        for c in children:
            if c.is_dir() and not c.name.startswith(".") and not _dicom_folder(c):
                if c.resolve() == root or root in c.resolve().parents:  # a link out of --data is not followed
                    walk(c, depth + 1)

    walk(root, 0)
    return found


@dataclass
class Series:
    """One image in an exam: a file or a DICOM series folder."""

    name: str                  # as shown: the file or folder name
    path: Path
    role: str = ""             # t1w, t2w, dwi, mask, or "" when the name does not say
    description: str = ""      # DICOM SeriesDescription, when there is one
    b_values: tuple = ()       # for a DWI, when known (DICOM tags, .bval, manifest)
    info: dict = field(default_factory=dict)


def guess_role(*names: str) -> str:
    text = " ".join(n for n in names if n)
    for role, pattern in ROLE_PATTERNS:
        if pattern.search(text):
            return role
    return ""


def _series_description(folder: Path) -> str:
    try:
        import pydicom

        first = next(f for f in sorted(folder.iterdir()) if _is_dicom_file(f))
        ds = pydicom.dcmread(str(first), stop_before_pixels=True)
        return str(getattr(ds, "SeriesDescription", "") or "")
    except Exception:  # noqa: BLE001 - a description is a convenience; the reader reports real errors
        return ""


def _stem(p: Path) -> str:
    name = p.name
    for s in IMAGE_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def manifest_row(root: Path, folder: Path) -> dict:
    """The row of a manifest.csv (in ``folder`` or above it, inside ``root``) whose images lie in
    ``folder``: b-values and patient facts for that exam. Empty when there is none."""
    here = folder
    while True:
        m = here / "manifest.csv"
        if m.is_file():
            try:
                with open(m, newline="") as fh:
                    for row in csv.DictReader(fh):
                        cell = (row.get("t1w") or row.get("dwi") or "").strip()
                        if cell and (m.parent / cell).resolve().parent == folder.resolve():
                            return row
            except (OSError, csv.Error, UnicodeDecodeError):
                pass
        if here == root or root not in here.parents:
            return {}
        here = here.parent


@dataclass
class Exam:
    series: list[Series]
    facts: dict = field(default_factory=dict)   # age, sex, bmi, pdff, ast, alt, platelets from a manifest, as text


def _strength(s: Series) -> int:
    """How plainly the name says its role: the role's own word (mask, dwi, t1, t2) beats a hint."""
    words = {"mask": r"mask", "dwi": r"dwi", "t1w": r"t1", "t2w": r"t2"}
    return 2 if re.search(words[s.role], f"{s.name} {s.description}", re.I) else 1


def scan_exam(root: Path, folder: Path) -> Exam:
    """The series of exam ``folder`` (inside ``root``) with their guessed roles and b-values."""
    from liverstiffness.manifest import parse_b_values

    root = Path(root).resolve()
    row = manifest_row(root, folder)
    targets = {Path(row[c].strip()).name for c in TARGET_COLUMNS if (row.get(c) or "").strip()}
    out = []
    for p in sorted(folder.iterdir()):
        if p.name in targets:
            continue
        if _is_image_file(p):
            s = Series(p.name, p, guess_role(_stem(p)))
        elif _dicom_folder(p):
            desc = _series_description(p)
            s = Series(p.name, p, guess_role(p.name, desc), desc)
        else:
            continue
        if s.role == "dwi" and p.is_file():
            bval = p.parent / (_stem(p) + ".bval")
            try:
                if bval.is_file():
                    s.b_values = tuple(float(x) for x in bval.read_text().split())
                elif row.get("dwi_b", "").strip() and Path(row.get("dwi", "")).name == p.name:
                    s.b_values = parse_b_values(row["dwi_b"])
            except (ValueError, InputError):
                pass
        out.append(s)
    # A role named by several series is clear only when one names it plainly (mask.nii.gz beside
    # liver_labels.nii.gz); otherwise all of them are left to the pickers.
    for role in ROLES:
        same = [s for s in out if s.role == role]
        if len(same) > 1:
            best = max(_strength(s) for s in same)
            keep = [s for s in same if _strength(s) == best]
            for s in same:
                if len(keep) > 1 or s is not keep[0]:
                    s.role = ""
    facts = {k: (row.get(k) or "").strip() for k in FACT_COLUMNS if (row.get(k) or "").strip()}
    return Exam(out, facts)


# ---------------------------------------------------------------------------------------------- uploads

def safe_upload_name(name: str) -> str:
    """The last component of a browser-supplied file name, with anything odd replaced."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .")
    return base or "upload"


def save_uploads(files: list[dict], dest: Path, max_bytes: int) -> list[Path]:
    """Write files sent by the browser (``{"name", "content"}`` dicts, as trame sends them) into
    ``dest``. InputError, with nothing written, when they exceed ``max_bytes`` together."""
    total = 0
    for f in files:
        content = f.get("content") or b""
        if isinstance(content, list):  # trame sends big files in chunks
            total += sum(len(c) for c in content)
        else:
            total += len(content)
    if total > max_bytes:
        raise InputError("upload", f"{total / 1e6:.1f} MB is over the limit of {max_bytes / 1e6:.0f} MB")
    if not files:
        raise InputError("upload", "no file was sent")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for f in files:
            path = dest / safe_upload_name(f.get("name", ""))
            content = f.get("content") or b""
            with open(path, "wb") as fh:
                for chunk in content if isinstance(content, list) else [content]:
                    fh.write(chunk)
            written.append(path)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return written


def group_dicom_uploads(folder: Path) -> None:
    """Uploaded DICOM files land flat in ``folder``: move each series into its own sub-folder
    (named after its SeriesDescription or number), so each can be picked as one image."""
    import pydicom

    dicoms = [p for p in folder.iterdir() if _is_dicom_file(p)]
    if not dicoms:
        return
    for p in dicoms:
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True)
            label = str(getattr(ds, "SeriesDescription", "") or f"series {getattr(ds, 'SeriesNumber', 0)}")
            uid = str(getattr(ds, "SeriesInstanceUID", label))
        except Exception:  # noqa: BLE001 - not readable as DICOM after all: leave it, the reader will say so
            continue
        sub = folder / safe_upload_name(f"{label} {uid[-6:]}")
        sub.mkdir(exist_ok=True)
        shutil.move(str(p), sub / p.name)
