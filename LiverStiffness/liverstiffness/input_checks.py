"""Checks every input image before it is used, so that damaged data ends in one clear line
(an :class:`InputError` naming the input) instead of an estimate that looks valid.

What is checked, and what happens (docs/reliability.md, "Input checks", lists the same):

* geometry of every image: voxel spacing finite and within :data:`SPACING_MM`, direction
  cosines orthonormal, origin finite, physical extent plausible for an abdomen
  (:data:`MIN_EXTENT_MM` on every axis, at most :data:`MAX_INPLANE_EXTENT_MM` left–right and
  front–back and :data:`MAX_EXTENT_MM` along the body) — an error;
* voxel values: any NaN or ±Inf voxel — an error (NIfTI files are scanned on disk, because
  ITK's NIfTI reader silently turns them into 0); a constant image (all zero, or one value) —
  an error; clearly negative values (a phase or subtraction image, not magnitude) — an error;
  in a sequence, a blank slice (one value throughout) where the liver is — an error
  (a NaN slice written by a broken conversion reads back as such a slice);
* size before reading the voxels: an image whose header asks for more memory than is
  available (or than :data:`MAX_VOXELS` for one image) — an error that gives the size needed;
* the mask: non-integer or non-finite values, a label that is not there, several labels when
  none was asked for — an error;
* the sequences against the mask: a sequence whose field of view covers less than
  :data:`MIN_LIVER_COVERAGE` of the liver — an error; less than :data:`WARN_LIVER_COVERAGE` —
  a warning the report carries; a DWI whose liver signal rises with b (b-values in the wrong
  order) or whose liver ADC is not physiological (b-values in the wrong unit) — an error.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

#: Plausible voxel spacing (mm) of an abdominal MR image: finer is a unit error (m, µm), coarser
#: is not an image of the liver.
SPACING_MM = (0.1, 20.0)
#: Physical extent (mm) per axis: at least this on every axis (a slab any thinner holds no organ;
#: whether the liver is covered is checked against the mask) ...
MIN_EXTENT_MM = 20.0
#: ... at most this left–right and front–back (MR bores are 60–70 cm wide) ...
MAX_INPLANE_EXTENT_MM = 700.0
#: ... and at most this along the body (whole-body coverage).
MAX_EXTENT_MM = 2000.0
#: Orthonormality tolerance of the direction cosines (|DᵀD − I|, |det D| − 1).
DIRECTION_TOLERANCE = 1e-3
#: One image of more voxels than this is refused whatever the memory (2²⁸: 1 GB as float32,
#: e.g. 1024 × 1024 × 256; a clinical 512 × 512 × 160 T1w is 42 M).
MAX_VOXELS = 2 ** 28
#: Peak memory of one exam per voxel in its files (bytes): the images as float32, the mask, the
#: ADC fit, QA's and the maps' copies on the T1w grid. bench/bench_clinical.py measured 15 beyond
#: the base on a 95 M-voxel exam (2.2 GB peak); 24 keeps a margin.
BYTES_PER_VOXEL = 24
#: Peak memory of an exam besides its voxels (bytes): the libraries and the model (~0.75 GB measured).
BASE_BYTES = 900 * 2 ** 20
#: Share of the liver mask a sequence must cover (below: error) or should cover (below: warning).
MIN_LIVER_COVERAGE = 0.8
WARN_LIVER_COVERAGE = 0.97
#: Share of the liver mask where a sequence is exactly zero above which the report warns of a
#: signal void: magnitude noise is never exactly zero in tissue, a dropout or zero-filled region is.
WARN_LIVER_ZERO_SHARE = 0.01
#: Liver ADC (10⁻³ mm²/s) outside this range is not tissue: the b-values are wrong.
PLAUSIBLE_LIVER_ADC = (0.2, 4.0)
#: Magnitude images are ≥ 0; a little below (interpolation ringing) is tolerated, but not a 1st
#: percentile below this share of minus the 99th (a phase, subtraction or sign-flipped image).
NEGATIVE_FRACTION = 0.05
MEMORY_ENV = "LIVERSTIFFNESS_MAX_MEMORY_GB"


# ----------------------------------------------------------------------------------- geometry
def check_geometry(img: sitk.Image, where: str) -> None:
    """Spacing, direction, origin and extent of a 3-D image (see the module docstring)."""
    size = img.GetSize()
    if len(size) != 3 or min(size) < 2:
        raise InputError(where, f"is not a 3-D volume (size {size})")
    sp = np.array(img.GetSpacing(), float)
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(where, f"has an invalid voxel spacing {tuple(sp.tolist())} mm")
    if sp.min() < SPACING_MM[0] or sp.max() > SPACING_MM[1]:
        raise InputError(where, f"has a voxel spacing of {_fmt(sp)} mm, outside {SPACING_MM[0]:g}–{SPACING_MM[1]:g} mm "
                                "(a unit error in the header?)")
    d = np.array(img.GetDirection(), float).reshape(3, 3)
    if not np.all(np.isfinite(d)):
        raise InputError(where, "has non-finite direction cosines")
    if np.abs(d.T @ d - np.eye(3)).max() > DIRECTION_TOLERANCE or abs(abs(np.linalg.det(d)) - 1) > DIRECTION_TOLERANCE:
        raise InputError(where, f"has direction cosines that are not orthonormal ({_fmt(d.ravel())}); "
                                "the image's orientation is undefined")
    if not np.all(np.isfinite(img.GetOrigin())):
        raise InputError(where, f"has a non-finite origin {img.GetOrigin()}")
    extent = np.abs(d) @ (sp * np.array(size))          # physical extent along L, P, S (mm)
    if extent.min() < MIN_EXTENT_MM:
        raise InputError(where, f"covers only {_fmt(extent)} mm (LPS): too small for an abdominal image "
                                f"(at least {MIN_EXTENT_MM:g} mm on every axis)")
    if extent[:2].max() > MAX_INPLANE_EXTENT_MM or extent[2] > MAX_EXTENT_MM:
        raise InputError(where, f"covers {_fmt(extent)} mm (LPS): larger than a body (a unit error in the header?)")


def _fmt(v) -> str:
    return "×".join(f"{x:.4g}" for x in np.ravel(v))


# ------------------------------------------------------------------------------------- values
def check_values(img: sitk.Image, where: str) -> None:
    """No NaN/Inf voxel, and not one value throughout."""
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(where, nonfinite_message(int(bad.sum()), bad.reshape(bad.shape[0], -1).mean(axis=1)))
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise InputError(where, f"is constant (every voxel is {lo:g}): it holds no image")
    if lo < 0:
        sample = arr.ravel()[:: max(1, arr.size // 200_000)]          # percentiles of a regular sample
        p1, p99 = (float(v) for v in np.percentile(sample, [1, 99]))
        if p99 <= 0 or p1 < -NEGATIVE_FRACTION * p99:
            raise InputError(where, f"has negative values down to {lo:.4g} (1st percentile {p1:.4g}, 99th {p99:.4g}): "
                                    "a phase or subtraction image, not an MR magnitude image")


def nonfinite_message(n: int, per_slice_fraction: np.ndarray) -> str:
    whole = np.flatnonzero(per_slice_fraction > 0.5)
    where = (f"; slice(s) {_ranges(whole)} of {len(per_slice_fraction)} almost entirely" if len(whole) else "")
    return (f"has {n} NaN/Inf voxel(s){where} (a broken conversion?); re-export the image — "
            "no estimate is made from damaged voxels")


def _ranges(idx) -> str:
    idx = [int(i) for i in idx]
    out, start = [], None
    for a, b in zip(idx, idx[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}–{a}")
            start = None
    return ", ".join(out[:6]) + (" …" if len(out) > 6 else "")


_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _head(path: Path, n: int = 540) -> bytes:
    """The first ``n`` bytes of a file, uncompressed when it is gzip."""
    with open(path, "rb") as fh:
        data = fh.read(4096)
        if data[:2] != b"\x1f\x8b":
            return data[:n]
        d = zlib.decompressobj(31)
        out = d.decompress(data, n)
        while len(out) < n and not d.eof:
            more = fh.read(4096)
            if not more:
                break
            out += d.decompress(d.unconsumed_tail + more, n - len(out))
        return out[:n]


def nifti_float_voxels(path: Path):
    """(voxels as a flat array in file order, dims, scl_slope, scl_inter) of a float NIfTI-1/-2
    file as stored, or None when it is not one (other types cannot hold NaN). The file is
    uncompressed once, in one call (the fastest way through a gzip stream)."""
    try:
        info = _nifti_layout(_head(path))
        if info is None:
            return None
        dims, code, offset, endian, slope, inter = info
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = zlib.decompress(raw, 31)
        dtype = np.dtype(_NIFTI_FLOATS[code]).newbyteorder(endian)
        n = int(np.prod(dims, dtype=np.int64))
        if len(raw) < offset + n * dtype.itemsize:
            return None        # truncated: the reader says so
        return np.frombuffer(raw, dtype, count=n, offset=offset), dims, slope, inter
    except (OSError, EOFError, ValueError, struct.error, zlib.error):
        return None            # the reader decides about unreadable files


def count_nonfinite(vals: np.ndarray, dims) -> tuple[int, np.ndarray]:
    """(NaN/Inf count, fraction per slice along the third axis, all volumes together)."""
    nx, ny = dims[0], dims[1] if len(dims) > 1 else 1
    nz = dims[2] if len(dims) > 2 else 1
    per_slice = np.zeros(nz, np.int64)
    count = 0
    step = 1 << 22                                 # 4 M voxels at a time: small temporaries
    for start in range(0, vals.size, step):
        bad = np.flatnonzero(~np.isfinite(vals[start:start + step]))
        if bad.size:
            count += bad.size
            np.add.at(per_slice, ((start + bad) // (nx * ny)) % nz, 1)
    n_volumes = max(1, int(np.prod(dims[3:])) if len(dims) > 3 else 1)
    return count, per_slice / float(nx * ny * n_volumes)


def nifti_nonfinite(path: Path) -> tuple[int, np.ndarray] | None:
    """Count NaN/Inf voxels of a float NIfTI file as stored (ITK's reader turns them into 0):
    (count, fraction non-finite per slice), or None when the file is not a float NIfTI."""
    found = nifti_float_voxels(path)
    return None if found is None else count_nonfinite(found[0], found[1])


def _nifti_layout(head: bytes):
    """(dims, datatype, data offset, byte order, scl_slope, scl_inter) of a float NIfTI header, else None."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            ndim = struct.unpack(endian + "h", head[40:42])[0]
            dims = struct.unpack(endian + "7h", head[42:56])[:max(1, min(ndim, 7))]
            code = struct.unpack(endian + "h", head[70:72])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            slope, inter = struct.unpack(endian + "2f", head[112:120])
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            code = struct.unpack(endian + "h", head[12:14])[0]
            ndim = struct.unpack(endian + "q", head[16:24])[0]
            dims = struct.unpack(endian + "7q", head[24:80])[:max(1, min(ndim, 7))]
            offset = int(struct.unpack(endian + "q", head[168:176])[0])
            slope, inter = struct.unpack(endian + "2d", head[176:192])
            break
    else:
        return None
    if code not in _NIFTI_FLOATS or any(d < 1 for d in dims) or offset < 0:
        return None
    return tuple(int(d) for d in dims), code, offset, endian, float(slope), float(inter)


def check_file_values(path: Path, where: str) -> None:
    """For NIfTI files: NaN/Inf as stored on disk (the reader hides them)."""
    name = path.name.lower()
    if path.is_file() and name.endswith((".nii", ".nii.gz")):
        found = nifti_nonfinite(path)
        if found and found[0]:
            raise InputError(where, nonfinite_message(*found))


# -------------------------------------------------------------------------------------- size
def header_voxels(path: Path) -> tuple[int, tuple[int, ...]] | None:
    """(voxels, size) from a file's header without reading its voxels; None when unknown."""
    try:
        if path.is_dir():
            ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            if len(ids) != 1:
                return None
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0])
            r = sitk.ImageFileReader()
            r.SetFileName(files[0])
            r.ReadImageInformation()
            size = tuple(r.GetSize()[:2]) + (len(files),)
        else:
            r = sitk.ImageFileReader()
            r.SetFileName(str(path))
            r.ReadImageInformation()
            size = tuple(int(s) for s in r.GetSize())
            size = size + (r.GetNumberOfComponents(),) if r.GetNumberOfComponents() > 1 else size
    except RuntimeError:
        return None          # the reader will say what is wrong
    return int(np.prod(size, dtype=np.float64)), size


def available_memory_bytes() -> int | None:
    """Memory this process may use: ``LIVERSTIFFNESS_MAX_MEMORY_GB`` when set, else the
    system's available memory (Linux: MemAvailable), else None (unknown: not checked)."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            return int(float(env) * 2 ** 30)
        except ValueError:
            raise InputError(MEMORY_ENV, f"must be a number of GB, got {env!r}") from None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_sizes(paths: dict[str, Path]) -> None:
    """Refuse, before reading any voxel, an image larger than MAX_VOXELS or an exam that would
    need more memory than is available; the message gives the size needed."""
    total = 0
    for what, path in paths.items():
        found = header_voxels(Path(path))
        if found is None:
            continue
        n, size = found
        if n > MAX_VOXELS:
            raise InputError(f"{what} {path}", f"has {_fmt(size)} voxels ({n / 1e6:.0f} M): more than the "
                                               f"{MAX_VOXELS / 1e6:.0f} M one image may have; resample it to a coarser grid")
        total += n
    need = BASE_BYTES + BYTES_PER_VOXEL * total
    have = available_memory_bytes()
    if have is not None and need > have:
        raise InputError("exam", f"needs about {need / 2 ** 30:.1f} GB of memory for its {total / 1e6:.0f} M voxels, "
                                 f"but {have / 2 ** 30:.1f} GB are available (set {MEMORY_ENV} to change the limit, "
                                 "or resample the largest image to a coarser grid)")


# ------------------------------------------------------------------------------------- masks
def check_label_map(arr: np.ndarray, label: int | None, where: str) -> None:
    """The mask's values are labels, and the asked-for label (or a single label) is there."""
    if arr.dtype.kind in "fc":
        if not np.isfinite(arr).all():
            raise InputError(where, "has NaN/Inf voxels: it is not a label map")
        if not np.array_equal(arr, np.rint(arr)):
            raise InputError(where, "has non-integer values: it is a probability map or an image, not a label map")
    values = np.unique(arr)
    nonzero = values[values != 0]
    if len(nonzero) > 255:
        raise InputError(where, f"has {len(values)} distinct values: it looks like an image, not a label map")
    if label is not None:
        if label not in nonzero and nonzero.size:
            raise InputError(where, f"has no voxel with label {label} (its labels: {_list(nonzero)})")
    elif len(nonzero) > 1:
        raise InputError(where, f"has several labels ({_list(nonzero)}); say which one is the liver "
                                "(--mask-label, the manifest's mask_label, or the panel's label)")


def _list(values) -> str:
    values = [f"{v:g}" for v in np.ravel(values)]
    return ", ".join(values[:8]) + (f" … ({len(values)} in all)" if len(values) > 8 else "")


# ------------------------------------------------------------------- sequences against the mask
def liver_points(mask: sitk.Image, max_points: int = 20000) -> np.ndarray:
    """Physical centres (LPS mm) of up to ``max_points`` mask voxels, evenly subsampled."""
    idx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1].astype(float)   # x, y, z
    if len(idx) > max_points:
        idx = idx[:: int(np.ceil(len(idx) / max_points))]
    return _index_to_physical(mask, idx)


def _index_to_physical(img: sitk.Image, idx: np.ndarray) -> np.ndarray:
    d = np.array(img.GetDirection()).reshape(3, 3)
    return np.array(img.GetOrigin()) + (idx * np.array(img.GetSpacing())) @ d.T


def _physical_to_index(img: sitk.Image, pts: np.ndarray) -> np.ndarray:
    d = np.array(img.GetDirection()).reshape(3, 3)
    return ((pts - np.array(img.GetOrigin())) @ d) / np.array(img.GetSpacing())


def liver_coverage(img: sitk.Image, pts: np.ndarray) -> float:
    """Share of the liver points inside ``img``'s field of view."""
    if len(pts) == 0:
        return 0.0
    idx = _physical_to_index(img, pts)
    size = np.array(img.GetSize())
    return float(np.mean(np.all((idx >= -0.5) & (idx <= size - 0.5), axis=1)))


def blank_liver_slices(img: sitk.Image, pts: np.ndarray) -> list[int]:
    """Slices (third index) of ``img`` that hold one value throughout and cut through the liver."""
    if len(pts) == 0:
        return []
    k = _physical_to_index(img, pts)[:, 2]
    n = img.GetSize()[2]
    lo, hi = max(0, int(np.floor(k.min()))), min(n - 1, int(np.ceil(k.max())))
    if hi < lo:
        return []
    arr = sitk.GetArrayViewFromImage(img)[lo:hi + 1].reshape(hi - lo + 1, -1)
    flat = arr.min(axis=1) == arr.max(axis=1)
    return [lo + int(i) for i in np.flatnonzero(flat)]


def values_at_liver(img: sitk.Image, pts: np.ndarray) -> np.ndarray:
    """``img``'s voxel values at the liver points (nearest voxel) that lie in its field of view."""
    if len(pts) == 0:
        return np.zeros(0, np.float32)
    idx = np.rint(_physical_to_index(img, pts)).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(img.GetSize())), axis=1)
    return sitk.GetArrayViewFromImage(img)[idx[ok, 2], idx[ok, 1], idx[ok, 0]]


def liver_zero_share(img: sitk.Image, pts: np.ndarray) -> float:
    """Share of the liver points inside ``img``'s field of view where it is exactly zero."""
    values = values_at_liver(img, pts)
    return float(np.mean(values == 0)) if len(values) else 0.0


def check_sequence_against_liver(img: sitk.Image, pts: np.ndarray, where: str, name: str) -> str | None:
    """Coverage, blank slices and signal voids of one sequence; returns a warning line or None."""
    blank = blank_liver_slices(img, pts)
    if blank:
        value = float(sitk.GetArrayViewFromImage(img)[blank[0]].flat[0])
        raise InputError(where, f"slice(s) {_ranges(blank)} are blank (every voxel {value:g}) where the liver is "
                                "(a NaN or zero-filled slice from a broken conversion?); re-export the image")
    cover = liver_coverage(img, pts)
    if cover < MIN_LIVER_COVERAGE:
        raise InputError(where, f"covers only {cover:.0%} of the liver mask (its field of view misses the rest); "
                                f"at least {MIN_LIVER_COVERAGE:.0%} is needed")
    notes = []
    if cover < WARN_LIVER_COVERAGE:
        notes.append(f"{name.upper()} covers {cover:.0%} of the liver mask: the rest lies outside its field of view, "
                     f"where the model sees no {name.upper()} signal")
    zero = liver_zero_share(img, pts)
    if zero > WARN_LIVER_ZERO_SHARE:
        notes.append(f"{name.upper()} is exactly zero in {zero:.0%} of the liver mask (a signal void or "
                     "zero-filled region?): the estimate reads that as signal")
    return "; ".join(notes) or None


def check_dwi_against_liver(b_values, images: list[sitk.Image], adc: sitk.Image | None, pts: np.ndarray,
                            where: str) -> None:
    """Liver signal must fall as b rises, and the liver ADC must be tissue-like."""
    if len(images) < 2 or len(pts) == 0:
        return
    medians = []
    for im in images:
        values = values_at_liver(im, pts)
        if not len(values):
            return          # the coverage check speaks for a DWI that misses the liver
        medians.append(float(np.median(values)))
    if medians[-1] >= medians[0]:
        raise InputError(where, f"liver signal does not fall with b (b = {b_values[0]:g} → {b_values[-1]:g} s/mm²: "
                                f"median {medians[0]:.4g} → {medians[-1]:.4g}); are the b-values in the order of the volumes?")
    adc_values = values_at_liver(adc, pts) if adc is not None else []
    if len(adc_values):
        med = float(np.median(adc_values))
        lo, hi = PLAUSIBLE_LIVER_ADC
        if not lo <= med <= hi:
            raise InputError(where, f"gives a liver ADC of {med:.3g}×10⁻³ mm²/s, outside the {lo:g}–{hi:g} of any "
                                    "tissue; are the b-values right and in s/mm²?")
