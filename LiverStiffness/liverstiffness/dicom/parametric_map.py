"""Maps as DICOM Parametric Maps (float pixels, highdicom), on the reference series' grid.

- The attention map keeps its unit, "times the uniform share" over the model's crop (1.0 = uniform,
  see ``attention.py``): the real-world value mapping is the identity and says so; the window shown
  by default is 0 to the larger of 2 and the 99.5th percentile, as in the montage and the Slicer panel.
- The stiffness map (a model with a map decoder) is in kPa: UCUM ``kPa``, quantity DCM 110830
  "Elasticity", identity mapping, shown 0–8 kPa as elastograms are; its descriptions say it is a
  model estimate, not a measurement.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..mre import DISPLAY_RANGE_KPA

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

    arr = _pixels(image, source)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=f"ATTN {kind}"[:16], lut_explanation=UNIT_TEXT[:64],
        unit=Code("1", "UCUM", "no units"), value_range=(float(arr.min()), float(arr.max())),
        slope=1.0, intercept=0.0, quantity_definition=codes.DCM.ClassActivation)
    series = {"series_number": series_number, "manufacturer": manufacturer, "model_name": model_name,
              "software_version": software_version}
    return _write(arr, source, path, mapping, attention_window(arr), series,
                  ("ATTENTION", f"Attention {kind} of the stiffness model", f"Liver stiffness attention ({kind})"))


def write_stiffness_map(image: sitk.Image, source: list, path: str | Path, *, series_number: int, manufacturer: str,
                        model_name: str, software_version: str) -> object:
    """Write the stiffness map ``image`` (kPa over the liver, 0 elsewhere; on the grid of
    ``source``) as a Parametric Map in kPa; returns the highdicom object (also saved at ``path``)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    arr = _pixels(image, source)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="KPA", lut_explanation="MRE-equivalent shear stiffness, model estimate",
        unit=codes.UCUM.Kilopascal, value_range=(float(arr.min()), float(arr.max())),
        slope=1.0, intercept=0.0, quantity_definition=codes.DCM.Elasticity)
    lo, hi = DISPLAY_RANGE_KPA
    series = {"series_number": series_number, "manufacturer": manufacturer, "model_name": model_name,
              "software_version": software_version}
    return _write(arr, source, path, mapping, ((lo + hi) / 2, hi - lo), series,
                  ("STIFFNESSMAP", "Liver stiffness map (model estimate, not measured)",
                   "Liver stiffness map, model estimate (kPa)"))


def _pixels(image: sitk.Image, source: list) -> np.ndarray:
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    if arr.shape != (len(source), int(source[0].Rows), int(source[0].Columns)):
        raise ValueError(f"map shape {arr.shape} does not match the {len(source)} source images")
    return arr


def _write(arr, source, path, mapping, window, series: dict, labels: tuple[str, str, str]):
    """The Parametric Map of ``arr`` with one real-world value ``mapping``, the default ``window``
    (centre, width), the ``series`` attributes and ``labels`` (content label, content and series
    descriptions)."""
    import highdicom as hd

    centre, width = window
    content_label, content_description, series_description = labels
    pm = hd.pm.ParametricMap(
        source_images=source, pixel_array=arr, series_instance_uid=hd.UID(), series_number=series["series_number"],
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=series["manufacturer"],
        manufacturer_model_name=series["model_name"][:64], software_versions=series["software_version"],
        device_serial_number="0",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=centre, window_width=width)],
        content_label=content_label, content_description=content_description[:64],
        series_description=series_description[:64])
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
