"""The liver mask as a DICOM Segmentation (SEG), written and read with highdicom.

Written on the grid of the series it was drawn on (the T1w: one frame per T1w image, empty
frames kept so the SEG covers the same slices), segment 1 "liver" coded SCT 10200004. Read back
from any SEG whose segment is coded as liver or labelled "liver", on the SEG's own geometry.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

LIVER_LABEL = "liver"


def liver_code():
    from pydicom.sr.codedict import codes

    return codes.SCT.Liver


def liver_segment_number(path: str | Path) -> int | None:
    """The number of the liver segment of the SEG at ``path`` (coded SCT 10200004, or labelled
    'liver'), or None. Reads the header only."""
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    for item in ds.get("SegmentSequence", []):
        codes = item.get("SegmentedPropertyTypeCodeSequence", [])
        coded = any(str(c.get("CodeValue", "")) == "10200004" for c in codes)
        if coded or LIVER_LABEL in str(item.get("SegmentLabel", "")).lower():
            return int(item.SegmentNumber)
    return None


def read_seg_mask(path: str | Path, where: str = "mask") -> sitk.Image:
    """The liver segment of a DICOM SEG as a binary uint8 image on the SEG's geometry (LPS)."""
    import highdicom as hd

    number = liver_segment_number(path)
    if number is None:
        raise InputError(f"{where} {path}", "DICOM SEG has no segment coded or labelled as liver")
    try:
        seg = hd.seg.segread(str(path))
        vol = seg.get_volume(segment_numbers=[number], combine_segments=True, dtype=np.uint8)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"{where} {path}", f"DICOM SEG cannot be read as a volume ({exc})") from None
    return volume_to_sitk(vol.array, vol.affine)


def volume_to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A highdicom volume (array [slice, row, column], affine from those indices to LPS mm) as a
    SimpleITK image (index x = column, y = row, z = slice)."""
    affine = np.asarray(affine, float)
    axes = [affine[:3, 2], affine[:3, 1], affine[:3, 0]]       # x (column), y (row), z (slice)
    spacing = [float(np.linalg.norm(a)) for a in axes]
    direction = np.stack([a / s for a, s in zip(axes, spacing)], axis=1)
    img = sitk.GetImageFromArray((np.asarray(array) > 0).astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(affine[:3, 3].tolist())
    img.SetDirection(direction.flatten().tolist())
    return img


def write_liver_seg(mask: sitk.Image, source: list, path: str | Path, *, series_number: int, manufacturer: str,
                    software_version: str, algorithm: tuple[str, str] | None = None,
                    series_description: str = "Liver mask") -> object:
    """Write ``mask`` (binary, on the grid of ``source``: its datasets in slice order) as a SEG.

    ``algorithm``: (name, version) when the mask was made automatically; None for a drawn mask.
    Returns the highdicom Segmentation (also saved at ``path``).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    arr = sitk.GetArrayFromImage(mask) > 0
    if arr.shape != (len(source), int(source[0].Rows), int(source[0].Columns)):
        raise ValueError(f"mask shape {arr.shape} does not match the {len(source)} source images "
                         f"of {source[0].Rows}x{source[0].Columns}")
    algo_id = None
    if algorithm is not None:
        algo_id = hd.AlgorithmIdentificationSequence(name=algorithm[0][:64], version=algorithm[1][:64],
                                                     family=codes.cid7162.ArtificialIntelligence)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=LIVER_LABEL, segmented_property_category=codes.SCT.Organ,
        segmented_property_type=liver_code(),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if algorithm else hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        algorithm_identification=algo_id, tracking_uid=hd.UID(), tracking_id="liver")
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=arr, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=manufacturer,
        manufacturer_model_name="LiverStiffness", software_versions=software_version, device_serial_number="0",
        series_description=series_description[:64], omit_empty_frames=False,
        content_label="LIVER", content_description="Liver mask")
    seg.save_as(str(path))
    return seg
