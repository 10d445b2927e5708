"""Follow-up in the module's logic on real MRML nodes (PyPI slicer-core), issue 36: two exams
estimated by the logic, their rows of the results table compared (the change in kPa and percent,
against the repeatability of MRE and of the model) in the one line the panel shows; a change
beyond repeatability and one within it; reports of another model or cut-off table refused in one
line unless "compare anyway", which then warns; the reports kept with the table survive a saved
and reloaded scene."""
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import slicer  # PyPI slicer-core: a missing one must fail, not skip

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from test_slicer_logic import exam_nodes  # noqa: E402

from liverstiffness.followup import compare  # noqa: E402
from liverstiffness.report import Report  # noqa: E402
from LiverStiffnessLib.followup_nodes import REPORT_ID_COLUMN, change_text, compare_reports  # noqa: E402
from LiverStiffnessLib.logic import RESULTS_TABLE_NAME, TABLE_COLUMNS, LiverStiffnessLogic  # noqa: E402

LINE = re.compile(r"^[+-]\d+\.\d\d kPa \([+-]\d+ %\) from \d+\.\d\d to \d+\.\d\d kPa: "
                  r"(an increase beyond|a decrease beyond|within) repeatability \(MRE 22 %, this model[^)]*\)")


@pytest.fixture(scope="module")
def two_runs(small_cohort, tiny_model, tmp_path_factory):
    """Two exams estimated by the logic in one scene (two rows of the results table); the first
    run's report.json saved as "Save report" saves it; then both run folders are removed."""
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    logic = LiverStiffnessLogic(scene)
    out = tmp_path_factory.mktemp("followup")
    results = [logic.estimate(exam_nodes(scene, rec), tiny_model, "cpu", out / f"run{i}", maps="none")
               for i, rec in enumerate(small_cohort[1][:2])]
    logic.save_report(results[0], out / "saved")
    for r in results:
        shutil.rmtree(r.output_dir)        # as the panel does when the next run is shown
    yield scene, logic, [r.report for r in results], out / "saved" / "report.json"
    scene.Clear(1)


def edited(saved: Path, folder: Path, name: str, **changes) -> Path:
    """A copy of the saved report.json with some fields changed (a later exam, another model...)."""
    data = json.loads(saved.read_text())
    data.update(changes)
    path = folder / name
    path.write_text(json.dumps(data))
    return path


def test_two_rows_of_the_results_table_are_compared_in_one_line(two_runs):
    scene, logic, (first, second), _ = two_runs
    table = scene.GetFirstNodeByName(RESULTS_TABLE_NAME)
    assert TABLE_COLUMNS[-1] == REPORT_ID_COLUMN and table.GetNumberOfRows() == 2
    choices = logic.comparable_results()
    assert [row for row, _ in choices] == [0, 1]
    assert choices[0][1].startswith("1: ") and choices[0][1].endswith(f", T1w, {first.stiffness_kpa:.2f} kPa")
    assert choices[1][1].endswith(f"{second.stiffness_kpa:.2f} kPa")
    follow = logic.compare_results(0, 1)           # the run folders are gone: the table kept the reports
    expected = compare(first, second)
    assert follow.comparison == expected and follow.warnings == expected.warnings and not follow.refused
    assert follow.text == change_text(expected) and LINE.match(follow.text), follow.text
    assert f"from {first.stiffness_kpa:.2f} to {second.stiffness_kpa:.2f} kPa" in follow.text
    assert "this model: not measured" in follow.text    # the tiny test model's test-retest is not measured
    assert ("beyond repeatability" in follow.text) == expected.beyond_repeatability
    assert "\n" not in follow.text
    assert logic.compare_results(1, 1).text == "Not compared: pick two different results"


def test_a_change_beyond_and_one_within_repeatability(two_runs, tmp_path):
    _, logic, (first, _), saved = two_runs
    k = first.stiffness_kpa
    up = logic.compare_results(0, edited(saved, tmp_path, "up.json", stiffness_kpa=round(k * 1.30, 4)))
    assert up.comparison.beyond_repeatability and up.comparison.direction == "increase"
    assert up.text.startswith(f"+{round(k * 1.30, 4) - k:.2f} kPa (+30 %) from {k:.2f} to {round(k * 1.30, 4):.2f} kPa: "
                              "an increase beyond repeatability (MRE 22 %, this model: not measured)"), up.text
    within = logic.compare_results(0, edited(saved, tmp_path, "within.json", stiffness_kpa=round(k * 1.10, 4)))
    assert not within.comparison.beyond_repeatability
    assert within.text.startswith(f"+{round(k * 1.10, 4) - k:.2f} kPa (+10 %) from {k:.2f} to ")
    assert ": within repeatability (MRE 22 %" in within.text
    down = logic.compare_results(saved, edited(saved, tmp_path, "down.json", stiffness_kpa=round(k * 0.7, 4),
                                               category="another band"))
    assert down.text.startswith(f"-{k - round(k * 0.7, 4):.2f} kPa (-30 %)") and "a decrease beyond repeatability" in down.text
    assert down.text.endswith(f"; category {first.category} → another band")


def test_the_line_with_the_demo_models_measured_repeatability(two_runs, tmp_path):
    """The line of the issue's example: the shipped demo model's own RC (18.1 %) beside MRE's."""
    from liverstiffness.stiffness.checkpoint import DEMO_MODEL_DIR, read_meta

    _, logic, (first, _), saved = two_runs
    meta = read_meta(DEMO_MODEL_DIR)
    demo = {**first.model, "name": meta.name, "version": meta.version}
    before = edited(saved, tmp_path, "before.json", stiffness_kpa=2.58, model=demo)
    after = edited(saved, tmp_path, "after.json", stiffness_kpa=3.20, model=demo)
    follow = logic.compare_results(before, after)
    assert follow.text == ("+0.62 kPa (+24 %) from 2.58 to 3.20 kPa: an increase beyond repeatability "
                           "(MRE 22 %, this model 18.1 %)")
    assert compare_reports(Report.read(before), Report.read(after)).text == follow.text


def test_another_model_or_cutoff_table_is_refused_in_one_line_unless_compare_anyway(two_runs, tmp_path):
    _, logic, (first, _), saved = two_runs
    other = edited(saved, tmp_path, "other_model.json", model={**first.model, "name": "another-model", "version": "9"})
    refused = logic.compare_results(0, other)
    assert refused.refused and refused.comparison is None and refused.warnings == []
    assert refused.text.startswith("Not compared: the later result was estimated by another model (another-model 9)")
    assert refused.text.endswith("Tick “Compare anyway” to compare them regardless.")
    assert "--allow" not in refused.text and "\n" not in refused.text
    anyway = logic.compare_results(0, other, compare_anyway=True)
    assert anyway.comparison is not None and LINE.match(anyway.text)
    assert any("different models" in w for w in anyway.warnings)
    nafld = edited(saved, tmp_path, "nafld.json", cutoff_table={**first.cutoff_table, "name": "nafld-liang-2023"})
    cut = logic.compare_results(0, nafld)
    assert cut.refused and "uses the cut-off table nafld-liang-2023" in cut.text and "--allow" not in cut.text
    assert any("cut-off tables" in w for w in logic.compare_results(0, nafld, compare_anyway=True).warnings)


def test_what_cannot_be_read_is_one_line_too(two_runs, tmp_path):
    scene, logic, _, saved = two_runs
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    follow = logic.compare_results(0, broken)
    assert follow.comparison is None and not follow.refused
    assert follow.text.startswith("Not compared: ") and "broken.json" in follow.text and "\n" not in follow.text
    assert logic.compare_results(None, 1).text == "Not compared: follow-up: pick two results to compare"
    assert "row 7: does not exist" in logic.compare_results(6, 1).text
    # a table saved by an older version: a row without its report can be given as its report.json
    table = scene.GetFirstNodeByName(RESULTS_TABLE_NAME)
    col = table.GetColumnIndex(REPORT_ID_COLUMN)
    report_id = table.GetCellText(1, col)
    table.SetCellText(1, col, "")
    try:
        assert [row for row, _ in logic.comparable_results()] == [0]
        assert "row 2: has no stored report" in logic.compare_results(0, 1).text
        assert logic.compare_results(saved, 0).comparison.change_kpa == 0.0
    finally:
        table.SetCellText(1, col, report_id)


def test_the_reports_kept_with_the_table_survive_a_saved_scene(two_runs, tmp_path):
    scene, logic, _, _ = two_runs
    expected = logic.compare_results(0, 1).text
    saved = slicer.vtkMRMLScene()
    table = saved.AddNewNodeByClass("vtkMRMLTableNode", RESULTS_TABLE_NAME)
    table.Copy(scene.GetFirstNodeByName(RESULTS_TABLE_NAME))
    table.AddDefaultStorageNode()
    table.GetStorageNode().SetFileName(str(tmp_path / "results.tsv"))
    assert table.GetStorageNode().WriteData(table)
    saved.SetURL(str(tmp_path / "scene.mrml"))
    assert saved.Commit()
    loaded = slicer.vtkMRMLScene()
    loaded.SetURL(str(tmp_path / "scene.mrml"))
    assert loaded.Connect()
    again = LiverStiffnessLogic(loaded)
    assert [row for row, _ in again.comparable_results()] == [0, 1]
    assert again.compare_results(0, 1).text == expected
