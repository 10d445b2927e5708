"""DICOM studies in: indexing, series selection by the rules on every vendor layout (synthetic
studies with distractors, and the real Siemens series), ambiguity, overrides, reading the chosen
series, patient facts from the headers, cut-off tables."""
import json
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from liverstiffness.cli.main import main
from liverstiffness.cutoffs import TABLES, load_cutoffs
from liverstiffness.dicom.index import index_study
from liverstiffness.dicom.rules import DEFAULT_RULES, load_rules, parse_rules
from liverstiffness.dicom.selection import SelectionError, select_study
from liverstiffness.dicom.study_input import patient_facts_from_header, read_study_exam, sorted_instances
from liverstiffness.errors import InputError
from liverstiffness.mre import MRE_BANDS

# What the default rules must pick in each synthetic vendor layout (vendor, field strength T);
# the studies are conftest's ``dicom_studies``.
EXPECTED = {
    ("GE", 1.5): ("Ax DUAL ECHO", "Ax SSFSE", "Ax DWI"),
    ("Siemens", 3.0): ("t1_vibe_dixon_tra_bh_in", "t2_haste_tra_mbh", "ep2d_diff_tra_p2"),
    ("Philips", 1.5): ("T1W_FFE_IP_OP", "T2W_TSE", "DWI_b0_600"),
    ("Siemens", 1.5): ("t1_fl2d_opp-in_tra_bh", "t2_haste_tra_mbh", "ep2d_diff_tra_p2"),
    ("GE", 3.0): ("Ax LAVA-Flex InPhase", "Ax SSFSE", "Ax DWI"),
}


def test_synth_dicom_manifest_points_to_the_studies(dicom_studies):
    for rec in dicom_studies[3:]:
        assert rec.study is not None and rec.study.name == "dicom" and rec.study.is_dir()
        assert rec.t1w.is_file()                         # the NIfTI files stay (training reads them)


def test_every_vendor_layout_picks_the_right_series(dicom_studies):
    for rec in dicom_studies:
        sel = select_study(rec.study, need_mask=True)
        t1, t2, dwi = EXPECTED[(rec.vendor, float(rec.field_strength))]
        got = {role: c.series.description for role, c in sel.chosen.items()}
        assert got == {"t1w": t1, "t2w": t2, "dwi": dwi}, rec.case_id
        assert sel.mask_series is not None and sel.mask_series.modality == "SEG"
        # A dual-echo T1w is read at its in-phase echo only: the longer TE at 1.5 T, 2.3 ms at 3 T.
        tes = {i.echo_time_ms for i in sel.chosen["t1w"].instances}
        assert tes == {4.61} if rec.field_strength == 1.5 else tes == {2.3}
        assert sel.chosen["dwi"].series.b_values == tuple(rec.dwi_b)


def test_the_chosen_series_read_back_as_the_phantom_exam(dicom_studies):
    """Pixel values (stored as integers), geometry, b-values and the SEG mask of the study equal the
    phantom's own files: the right echo and the right series were read, in the right slice order."""
    for rec in dicom_studies:
        images, auto = read_study_exam(select_study(rec.study, need_mask=True))
        assert auto is None
        for name, img in (("t1w", images.t1w), ("t2w", images.t2w)):
            ref = sitk.ReadImage(str(getattr(rec, name)))
            assert img.GetSize() == ref.GetSize()
            assert np.allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-3)
            assert np.allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-3)
            assert np.allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
            a, b = sitk.GetArrayFromImage(img).ravel(), sitk.GetArrayFromImage(ref).ravel()
            assert np.corrcoef(a, b)[0, 1] > 0.9999, (rec.case_id, name)
        assert images.dwi.b_values == tuple(rec.dwi_b) and images.dwi.adc is not None
        mask = sitk.ReadImage(str(rec.mask))
        on_t1 = sitk.Resample(images.mask, mask, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        assert np.array_equal(sitk.GetArrayFromImage(on_t1), sitk.GetArrayFromImage(mask))


def test_distractors_are_rejected_with_their_reason(dicom_studies):
    by_vendor = {(r.vendor, float(r.field_strength)): r for r in dicom_studies}
    table = select_study(by_vendor[("Siemens", 3.0)].study, need_mask=True).format_table()
    assert "localiser or calibration scan" in table                      # localizer
    assert "TE 1.15 ms opposed at 3 T" in table                          # Dixon opposed-phase series
    assert "fat, water or fat-suppressed image" in table                 # Dixon W and F
    assert "derived map or reformat (ImageType)" in table                # ADC
    assert "contrast agent 'Gadobutrol'" in table                        # post-contrast VIBE
    assert "next best #3 t2_haste_fs_tra_mbh" in table                   # fat-suppressed T2 loses on points
    ge = select_study(by_vendor[("GE", 1.5)].study, need_mask=True)
    verdicts = {s.description: ge.verdicts[s.uid] for s in ge.index.series}
    assert "post-contrast (description)" in verdicts["Ax LAVA Portal"]["t1w"].reasons[0]   # no agent in the header
    assert "derived map" in verdicts["Apparent Diffusion Coefficient (mm2/s)"]["dwi"].reasons[0]
    assert not verdicts["Ax DWI"]["t2w"].candidate                       # spin-echo EPI with b-values is no T2w
    philips = select_study(by_vendor[("Philips", 1.5)].study, need_mask=True)
    assert philips.index.skipped_files == 1                              # its README.txt
    assert {s.description for s in philips.index.series} >= {"Survey", "T2W_SPAIR", "dADC_DWI", "T1W_THRIVE_portal"}


def test_an_ambiguous_role_stops_with_the_table_and_an_option_settles_it(dicom_studies, tmp_path, capsys):
    """A repeated T2w acquisition (same header, new series) is a tie: exit 2 listing both;
    --t2w-series with a UID or a series number chooses."""
    rec = next(r for r in dicom_studies if r.vendor == "Siemens" and r.field_strength == 1.5)
    study = tmp_path / "study"
    shutil.copytree(rec.study, study)
    first = select_study(study, need_mask=True).chosen["t2w"].series
    new_uid = pydicom.uid.generate_uid()
    for k, inst in enumerate(first.instances):
        ds = pydicom.dcmread(str(inst.path))
        ds.SeriesInstanceUID, ds.SeriesNumber = new_uid, 42
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(str(study / f"repeat_{k}.dcm"))
    with pytest.raises(SelectionError) as err:
        select_study(study, need_mask=True)
    msg = str(err.value)
    assert "T2w is ambiguous" in msg and "#2 t2_haste_tra_mbh" in msg and "#42 t2_haste_tra_mbh" in msg
    assert new_uid in msg and first.uid in msg                           # the table gives the UIDs to choose from
    assert main(["qa", "--study", str(study), "--out", str(tmp_path / "qa")]) == 2
    assert "T2w is ambiguous" in capsys.readouterr().err
    assert not (tmp_path / "qa").exists()
    assert select_study(study, overrides={"t2w": new_uid}, need_mask=True).chosen["t2w"].series.number == 42
    chosen = select_study(study, overrides={"t2w": "2"}, need_mask=True).chosen["t2w"]
    assert chosen.series.uid == first.uid and chosen.how == "--t2w-series"
    assert main(["qa", "--study", str(study), "--t2w-series", "42", "--out", str(tmp_path / "qa"), "--quiet"]) == 0
    qa = json.loads((tmp_path / "qa" / "qa.json").read_text())
    assert qa["study"]["chosen"]["t2w"]["series_number"] == 42 and qa["measurements"]["volume_ml"] > 500


def test_real_siemens_study_finds_t2w_and_dwi_and_reports_the_missing_t1w(real_data):
    folder = real_data / "prostatex_0000_dicom"
    missing = select_study(folder)          # no T1w: T2w and DWI are an exam, the T1w is reported missing
    assert set(missing.chosen) == {"t2w", "dwi"} and missing.reference_role == "t2w"
    assert missing.missing == {"t1w": "no series in the study matched the T1w rules"}
    msg = missing.format_table()
    assert msg.count("T1w: none — no series in the study matched the T1w rules") == 1 and "--t1w-series" in msg
    assert "→ T2w" in msg and "#4 t2_tse_tra" in msg and "→ DWI" in msg
    # Naming a T1w settles it; everything else is chosen by the rules.
    sel = select_study(folder, overrides={"t1w": "9"})
    assert sel.chosen["t2w"].series.description == "t2_tse_tra"          # axial beats sagittal and coronal
    dwi = sel.chosen["dwi"]
    assert dwi.series.description == "ep2d_diff_tra_DYNDIST" and dwi.series.b_values == (50.0, 400.0, 800.0)
    rejected = {s.description: sel.verdicts[s.uid]["dwi"] for s in sel.index.series}
    assert "ImageType" in rejected["ep2d_diff_tra_DYNDIST_ADC"].reasons[0]          # the scanner's ADC map
    assert "calculated" in rejected["ep2d_diff_tra_DYNDISTCALC_BVAL"].reasons[0]    # the computed b1000
    assert len(sorted_instances([i for i in dwi.instances if i.b_value == 800], "dwi")) == 19
    facts, source = patient_facts_from_header(dwi.series.header)
    assert (facts.age, facts.sex, facts.bmi) == (63.0, "M", 23.0) and source["bmi"].startswith("DICOM")


def test_header_only_index_of_the_real_study(real_data):
    idx = index_study(real_data / "prostatex_0000_dicom")
    assert len(idx.series) == 7 and idx.skipped_files == 0
    assert all(s.header is not None and "PixelData" not in s.header for s in idx.series)
    assert [s.orientation for s in idx.series[:3]] == ["sagittal", "axial", "coronal"]   # 18° oblique still axial
    assert idx.find("#6").b_values == (50.0, 400.0, 800.0) and idx.find("6") is idx.find(idx.find("6").uid)


def test_edited_rules_change_the_choice(dicom_studies, tmp_path):
    """The rules are the user's: preferring fat-suppressed T2w picks the other series."""
    rec = next(r for r in dicom_studies if r.vendor == "Siemens" and r.field_strength == 3.0)
    rules = json.loads(DEFAULT_RULES.read_text())
    rules["roles"]["t2w"]["prefer"].append({"if": {"scan_options_any": ["FS"]}, "points": 5, "why": "site protocol: FS"})
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    sel = select_study(rec.study, rules_path=path, need_mask=True)
    assert sel.chosen["t2w"].series.description == "t2_haste_fs_tra_mbh" and "site protocol: FS" in sel.chosen["t2w"].why


def test_bad_rules_are_input_errors_that_say_where():
    base = json.loads(DEFAULT_RULES.read_text())
    bad = json.loads(json.dumps(base))
    bad["roles"]["t1w"]["require"]["echo_tme_ms"] = [1, 2]
    with pytest.raises(InputError, match="roles.t1w.require.*unknown condition 'echo_tme_ms'"):
        parse_rules(bad)
    bad = json.loads(json.dumps(base))
    bad["roles"]["dwi"]["prefer"][0]["if"]["description"] = "b(("
    with pytest.raises(InputError, match="not a regular expression"):
        parse_rules(bad)
    del bad["roles"]["dwi"]
    with pytest.raises(InputError, match="no rule for dwi"):
        parse_rules(bad)
    with pytest.raises(InputError, match="file not found"):
        load_rules("/nonexistent/rules.json")
    assert load_rules().name.startswith("LiverStiffness default rules")


def test_cutoff_tables_edges_and_files(tmp_path):
    mayo, nafld = load_cutoffs(), load_cutoffs("nafld-liang-2023")
    assert mayo.name == "mayo-60hz" and mayo.bands == MRE_BANDS
    assert [e for e, _ in nafld.bands] == [0.0, 3.14, 3.53, 4.45] and "Liang" in nafld.reference
    assert nafld.categorize(3.139).label.startswith("below") and nafld.categorize(3.14).label.startswith(">=F2")
    assert nafld.categorize(3.53).label.startswith(">=F3") and nafld.categorize(9.0).label == "F4 (cirrhosis)"
    assert nafld.categorize(4.45).high_kpa is None
    table = {"name": "site-x", "reference": "local audit",
             "bands": [{"low_kpa": 0, "label": "low"}, {"low_kpa": 3, "label": "high"}]}
    (tmp_path / "t.json").write_text(json.dumps(table))
    assert load_cutoffs(str(tmp_path / "t.json")).categorize(3.0).label == "high"
    table["bands"] = [{"low_kpa": 1, "label": "x"}]
    (tmp_path / "bad.json").write_text(json.dumps(table))
    with pytest.raises(InputError, match="must start at 0"):
        load_cutoffs(str(tmp_path / "bad.json"))
    with pytest.raises(InputError, match="neither a shipped table"):
        load_cutoffs("fibroscan")
    assert set(TABLES) == {"mayo-60hz", "nafld-liang-2023"}


def test_study_options_without_a_study_are_input_errors(tmp_path, capsys):
    assert main(["qa", "--t2w-series", "3", "--mask", "m.nii.gz", "--t1w", "t.nii.gz", "--out", str(tmp_path / "q")]) == 2
    assert "--t2w-series: needs --study" in capsys.readouterr().err
    assert main(["qa", "--study", str(tmp_path), "--t1w", "t.nii.gz", "--out", str(tmp_path / "q")]) == 2
    assert "give either --study or --t1w" in capsys.readouterr().err
