"""Follow-up between two reports (``liverstiffness compare``): the change in kPa and percent, judged
against the repeatability of MRE and of the model; reports of different models or cut-off tables
are refused unless allowed, and then the result says so."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest

from liverstiffness.cli.main import main
from liverstiffness.errors import InputError
from liverstiffness.followup import MRE_RC_PERCENT, ComparisonRefused, compare
from liverstiffness.report import SCHEMA_VERSION, Report


def make_report(kpa: float, **changes) -> Report:
    values = {f.name: None for f in fields(Report)}
    values.update(stiffness_kpa=kpa, interval_kpa=[kpa * 0.7, kpa * 1.4], interval_coverage=0.9, category="band",
                  category_band_kpa=[0, None], mre_bands=[], cutoff_table={"name": "mayo-60hz"},
                  fold_predictions_kpa=[kpa], ensemble_sd_log=0.02, sequence_contributions_kpa={}, attention={},
                  model={"name": "m", "version": "1", "sha256": {"fold0.pt": "a" * 64}}, device="cpu",
                  patient={"age": 50, "sex": "F"}, inputs={}, dwi_b_values=[0.0, 800.0], adc_available=True,
                  preprocessing={}, mask={"source": "given"}, mask_qa=None, input_range={}, warnings=[], outputs={},
                  software={}, stiffness_label="MRE-equivalent liver stiffness", timings_s={},
                  schema_version=SCHEMA_VERSION)
    values.update(changes)
    return Report(**values)


def test_a_change_counts_only_beyond_repeatability():
    up = compare(make_report(3.0), make_report(3.0 * 1.30))
    assert up.beyond_repeatability and up.direction == "increase" and up.change_percent == pytest.approx(30.0)
    assert up.change_kpa == pytest.approx(0.9) and up.threshold_percent >= MRE_RC_PERCENT
    small = compare(make_report(3.0), make_report(3.0 * 1.15))       # within MRE's own test–retest spread
    assert not small.beyond_repeatability and small.direction == "no change beyond repeatability"
    down = compare(make_report(6.0), make_report(4.0))
    assert down.beyond_repeatability and down.direction == "decrease" and down.change_percent == pytest.approx(-33.3, abs=0.1)
    assert "6.00 → 4.00 kPa (-2.00 kPa, -33 %): decrease beyond repeatability" in down.summary_line()


def test_different_models_or_cutoff_tables_are_refused_unless_allowed():
    other = make_report(4.0, model={"name": "m2", "version": "1", "sha256": {"fold0.pt": "b" * 64}})
    with pytest.raises(ComparisonRefused, match=r"another model \(m2 1\)") as refused:
        compare(make_report(3.0), other)
    assert refused.value.differs == "model" and isinstance(refused.value, InputError)
    allowed = compare(make_report(3.0), other, allow_different_models=True)
    assert any("different models" in w for w in allowed.warnings)
    retrained = make_report(4.0, model={"name": "m", "version": "1", "sha256": {"fold0.pt": "c" * 64}})
    with pytest.raises(InputError, match="other weights of the same model name"):
        compare(make_report(3.0), retrained)
    nafld = make_report(4.0, cutoff_table={"name": "nafld-liang-2023"})
    with pytest.raises(ComparisonRefused, match="cut-off table nafld-liang-2023") as refused:
        compare(make_report(3.0), nafld)
    assert refused.value.differs == "cutoffs"
    assert compare(make_report(3.0), nafld, allow_different_cutoffs=True).cutoff_tables == ["mayo-60hz", "nafld-liang-2023"]
    swapped = compare(make_report(3.0, patient={"age": 60, "sex": "F"}), make_report(3.1, patient={"age": 58, "sex": "M"}))
    assert len(swapped.warnings) == 2 and "same patient" in swapped.warnings[0] and "earlier exam" in swapped.warnings[1]


def test_compare_command_from_two_result_folders(tmp_path, capsys):
    for name, kpa in (("before", 2.5), ("after", 4.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(make_report(kpa).to_json())
    out = tmp_path / "change.json"
    assert main(["compare", str(tmp_path / "before"), str(tmp_path / "after"), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("2.50 → 4.00 kPa (+1.50 kPa, +60 %): increase beyond repeatability")
    assert json.loads(out.read_text())["beyond_repeatability"] is True
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "before"), str(tmp_path / "broken.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "broken.json" in err and "\n" not in err
    # A refusal on the command line says how to compare anyway, in one line.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(make_report(4.0, cutoff_table={"name": "nafld-liang-2023"}).to_json())
    assert main(["compare", str(tmp_path / "before"), str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert "(--allow-different-cutoffs to compare anyway)" in err and "\n" not in err


def test_the_shipped_model_carries_its_measured_repeatability():
    """The demo model's own RC (bench/RESULTS.md, "Test–retest") is used for its reports; for another
    model the line says it is not measured."""
    from liverstiffness.stiffness.checkpoint import DEMO_MODEL_DIR, read_meta

    meta = read_meta(DEMO_MODEL_DIR)
    demo = {"name": meta.name, "version": meta.version, "sha256": {"fold0.pt": "a" * 64}}
    c = compare(make_report(3.0, model=demo), make_report(3.3, model=demo))
    assert c.model_rc_percent == pytest.approx(18.1) and c.threshold_percent == max(MRE_RC_PERCENT, 18.1)
    assert "model 18 %" in c.summary_line()
    assert "model not measured" in compare(make_report(3.0), make_report(3.3)).summary_line()
