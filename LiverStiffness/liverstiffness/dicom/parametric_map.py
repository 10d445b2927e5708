"""The attention map as a DICOM Parametric Map (float pixels, highdicom), on the T1w images' grid.

Its values keep their unit, "times the uniform share" over the model's crop (1.0 = uniform, see
``attention.py``): the real-world value mapping is the identity and says so; the window shown by
default is 0 to the larger of 2 and the 99.5th percentile, as in the montage and the Slicer panel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

UNIT_TEXT = "times the uniform share over the model's crop (1.0 = uniform)"


def attention_window(arr: np.ndarray) -> tuple[float, float]:
    """(centre, width) of the default display window: 0 to max(2, 99.5th percentile of > 0)."""
    positive = arr[arr > 0]
    top = max(2.0, float(np.percentile(positive, 99.5))) if positive.size else 2.0
    return top / 2, top


def write_attention_map(image: sitk.Image, source: list, path: str | Path, *, series_number: int, manufacturer: str,
                        model_name: str, software_version: str, kind: str = "rollout") -> object:
    """Write ``image`` (float, on the grid of ``source``: its datasets in slice order) as a
    Parametric Map; returns the highdicom object (also saved at ``path``)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    if arr.shape != (len(source), int(source[0].Rows), int(source[0].Columns)):
        raise ValueError(f"map shape {arr.shape} does not match the {len(source)} source images")
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=f"ATTN {kind}"[:16], lut_explanation=UNIT_TEXT[:64],
        unit=Code("1", "UCUM", "no units"), value_range=(float(arr.min()), float(arr.max())),
        slope=1.0, intercept=0.0, quantity_definition=codes.DCM.ClassActivation)
    centre, width = attention_window(arr)
    pm = hd.pm.ParametricMap(
        source_images=source, pixel_array=arr, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=manufacturer,
        manufacturer_model_name=model_name[:64], software_versions=software_version, device_serial_number="0",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=centre, window_width=width)],
        content_label="ATTENTION",
        content_description=f"Attention {kind} of the stiffness model"[:64],
        series_description=f"Liver stiffness attention ({kind})"[:64])
    _add_frame_anatomy(pm)
    pm.save_as(str(path))
    return pm


def _add_frame_anatomy(pm) -> None:
    """Frame Anatomy (abdomen, unpaired) in the shared functional groups: it says where the frames
    are, and with it the General Series Laterality is not needed (dciodvfy asks for one or the other)."""
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = (
        codes.SCT.Abdomen.value, codes.SCT.Abdomen.scheme_designator, codes.SCT.Abdomen.meaning)
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [region]
    anatomy.FrameLaterality = "U"
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
