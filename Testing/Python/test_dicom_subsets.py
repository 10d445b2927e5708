"""DICOM studies with a subset of T1w, T2w and DWI (issue 36): a role no series matches is missing,
with its reason, in report.json, the SR and the selection table; the reference series (T1w, else
T2w, else the DWI's lowest b-value) carries the SEG and the Parametric Map and gives the patient
facts; SEG, Parametric Map and SR pass dciodvfy; a study with none of the three is one error line."""
from __future__ import annotations

import json
import shutil

import highdicom as hd
import pydicom
import pytest
from test_dicom_output import dciodvfy  # the same dicom3tools check as the full study's objects

from liverstiffness.cli.main import main
from liverstiffness.dicom.index import index_study
from liverstiffness.dicom.results import FILES
from liverstiffness.dicom.selection import SelectionError, select_study
from liverstiffness.dicom.sr import read_report_sr
from liverstiffness.dicom.study_input import lowest_b_instances, sorted_instances
from liverstiffness.dicom.synthetic_study import write_exam_study
from liverstiffness.manifest import read_manifest

NO_MATCH = "no series in the study matched the {} rules"


@pytest.fixture(scope="module")
def full_study(small_cohort, tmp_path_factory):
    """Site A's exam (GE 1.5 T: dual-echo T1w, SSFSE T2w, three-b DWI, ADC, portal T1w, liver SEG)
    as a study, and its chosen series."""
    rec = read_manifest(small_cohort[0])[0]
    folder = write_exam_study(rec, tmp_path_factory.mktemp("subset_study") / "full")
    return folder, select_study(folder, need_mask=True)


def _without(full, tmp_path, *roles) -> tuple:
    """A copy of the study without the series chosen for ``roles`` (the others stay: distractors)."""
    folder, sel = full
    study = tmp_path / "study"
    shutil.copytree(folder, study)
    for role in roles:
        for inst in sel.chosen[role].series.instances:
            (study / inst.path.relative_to(folder)).unlink()
    return study, sel


def _predict(study, model, out, *extra):
    return main(["predict", "--study", str(study), "--model", str(model), "--device", "cpu", "--no-montage",
                 "--maps", "none", "--out", str(out / "result"), "--dicom-out", str(out / "dicom"), "--quiet", *extra])


def _source_uids(ds) -> tuple[set, set]:
    """The series and instances a SEG or Parametric Map says it was derived from."""
    series = {str(s.SeriesInstanceUID) for s in ds.ReferencedSeriesSequence}
    images = {str(i.ReferencedSOPInstanceUID) for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    return series, images


def _check_dicom_outputs(out, report, reference_series, reference_instances, used_series):
    """SEG and Parametric Map on the reference series' images; the SR's evidence is the series used."""
    # The shared tiny model draws a stiffness map: its Parametric Map goes on the reference series too.
    maps = ("parametric_map", "stiffness_map")
    for key in ("seg", *maps, "sr"):
        assert dciodvfy(out / "dicom" / FILES[key]) == [], key
    ref_uids = {i.sop_uid for i in reference_instances}
    for key in ("seg", *maps):
        ds = pydicom.dcmread(str(out / "dicom" / FILES[key]))
        series, images = _source_uids(ds)
        assert series == {reference_series.uid} and images == ref_uids, key
        assert int(ds.NumberOfFrames) == len(reference_instances), key
    seg = hd.seg.segread(str(out / "dicom" / FILES["seg"]))
    assert {uid for _, _, uid in seg.get_source_image_uids()} == ref_uids
    sr = pydicom.dcmread(str(out / "dicom" / FILES["sr"]))
    evidence = {s.SeriesInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert {s.uid for s in used_series} <= evidence
    assert evidence - {s.uid for s in used_series} == {report["dicom_outputs"][k]["series_uid"] for k in ("seg", *maps)}
    return read_report_sr(out / "dicom" / FILES["sr"])


def test_study_without_dwi_runs_end_to_end(full_study, tiny_model, tmp_path, capsys):
    study, sel = _without(full_study, tmp_path, "dwi")
    assert _predict(study, tiny_model, tmp_path) == 0
    assert "from T1w, T2w only (no DWI: no series in the study matched the DWI rules)" in capsys.readouterr().out
    report = json.loads((tmp_path / "result" / "report.json").read_text())
    assert report["sequences_used"] == ["t1w", "t2w"] and report["interval_basis"] == "t1w+t2w"
    assert report["sequences_missing"] == {"dwi": NO_MATCH.format("DWI")}
    assert report["preprocessing"]["reference_sequence"] == "t1w"
    assert set(report["study"]["chosen"]) == {"t1w", "t2w"} and report["study"]["reference"] == "t1w"
    assert report["study"]["missing"] == {"dwi": NO_MATCH.format("DWI")}
    assert report["dwi_b_values"] == [] and "dwi" not in report["inputs"]
    page = (tmp_path / "result" / report["outputs"]["report_page"]).read_text()
    assert NO_MATCH.format("DWI") in page                    # the HTML page names it too
    t1 = sel.chosen["t1w"]
    got = _check_dicom_outputs(tmp_path, report, t1.series, sorted_instances(t1.instances, "t1w"),
                               [t1.series, sel.chosen["t2w"].series])
    assert got["sequences_used"] == ["t1w", "t2w"] and got["sequences_missing"] == ["dwi"]
    assert got["sequences_text"] == "T1w, T2w only (no DWI: no series in the study matched the DWI rules)"
    assert got["stiffness_kpa"] == report["stiffness_kpa"]
    # the ADC map of the study is still no DWI: the table says so, and says what is missing
    table = select_study(study, need_mask=True).format_table()
    assert "derived map" in table and "DWI: none — no series in the study matched the DWI rules" in table


def test_study_without_t1w_writes_on_the_t2w_and_without_t2w_on_the_dwi(full_study, tiny_model, tmp_path):
    """No T1w: the T2w is the reference (SEG and map on its images; the patient facts from its
    header; the study's SEG, drawn on the T1w, carried onto it). --leave-out t2w then leaves the
    DWI alone, on its lowest b-value's images, with the user's reason in the report and the SR."""
    study, sel = _without(full_study, tmp_path, "t1w")
    out = tmp_path / "no_t1w"
    assert _predict(study, tiny_model, out) == 0
    report = json.loads((out / "result" / "report.json").read_text())
    assert report["sequences_used"] == ["t2w", "dwi"]
    assert report["sequences_missing"] == {"t1w": NO_MATCH.format("T1w")}
    assert report["preprocessing"]["reference_sequence"] == "t2w" and report["study"]["reference"] == "t2w"
    assert report["patient_facts_source"]["sex"] == "DICOM PatientSex" and report["mask"]["source"] == "given"
    t2, dwi = sel.chosen["t2w"], sel.chosen["dwi"]
    got = _check_dicom_outputs(out, report, t2.series, sorted_instances(t2.instances, "t2w"), [t2.series, dwi.series])
    assert got["sequences_used"] == ["t2w", "dwi"] and got["sequences_missing"] == ["t1w"]
    assert "no T1w: no series in the study matched the T1w rules" in got["sequences_text"]

    out = tmp_path / "dwi_only"
    assert _predict(study, tiny_model, out, "--leave-out", "t2w:motion artefact") == 0
    report = json.loads((out / "result" / "report.json").read_text())
    assert report["sequences_used"] == ["dwi"] and report["preprocessing"]["reference_sequence"] == "dwi"
    assert report["sequences_missing"] == {"t1w": NO_MATCH.format("T1w"), "t2w": "motion artefact"}
    low_b = sorted_instances(lowest_b_instances(dwi.instances), "dwi")
    assert len(low_b) < len(dwi.instances)                   # one b-value's images of three
    got = _check_dicom_outputs(out, report, dwi.series, low_b, [dwi.series])
    assert got["sequences_used"] == ["dwi"] and got["sequences_missing"] == ["t1w", "t2w"]
    assert got["sequences_text"] == ("DWI only (no T1w: no series in the study matched the T1w rules; "
                                     "no T2w: motion artefact)")


def test_qa_of_a_study_without_t1w(full_study, tmp_path):
    study, _ = _without(full_study, tmp_path, "t1w")
    assert main(["qa", "--study", str(study), "--out", str(tmp_path / "qa"), "--quiet"]) == 0
    qa = json.loads((tmp_path / "qa" / "qa.json").read_text())
    assert set(qa["study"]["chosen"]) == {"t2w", "dwi"} and qa["study"]["missing"] == {"t1w": NO_MATCH.format("T1w")}
    assert qa["measurements"]["volume_ml"] > 500


def test_study_with_no_t1w_t2w_or_dwi_is_one_error_line(full_study, tiny_model, tmp_path, capsys):
    study, _ = _without(full_study, tmp_path, "t1w", "t2w", "dwi")
    with pytest.raises(SelectionError) as err:
        select_study(study)
    assert "no T1w, T2w or DWI series" in str(err.value)
    code = main(["predict", "--study", str(study), "--model", str(tiny_model), "--device", "cpu",
                 "--out", str(tmp_path / "out"), "--dicom-out", str(tmp_path / "dicom")])
    err_text = capsys.readouterr().err
    assert code == 2 and len(err_text.strip().splitlines()) == 1
    assert err_text.startswith("error: study ") and "no T1w, T2w or DWI series" in err_text
    assert not (tmp_path / "out").exists() and not (tmp_path / "dicom").exists()
    # naming a series by hand still works: the portal-venous T1w, which the rules turn down
    portal = next(s for s in index_study(study).series if "Portal" in s.description)
    chosen = select_study(study, overrides={"t1w": portal.uid}).chosen
    assert set(chosen) == {"t1w"} and chosen["t1w"].how == "--t1w-series"
