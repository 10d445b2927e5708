
"""A DICOM study end to end: predict --study --dicom-out; the SEG, Parametric Map and SR pass
Debian's dciodvfy (dicom3tools) with no error, read back with pydicom/highdicom onto the right
images, and hold report.json's numbers; the HTML page; a manifest row with a study."""
import csv
import json
import math
import shutil
import subprocess
from dataclasses import replace

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from liverstiffness.batch import predict_manifest
from liverstiffness.cutoffs import load_cutoffs
from liverstiffness.dicom.results import FILES
from liverstiffness.dicom.seg import read_seg_mask
from liverstiffness.dicom.selection import select_study
from liverstiffness.dicom.sr import read_report_sr
from liverstiffness.dicom.study_input import sorted_instances
from liverstiffness.manifest import write_manifest
from liverstiffness.predict import PredictOptions, predict_exam
from liverstiffness.stiffness.ensemble import Ensemble


def dciodvfy(path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail("dciodvfy not found: install Debian's dicom3tools (make test does: see .ci/run)")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]


def test_every_dicom_object_passes_dciodvfy(predicted):
    report, out = predicted
    for key, name in FILES.items():
        assert (out / "dicom" / name).is_file(), key
        assert dciodvfy(out / "dicom" / name) == [], name


def test_report_names_the_study_series_and_the_cutoff_table(predicted, study_case):
    report, out = predicted
    chosen = report["study"]["chosen"]
    assert chosen["t1w"]["description"] == "t1_fl2d_opp-in_tra_bh" and chosen["t1w"]["echo_time_ms"] == [4.61]
    assert chosen["dwi"]["b_values"] == [50.0, 400.0, 800.0]
    assert len(report["study"]["series"]) == 8 and report["mask"]["path"].endswith(f"({report['study']['mask_series_uid']})")
    assert report["stiffness_label"] == "MRE-equivalent liver stiffness"
    assert report["cutoff_table"]["name"] == "nafld-liang-2023"
    assert report["category"] == load_cutoffs("nafld-liang-2023").categorize(report["stiffness_kpa"]).label
    # facts not typed come from the headers
    assert report["patient"]["sex"] == study_case.facts.sex and report["patient_facts_source"]["sex"] == "DICOM PatientSex"
    assert report["patient"]["bmi"] == pytest.approx(study_case.facts.bmi, abs=0.1)
    assert report["dicom_outputs"]["sr"]["file"] == "stiffness_sr.dcm"


def test_seg_is_the_mask_on_the_t1w_images(predicted, study_case):
    report, out = predicted
    seg = hd.seg.segread(str(out / "dicom" / FILES["seg"]))
    sel = select_study(study_case.study, need_mask=True)
    t1 = sorted_instances(sel.chosen["t1w"].instances, "t1w")
    src = pydicom.dcmread(str(t1[0].path), stop_before_pixels=True)
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.PatientID == src.PatientID
    assert seg.SeriesInstanceUID not in {s.uid for s in sel.index.series}
    assert seg.SeriesNumber > max(s.number for s in sel.index.series)
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {i.sop_uid for i in t1}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sel.chosen["t1w"].series.uid
    back = read_seg_mask(out / "dicom" / FILES["seg"])
    liver = sitk.ReadImage(str(out / "result" / "liver_mask.nii.gz"))
    on_grid = sitk.Resample(back, liver, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    assert np.array_equal(sitk.GetArrayFromImage(on_grid), sitk.GetArrayFromImage(liver))
    assert sitk.GetArrayFromImage(liver).sum() > 1000


def test_parametric_map_holds_the_attention_values_in_their_unit(predicted):
    report, out = predicted
    pm = pydicom.dcmread(str(out / "dicom" / FILES["parametric_map"]))
    att = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "result" / "attention.nii.gz")))
    frames = pm.pixel_array.astype(np.float32)
    positions = [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float) for f in pm.PerFrameFunctionalGroupsSequence]
    order = np.argsort([p[2] for p in positions])                       # axial: frames by z
    assert frames.shape == att.shape and np.array_equal(frames[order], att)
    rwv = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert rwv.LUTExplanation.startswith("times the uniform share") and float(rwv.RealWorldValueSlope) == 1.0
    assert report["attention"]["unit"].startswith("times the uniform share")


def test_stiffness_map_is_a_parametric_map_in_kpa_equal_to_the_nifti(predicted):
    """The shared tiny model learnt from the small cohort's elastograms: its map goes out in kPa."""
    report, out = predicted
    pm = pydicom.dcmread(str(out / "dicom" / FILES["stiffness_map"]))
    kpa = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "result" / report["outputs"]["stiffness_map"])))
    frames = pm.pixel_array.astype(np.float32)
    positions = [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float) for f in pm.PerFrameFunctionalGroupsSequence]
    order = np.argsort([p[2] for p in positions])
    assert frames.shape == kpa.shape and np.array_equal(frames[order], kpa) and kpa.max() > 0
    rwv = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert rwv.MeasurementUnitsCodeSequence[0].CodeValue == "kPa" and float(rwv.RealWorldValueSlope) == 1.0
    assert rwv.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeMeaning == "Elasticity"
    assert "not measured" in pm.ContentDescription and "model estimate" in pm.SeriesDescription
    # The SR carries the regional means, referencing this map.
    sr = read_report_sr(out / "dicom" / FILES["sr"])
    assert sr["map_regions_kpa"] == report["stiffness_map"]["regions_kpa"] and "right lobe" in sr["map_regions_kpa"]
    ds = pydicom.dcmread(str(out / "dicom" / FILES["sr"]))
    assert str(pm.SOPInstanceUID) in {str(e.value) for e in ds.iterall() if e.keyword == "ReferencedSOPInstanceUID"}


def test_sr_numbers_equal_report_json(predicted):
    report, out = predicted
    sr = read_report_sr(out / "dicom" / FILES["sr"])
    assert sr["stiffness_kpa"] == report["stiffness_kpa"] and sr["unit"] == "kPa"
    for got, want in zip(sr["interval_kpa"], report["interval_kpa"]):
        assert got == want if math.isfinite(want) else got is None      # an unbounded limit is left out
    assert sr["category"] == report["category"] and sr["cutoff_table"] == "nafld-liang-2023"
    assert sr["mask_source"] == "given liver mask" and sr["mask_qa"] == ["no mask QA finding"]
    assert sr["segment_sop_uid"] == report["dicom_outputs"]["seg"]["sop_uid"]
    ds = pydicom.dcmread(str(out / "dicom" / FILES["sr"]))
    text = " ".join(str(e.value) for e in ds.iterall() if e.keyword in ("TextValue", "CodeMeaning"))
    for digest in report["model"]["sha256"].values():
        assert digest in text                                           # weight hashes
    assert report["model"]["name"] in text and "3.14" in text           # model and the table's cut-offs
    evidence = {s.SeriesInstanceUID for s in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert {report["study"]["chosen"][r]["series_uid"] for r in ("t1w", "t2w", "dwi")} <= evidence
    assert ds.VerificationFlag == "UNVERIFIED"


def test_html_page_has_the_numbers_the_table_and_the_disclaimer(predicted):
    report, out = predicted
    page = (out / "result" / report["outputs"]["report_page"]).read_text()
    assert f"{report['stiffness_kpa']:.2f} kPa" in page and "MRE-equivalent liver stiffness" in page
    assert "nafld-liang-2023" in page and "4.45" in page and "data:image/png;base64," in page
    assert "not a transient-elastography" in page
    assert "t1_fl2d_opp-in_tra_bh" in page


@pytest.mark.slow
def test_study_and_nifti_files_give_the_same_estimate(predicted, study_case, tiny_model, tmp_path):
    """The same exam from its NIfTI files: only the integer storage of the DICOM differs."""
    report, _ = predicted
    ens = Ensemble.load(tiny_model, "cpu")
    rec = study_case
    facts = type(rec.facts)(report["patient"]["age"], rec.facts.sex, report["patient"]["bmi"], None)
    ref = predict_exam(replace(rec, mask=rec.mask, facts=facts), ens, tmp_path / "nifti",
                       PredictOptions(montage=False, cutoffs="nafld-liang-2023"))
    assert ref.stiffness_kpa == pytest.approx(report["stiffness_kpa"], abs=0.02)


def test_manifest_row_with_only_a_study(dicom_studies, tiny_model, tmp_path):
    """A batch row that names a study and no files; its mask comes from the study's SEG."""
    rec = dicom_studies[0]
    rec_copy = type(rec)(**{**rec.__dict__, "t1w": None, "t2w": None, "dwi": None, "mask": None, "dwi_b": ()})
    manifest = tmp_path / "m.csv"
    write_manifest(manifest, [rec_copy])
    with open(manifest) as fh:
        line = next(csv.DictReader(fh))
    assert line["t1w"] == "" and line["study"] and line["dwi_b"] == ""
    rows = predict_manifest(manifest, Ensemble.load(tiny_model, "cpu"), tmp_path / "out",
                            PredictOptions(montage=False, dicom_out=str(tmp_path / "dcm")), progress=False)
    assert rows[rec.case_id]["status"] == "ok", rows
    rep = json.loads((tmp_path / "out" / rec.case_id / "report.json").read_text())
    assert rep["study"]["chosen"]["t1w"]["description"] == "Ax DUAL ECHO" and rep["mask"]["source"] == "given"
    assert (tmp_path / "dcm" / rec.case_id / FILES["sr"]).is_file()
