"""``--dicom-out``: a prediction's results as DICOM objects a PACS can store, in the source study.

From a finished prediction folder (report.json, liver_mask.nii.gz and attention.nii.gz on the
reference grid) and the study's series selection, writes into one folder:

- ``liver_seg.dcm``: the liver mask used, as a SEG on the reference series' images;
- ``attention_pm.dcm``: the attention rollout as a Parametric Map on the reference series' images;
- ``stiffness_pm.dcm`` (a model with a stiffness map): the map in kPa as a Parametric Map;
- ``stiffness_sr.dcm``: the TID 1500 Comprehensive 3D SR with the estimate, referencing the SEG,
  naming the sequences used and those missing with why, and the map's regional means referencing
  the stiffness Parametric Map.

The reference series is the first present of T1w, T2w and DWI (for the DWI, its lowest-b images),
as in the prediction (``report.preprocessing["reference_sequence"]``). Each object is a new series
(numbers after the study's highest) in the source study, with the patient and study attributes of
the source images, referencing the series it was made from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import InputError
from ..outputs import REPORT, atomic_write_text
from ..report import Report
from .selection import ROLE_NAMES, StudySelection
from .study_input import reference_instances

MANUFACTURER = "LiverStiffness"
FILES = {"seg": "liver_seg.dcm", "parametric_map": "attention_pm.dcm", "sr": "stiffness_sr.dcm",
         "stiffness_map": "stiffness_pm.dcm"}


def _headers(instances) -> list:
    import pydicom

    return [pydicom.dcmread(str(i.path), stop_before_pixels=True) for i in instances]


def _check_grid(image: sitk.Image, source: list, what: str, series: str) -> None:
    first = np.asarray(source[0].ImagePositionPatient, float)
    if image.GetSize() != (int(source[0].Columns), int(source[0].Rows), len(source)) or \
            not np.allclose(image.GetOrigin(), first, atol=0.01):
        raise InputError(what, f"is not on the grid of the {series} series it should be written on")


def write_dicom_results(report: Report, result_dir: str | Path, selection: StudySelection, out: str | Path) -> dict:
    """Write SEG, Parametric Map and SR for the prediction in ``result_dir``; returns what was
    written (file names and UIDs), which is also added to report.json as ``dicom_outputs``."""
    result_dir, out = Path(result_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    role = selection.reference_role
    used = (report.preprocessing or {}).get("reference_sequence", role)
    if used != role:
        raise InputError(f"--dicom-out {out}", f"the prediction's reference is the {ROLE_NAMES.get(used, used)}, the "
                                               f"study's first series the {ROLE_NAMES[role]}")
    ref = _headers(reference_instances(selection))
    mask = sitk.ReadImage(str(result_dir / report.outputs["liver_mask"]))
    attention = sitk.ReadImage(str(result_dir / report.outputs["attention_maps"]["rollout"]))
    _check_grid(mask, ref, "liver mask", ROLE_NAMES[role])
    _check_grid(attention, ref, "attention map", ROLE_NAMES[role])
    stiffness = None
    if report.outputs.get("stiffness_map"):
        stiffness = sitk.ReadImage(str(result_dir / report.outputs["stiffness_map"]))
        _check_grid(stiffness, ref, "stiffness map", ROLE_NAMES[role])
    first_number = max((s.number or 0 for s in selection.index.series), default=0) + 1
    model_name = str(report.model.get("name", "liverstiffness"))
    mask_info = report.mask or {}
    algorithm = None
    if mask_info.get("source") == "automatic":
        seg_model = mask_info.get("model") or {}
        algorithm = (str(seg_model.get("name", "liver segmentation")), str(seg_model.get("version", "")))

    from .parametric_map import write_attention_map, write_stiffness_map
    from .seg import write_liver_seg
    from .sr import write_report_sr

    seg = write_liver_seg(mask, ref, out / FILES["seg"], series_number=first_number, manufacturer=MANUFACTURER,
                          software_version=__version__, algorithm=algorithm,
                          series_description="Liver mask (LiverStiffness)")
    pm = write_attention_map(attention, ref, out / FILES["parametric_map"], series_number=first_number + 1,
                             manufacturer=MANUFACTURER, model_name=model_name, software_version=__version__)
    kpa_pm = None
    if stiffness is not None:   # after the SR's number, so that a model without a map numbers as before
        kpa_pm = write_stiffness_map(stiffness, ref, out / FILES["stiffness_map"], series_number=first_number + 3,
                                     manufacturer=MANUFACTURER, model_name=model_name, software_version=__version__)
    ref_uids = {str(ds.SOPInstanceUID) for ds in ref}
    others = [i for r, c in selection.chosen.items() for i in c.instances if i.sop_uid not in ref_uids]
    evidence = ref + _headers(others) + [seg, pm] + ([kpa_pm] if kpa_pm is not None else [])  # all it rests on
    sr = write_report_sr(report, evidence, seg, out / FILES["sr"], series_number=first_number + 2,
                         software_version=__version__, stiffness_pm=kpa_pm)
    written = {"folder": str(out.resolve()), "study_uid": selection.index.study_uid}
    objects = (("seg", seg), ("parametric_map", pm), ("sr", sr)) + ((("stiffness_map", kpa_pm),) if kpa_pm else ())
    for key, ds in objects:
        written[key] = {"file": FILES[key], "series_uid": str(ds.SeriesInstanceUID), "sop_uid": str(ds.SOPInstanceUID),
                        "series_number": int(ds.SeriesNumber)}
    _add_to_report(result_dir / REPORT, written)
    return written


def _add_to_report(path: Path, written: dict) -> None:
    report = Report.read(path)
    report.dicom_outputs = written
    atomic_write_text(path, report.to_json())
