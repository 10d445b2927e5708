"""Reading exam images through SimpleITK: NIfTI, NRRD, MetaImage, and DICOM series folders
(and writing result maps as gzipped NIfTI, :func:`write_nifti_gz`).

DWI comes as a 3-D volume at one b-value, a 4-D volume (NIfTI/NRRD) with one 3-D volume per
b-value, or a DICOM folder whose slices carry their b-value (standard tag or a vendor's private
one). With two or more b-values an ADC map is fitted log-linearly (S_b = S_0 e^(−b·ADC)).
Every failure is an :class:`InputError` that names the file; what is checked is in
:mod:`.input_checks`.
"""
from __future__ import annotations

import math
import os
import tempfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .input_checks import (
    check_file_values,
    check_geometry,
    check_label_map,
    check_sizes,
    check_values,
    count_nonfinite,
    nifti_float_voxels,
    nonfinite_message,
)

# Where scanners put the b-value (s/mm²): the standard tag, then vendors' private tags.
B_VALUE_TAGS = ((0x0018, 0x9087), (0x0019, 0x100C), (0x0043, 0x1039), (0x2001, 0x1003))
ADC_UNIT = 1e-3  # ADC maps are stored in 10⁻³ mm²/s


@dataclass
class DwiData:
    """DWI volumes (one 3-D image per b-value, increasing b) and the fitted ADC when possible."""

    images: list[sitk.Image]
    b_values: tuple[float, ...]
    adc: sitk.Image | None  # 10⁻³ mm²/s, on the DWI grid

    @property
    def high_b(self) -> sitk.Image:
        return self.images[-1]


def _check_exists(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path}", "file not found")
    return path


def _read_any(path: Path, what: str) -> sitk.Image:
    try:
        if path.is_dir():
            return _read_dicom_series(path, what)
        if path.name.lower().endswith((".nii", ".nii.gz")):
            img = _read_float_nifti(path, f"{what} {path}")
            if img is not None:
                return img
        img = sitk.ReadImage(str(path))
        check_file_values(path, f"{what} {path}")     # NaN/Inf as stored (what ITK's NIfTI reader hides)
        return img
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(f"{what} {path}", f"cannot be read as an image ({first[:160]})") from None


def _read_float_nifti(path: Path, where: str) -> sitk.Image | None:
    """A float NIfTI read once: its voxels as stored (checked for NaN/Inf, which ITK's reader
    would turn into 0) with ITK's reading of the header geometry (qform/sform, orientation).
    None when ITK should read it instead (other types, scaled values, an unusual layout)."""
    found = nifti_float_voxels(path)
    if found is None:
        return None
    vals, dims, slope, inter = found
    if (slope not in (0.0, 1.0) and math.isfinite(slope)) or (inter != 0.0 and math.isfinite(inter)):
        return None
    count, per_slice = count_nonfinite(vals, dims)
    if count:
        raise InputError(where, nonfinite_message(count, per_slice))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = tuple(reader.GetSize())
    trimmed = tuple(dims)
    while len(trimmed) > len(size) and trimmed[-1] == 1:
        trimmed = trimmed[:-1]
    if trimmed != size or reader.GetNumberOfComponents() != 1:
        return None
    img = sitk.GetImageFromArray(vals.reshape(size[::-1]).astype(np.float32), isVector=False)
    img.SetOrigin(reader.GetOrigin())
    img.SetSpacing(reader.GetSpacing())
    img.SetDirection(reader.GetDirection())
    return img


def _read_dicom_series(folder: Path, what: str) -> sitk.Image:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"{what} {folder}", "folder holds no DICOM series")
    if len(ids) > 1:
        raise InputError(f"{what} {folder}", f"folder holds {len(ids)} DICOM series; point to one series")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def read_volume(path: str | Path, what: str = "image", check_size: bool = True) -> sitk.Image:
    """A 3-D scalar image as float32, with its physical geometry (LPS); checked
    (:mod:`.input_checks`): size before reading, geometry, NaN/Inf, constant."""
    path = _check_exists(Path(path), what)
    where = f"{what} {path}"
    if check_size:                  # read_exam checks the four files together first
        check_sizes({what: path})
    img = _read_any(path, what)
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise InputError(where, f"is not 3-D (it has {img.GetDimension()} dimensions, size {img.GetSize()})")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(where, f"has {img.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar image")
    check_geometry(img, where)
    img = sitk.Cast(img, sitk.sitkFloat32)
    check_values(img, where)
    return img


def read_mask(path: str | Path, label: int | None = None, what: str = "mask", allow_empty: bool = False,
              check_size: bool = True) -> sitk.Image:
    """Liver labelmap → binary uint8 (1 = liver). ``label`` picks one value; without it the
    mask must hold a single non-zero label (several labels are an error: which is the liver?).

    An empty mask is an input error unless ``allow_empty`` (mask QA reports it as a flag).
    """
    path = _check_exists(Path(path), what)
    where = f"{what} {path}"
    if check_size:                  # read_exam checks the four files together first
        check_sizes({what: path})
    img = _read_any(path, what)
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(where, f"is not a 3-D label map ({img.GetDimension()} dimensions, "
                                f"{img.GetNumberOfComponentsPerPixel()} component(s) per voxel)")
    check_geometry(img, where)
    return binarize_mask(img, label, where, allow_empty)


def binarize_mask(img: sitk.Image, label: int | None, where: str, allow_empty: bool = False) -> sitk.Image:
    """A labelmap image → binary uint8 (1 = liver), same geometry; checked as a label map
    (:func:`~.input_checks.check_label_map`); ``label`` None: its single non-zero label."""
    arr = sitk.GetArrayFromImage(img)
    check_label_map(arr, label, where)
    binary = (np.rint(arr) == label) if label is not None else (arr != 0)
    if not binary.any() and not allow_empty:
        msg = f"has no voxel with label {label}" if label is not None else "is empty (no non-zero voxel)"
        raise InputError(where, msg)
    out = sitk.GetImageFromArray(binary.astype(np.uint8))
    out.CopyInformation(img)
    return out


def _dicom_b_value(ds) -> float | None:
    for tag in B_VALUE_TAGS:
        if tag in ds:
            raw = ds[tag].value
            if isinstance(raw, bytes):
                raw = raw.decode("ascii", "ignore").strip("\x00 ")
            if isinstance(raw, (list, tuple)) or (hasattr(raw, "__iter__") and not isinstance(raw, str)):
                raw = list(raw)[0]
            text = str(raw).split("\\")[0].strip()
            try:
                b = float(text)
            except ValueError:
                continue
            return b % 1e9 if tag == (0x0043, 0x1039) else b  # GE adds 1e9 in some versions
    return None


def _read_dicom_dwi(folder: Path, what: str) -> tuple[list[sitk.Image], tuple[float, ...]]:
    """Split a DICOM DWI series into one 3-D image per b-value (slices sorted along the normal)."""
    import pydicom

    groups: dict[float, list[tuple[float, str]]] = defaultdict(list)
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - non-DICOM files in the folder are skipped
            continue
        b = _dicom_b_value(ds)
        if b is None or "ImagePositionPatient" not in ds:
            continue
        iop = np.array(ds.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        groups[round(b, 1)].append((float(np.dot(normal, np.array(ds.ImagePositionPatient, float))), str(f)))
    if not groups:
        raise InputError(f"{what} {folder}", "no DICOM slice with a b-value (0018,9087 or a vendor tag) found")
    images, b_values = [], []
    for b in sorted(groups):
        files = [f for _, f in sorted(groups[b])]
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            images.append(sitk.Cast(reader.Execute(), sitk.sitkFloat32))
        except RuntimeError as exc:
            raise InputError(f"{what} {folder}", f"b = {b:g} slices cannot be read ({str(exc).splitlines()[-1][:120]})") from None
        b_values.append(b)
    return images, tuple(b_values)


def read_dwi(path: str | Path, b_values=None, what: str = "dwi", fit_adc: bool = True, check_size: bool = True) -> DwiData:
    """Read a DWI as 3-D (one b-value), 4-D (one volume per b-value) or a DICOM folder.

    ``b_values`` (s/mm²) must match the number of volumes of a NIfTI/NRRD file; a DICOM folder
    carries its own. Volumes are returned sorted by b.
    """
    path = _check_exists(Path(path), what)
    where = f"{what} {path}"
    if check_size:                  # read_exam checks the four files together first
        check_sizes({what: path})
    if path.is_dir() and len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))) >= 1:
        images, found = _read_dicom_dwi(path, what)
        b_values = found
    else:
        img = _read_any(path, what)
        if img.GetDimension() == 3:
            images = [sitk.Cast(img, sitk.sitkFloat32)]
        elif img.GetDimension() == 4:
            n = img.GetSize()[3]
            images = [sitk.Cast(img[:, :, :, k], sitk.sitkFloat32) for k in range(n)]
        else:
            raise InputError(where, f"is neither 3-D nor 4-D ({img.GetDimension()} dimensions)")
        if b_values is None:
            raise InputError(where, "needs its b-value(s) in s/mm² (manifest dwi_b or --dwi-b)")
        b_values = tuple(float(b) for b in (b_values if np.iterable(b_values) else [b_values]))
    return dwi_from_volumes(images, b_values, where, fit_adc)


def dwi_from_volumes(images: list[sitk.Image], b_values, where: str, fit_adc: bool = True) -> DwiData:
    """One 3-D volume per b-value (s/mm²), from a file or from Slicer nodes: checked, sorted by b,
    and with an ADC map when there are two or more b-values."""
    b_values = tuple(float(b) for b in b_values)
    if len(b_values) != len(images):
        raise InputError(where, f"has {len(images)} volume(s) but {len(b_values)} b-value(s) were given")
    for k, im in enumerate(images):
        if im.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(where, f"has {im.GetNumberOfComponentsPerPixel()} components per voxel; expected scalar volumes")
        check_geometry(im, where)
        check_values(im, f"{where} (b = {b_values[k]:g})")
    order = np.argsort(b_values)
    images = [images[k] for k in order]
    b_values = tuple(float(b_values[k]) for k in order)
    if len(set(b_values)) != len(b_values):
        raise InputError(where, f"repeats a b-value {b_values}")
    adc = fit_adc_map(images, b_values) if fit_adc and len(images) >= 2 else None
    return DwiData(images, b_values, adc)


def fit_adc_map(images: list[sitk.Image], b_values, floor: float = 1e-3) -> sitk.Image:
    """Least-squares fit of ln S = ln S0 − b·ADC per voxel; returns ADC in 10⁻³ mm²/s (≥ 0).

    Voxels whose signal is at the noise floor (≤ ``floor`` × the 99th percentile of the lowest-b
    image) give ADC 0, as scanners do.
    """
    b = np.asarray(b_values, float)
    stack = np.stack([sitk.GetArrayFromImage(im).astype(np.float64) for im in images])
    level = np.percentile(stack[0], 99) * floor
    valid = (stack > level).all(axis=0)
    logs = np.log(np.maximum(stack, level if level > 0 else 1e-12))
    bc = b - b.mean()
    slope = np.tensordot(bc, logs - logs.mean(axis=0), axes=(0, 0)) / (bc @ bc)
    adc = np.where(valid, np.clip(-slope / ADC_UNIT, 0, 5.0), 0.0).astype(np.float32)
    out = sitk.GetImageFromArray(adc)
    out.CopyInformation(images[0])
    return out


def geometry(img: sitk.Image) -> dict:
    """Size, spacing (mm), origin (mm, LPS) and direction cosines, for reports."""
    return {"size": list(img.GetSize()), "spacing_mm": [round(s, 4) for s in img.GetSpacing()],
            "origin_lps_mm": [round(o, 3) for o in img.GetOrigin()],
            "direction": [round(d, 6) for d in img.GetDirection()]}


def write_nifti_gz(img: sitk.Image, path: str | Path, dense: bool = False) -> None:
    """``img`` as a gzipped NIfTI file (``path`` ends in .nii.gz); errors are ITK's (RuntimeError)
    or the disk's (OSError).

    ``dense``: the voxel values hardly repeat (a float map that varies from voxel to voxel). ITK's
    compression spends most of its time there looking for repeated byte strings it will not find
    (0.15 s for a map on a 3-million-voxel grid); zlib's run-length strategy, in a standard gzip
    stream that every reader opens, takes less than half of that for a file 1–3 % larger. Images with
    repeats (labels, maps constant over patches) stay with ITK, which is fast on them and makes
    files many times smaller than run-length coding would."""
    path = Path(path)
    if not dense:
        sitk.WriteImage(img, str(path), useCompression=True)
        return
    fd, raw = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".nii", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(img, raw)
        gz = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)   # 16 +: gzip framing
        with open(raw, "rb") as src, open(path, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(gz.compress(chunk))
            dst.write(gz.flush())
    finally:
        os.unlink(raw)
