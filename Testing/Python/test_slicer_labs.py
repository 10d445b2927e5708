"""Blood tests (AST, ALT, platelets) typed in the Slicer panel, through the module's logic on real MRML
nodes (PyPI slicer-core): they reach the estimate exactly as ``liverstiffness predict --ast --alt
--platelets`` takes them, the report lists them with FIB-4, a value out of its range is one line naming
the field, and a model trained without them says it did not use them (read from its model.json)."""
import ast
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from test_slicer_logic import exam_nodes  # noqa: E402

from liverstiffness.errors import InputError  # noqa: E402
from liverstiffness.manifest import PatientFacts  # noqa: E402
from liverstiffness.stiffness.checkpoint import DEMO_MODEL_DIR  # noqa: E402
from liverstiffness.stiffness.covariates import COVARIATES_V1, LAB_COVARIATES  # noqa: E402
from LiverStiffnessLib.logic import FACT_FLAGS, LiverStiffnessLogic, facts_problem, fib4_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# 64 y, AST 36 U/L, ALT 16 U/L, platelets 144 × 10⁹/L: FIB-4 = 64 · 36 / (144 · √16) = 4.0 exactly.
LABS = {"ast": 36.0, "alt": 16.0, "platelets": 144.0}
FACTS = PatientFacts(age=64.0, sex="F", bmi=27.5, **LABS)


def model_covariates(folder) -> list[str]:
    """The covariates a model folder was trained with, as its model.json names them (a folder written
    before the blood tests names none: the original four)."""
    arch = json.loads((Path(folder) / "model.json").read_text())["architecture"]
    return list(arch.get("covariates", COVARIATES_V1))


def test_fib4_is_shown_only_with_all_four_inputs_and_a_bad_value_is_one_line_naming_it():
    assert fib4_text(FACTS) == "FIB-4 4.00 (computed from age, AST, ALT and platelets)"
    assert fib4_text(replace(FACTS, alt=None)) == "" and fib4_text(replace(FACTS, age=None)) == ""
    assert facts_problem(FACTS) is None
    for field, value, says in (("ast", 20000.0, "patient AST: 20000.0 U/L is outside the plausible range"),
                               ("alt", 0.0, "patient ALT: 0.0 U/L is outside the plausible range"),
                               ("platelets", 250000.0, "patient platelets: 250000.0 10⁹/L is outside the plausible")):
        bad = replace(FACTS, **{field: value})
        problem = facts_problem(bad)
        assert problem.startswith(says) and "\n" not in problem, problem
        assert fib4_text(bad) == ""                     # never computed from a value that cannot be used
    # The panel sends every fact the command line takes, under the command line's own flag.
    assert dict(FACT_FLAGS) == {"age": "--age", "sex": "--sex", "bmi": "--bmi", "pdff": "--pdff",
                                "ast": "--ast", "alt": "--alt", "platelets": "--platelets"}


def test_the_panel_declares_the_lab_fields_it_passes_on():
    """The Qt panel (not importable without the application): its parameters and fields for the labs."""
    module = ast.parse((ROOT / "LiverStiffness" / "LiverStiffness.py").read_text())
    params = next(n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "LiverStiffnessParameterNode")
    declared = {n.target.id: (ast.unparse(n.annotation), ast.literal_eval(n.value))
                for n in params.body if isinstance(n, ast.AnnAssign) and n.value is not None}
    assert [declared[k] for k in LABS] == [("float", 0.0)] * 3          # 0: unknown (the spin boxes' "unknown")
    fields = next(n.value for n in module.body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "LAB_FIELDS")
    assert [e.elts[0].value for e in fields.elts] == list(LABS)


def test_an_out_of_range_ast_is_one_line_and_nothing_is_started(scene, one_case, tmp_path):
    nodes = exam_nodes(scene, one_case)
    nodes.facts = replace(FACTS, ast=20000.0)
    logic = LiverStiffnessLogic(scene)
    for call in (lambda: logic.exam_images(nodes), lambda: logic.check_mask(nodes),
                 lambda: logic.start_background(nodes, None, "cpu", work_root=tmp_path)):
        with pytest.raises(InputError) as err:
            call()
        assert str(err.value) == ("patient AST: 20000.0 U/L is outside the plausible range 1.0–10000.0 U/L"), err.value
        assert err.value.what == "patient AST"
    assert list(tmp_path.iterdir()) == []               # no run folder was made


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_the_report_lists_the_labs_and_fib4_and_warns_when_the_model_was_trained_without_them(
        scene, one_case, tmp_path, request, which):
    """The tiny test model is trained now, so with the lab tokens; the shipped demo model before them,
    with the original four: the warning follows what each model.json names."""
    folder = request.getfixturevalue("tiny_model") if which == "tiny" else DEMO_MODEL_DIR
    covariates = model_covariates(folder)
    assert (set(LAB_COVARIATES) <= set(covariates)) == (which == "tiny")   # both cases are exercised
    nodes = exam_nodes(scene, one_case)
    nodes.facts = FACTS
    result = LiverStiffnessLogic(scene).estimate(nodes, folder, "cpu", tmp_path / "run", maps="none")
    patient = json.loads((tmp_path / "run" / "report.json").read_text())["patient"]
    assert {k: patient[k] for k in LABS} == LABS and patient["fib4"] == pytest.approx(4.0, rel=1e-12)
    assert (patient["age"], patient["sex"], patient["bmi"]) == (64.0, "F", 27.5) and patient["pdff"] is None
    assert result.report.patient == patient
    unused = [c for c in LAB_COVARIATES if c not in covariates]
    said = [w for w in result.report.warnings if w.startswith("blood tests given")]
    if unused:
        assert said == [f"blood tests given ({', '.join(unused)}) but this model was trained without them: not used"]
        assert unused == ["ast", "alt", "platelets", "fib4"]
    else:
        assert said == []


@pytest.mark.slow   # a background process, as the panel runs it
def test_the_background_run_passes_the_labs_as_the_command_line_takes_them(scene, one_case, tiny_model):
    nodes = exam_nodes(scene, one_case)
    nodes.facts = FACTS
    run = LiverStiffnessLogic(scene).start_background(nodes, tiny_model, "cpu", maps="none")
    try:
        args = run.child.proc.args
        assert [args[args.index(flag) + 1] for flag in ("--ast", "--alt", "--platelets")] == ["36.0", "16.0", "144.0"]
        assert "--pdff" not in args and args[args.index("--age") + 1] == "64.0"   # a fact not given is left out
        state, deadline = "running", time.time() + 300
        while state == "running" and time.time() < deadline:
            state = run.poll()
            time.sleep(0.05)
        assert state == "done", run.error()
        report = run.result().report
        assert {k: report.patient[k] for k in LABS} == LABS and report.patient["fib4"] == pytest.approx(4.0)
        assert not [w for w in report.warnings if w.startswith("blood tests given")]   # the tiny model uses them
    finally:
        run.cleanup()
