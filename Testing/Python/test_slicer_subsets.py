"""Any non-empty subset of T1w, T2w and DWI in the module's logic, on real MRML nodes (PyPI
slicer-core): the results lie on the reference's geometry (T1w when used, else T2w, else the DWI)
and take its name, the inputs are untouched, and the report, the results table and the HTML page
say which sequences were used and why the others were not (issue 36)."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # PyPI slicer-core: a missing one must fail, not skip

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from test_slicer_logic import dwi_node, load_volume, matrix  # noqa: E402

from liverstiffness.errors import InputError  # noqa: E402
from LiverStiffnessLib.logic import TABLE_COLUMNS, LiverStiffnessLogic, missing_inputs  # noqa: E402
from LiverStiffnessLib.nodes import ExamNodes  # noqa: E402


def subset_nodes(scene, rec, *sequences, segmentation=False, **extra) -> ExamNodes:
    """``ExamNodes`` holding only ``sequences`` of exam ``rec`` and its mask (a labelmap, or a
    segmentation made from it)."""
    nodes = ExamNodes(facts=rec.facts, **extra)
    if "t1w" in sequences:
        nodes.t1w = load_volume(scene, rec.t1w, "T1w")
    if "t2w" in sequences:
        nodes.t2w = load_volume(scene, rec.t2w, "T2w")
    if "dwi" in sequences:
        nodes.dwi, nodes.dwi_b_values = dwi_node(scene, rec, "DWI"), tuple(rec.dwi_b)
    label = load_volume(scene, rec.mask, "liver label", labelmap=True)
    if segmentation:
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "liver seg")
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)
        assert logic.ImportLabelmapToSegmentationNode(label, seg)
        nodes.mask_segmentation, nodes.mask_segment_id = seg, seg.GetSegmentation().GetNthSegmentID(0)
        scene.RemoveNode(label)
    else:
        nodes.mask_labelmap = label
    return nodes


def snapshot(nodes: ExamNodes) -> dict:
    return {n.GetName(): (slicer.util.arrayFromVolume(n).copy(), matrix(n))
            for n in (nodes.t1w, nodes.t2w, nodes.dwi) if n is not None}


def assert_unchanged(scene, before: dict) -> None:
    for name, (arr, mat) in before.items():
        node = scene.GetFirstNodeByName(name)
        assert np.array_equal(slicer.util.arrayFromVolume(node), arr) and np.allclose(matrix(node), mat), name


def assert_on_geometry(node, reference) -> None:
    assert np.allclose(matrix(node), matrix(reference))
    assert slicer.util.arrayFromVolume(node).shape == slicer.util.arrayFromVolume(reference).shape


def test_t2w_only_runs_on_the_t2w_geometry_and_says_so(scene, one_case, tiny_model, tmp_path):
    nodes = subset_nodes(scene, one_case, "t2w")
    t1_size = sitk.ReadImage(str(one_case.t1w)).GetSize()
    assert nodes.reference_name == "t2w" and missing_inputs(nodes) is None
    before = snapshot(nodes)
    logic = LiverStiffnessLogic(scene)
    result = logic.estimate(nodes, tiny_model, "cpu", tmp_path / "run", maps="default")
    assert_unchanged(scene, before)
    report = result.report
    assert report.sequences_used == ["t2w"]
    assert report.sequences_missing == {"t1w": "not given", "dwi": "not given"}
    assert report.preprocessing["reference_sequence"] == "t2w" and report.interval_basis == "t2w"
    assert report.sequences_text == "T2w only (no T1w: not given; no DWI: not given)"
    assert set(report.inputs) == {"t2w", "mask"} and report.stiffness_kpa > 0
    # the maps: new nodes on the T2w's geometry, named after it
    att = result.attention["rollout"]
    assert att.GetName() == "T2w stiffness attention" and att.GetAttribute("LiverStiffness.referenceSequence") == "t2w"
    for node in result.attention.values():
        assert_on_geometry(node, nodes.t2w)
    liver = sitk.ReadImage(str(result.output_dir / report.outputs["liver_mask"]))
    assert liver.GetSize() == slicer.util.arrayFromVolume(nodes.t2w).shape[::-1] != t1_size
    only = logic.map_node(result, "rollout", inside_liver=True)
    assert_on_geometry(only, nodes.t2w)
    # a sequence not used has no saliency to show: the note says so instead of a number
    assert "The T1w was not used in this estimate (not given)" in logic.map_note(report, "saliency_t1w")
    assert "Saliency of the T2w only" in logic.map_note(report, "saliency_t2w")
    # the results table and the panel's line
    table = result.table
    assert table.GetCellText(0, TABLE_COLUMNS.index("reference")) == "T2w"
    assert table.GetCellText(0, TABLE_COLUMNS.index("sequences")) == report.sequences_text
    assert LiverStiffnessLogic.sequences_text(report) == "Sequences used: T2w only (no T1w: not given; no DWI: not given)"
    # the HTML page the run wrote
    page = (result.output_dir / report.outputs["report_page"]).read_text()
    assert "<b>Sequences used:</b> T2w" in page and "no T1w: not given; no DWI: not given" in page
    assert "Attention rollout over the T2w" in page and "<td>T1w</td><td colspan=2>not used: not given</td>" in page
    assert any("estimated without T1w, DWI" in w for w in report.warnings)


def test_t1w_and_t2w_run_on_the_t1w_geometry(scene, one_case, tiny_model, tmp_path):
    nodes = subset_nodes(scene, one_case, "t1w", "t2w", segmentation=True)
    before = snapshot(nodes)
    n_before = scene.GetNumberOfNodes()
    logic = LiverStiffnessLogic(scene)
    result = logic.estimate(nodes, tiny_model, "cpu", tmp_path / "run", maps="none")
    assert_unchanged(scene, before)
    report = result.report
    assert report.sequences_used == ["t1w", "t2w"] and report.sequences_missing == {"dwi": "not given"}
    assert report.preprocessing["reference_sequence"] == "t1w" and report.interval_basis == "t1w+t2w"
    assert report.sequences_text == "T1w, T2w only (no DWI: not given)"
    att = result.attention["rollout"]
    assert att.GetName() == "T1w stiffness attention" and set(result.attention) == {"rollout"}
    assert_on_geometry(att, nodes.t1w)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(one_case.mask))) > 0
    assert slicer.util.arrayFromVolume(att)[mask].mean() > 0
    assert scene.GetNumberOfNodes() > n_before
    assert result.table.GetCellText(0, TABLE_COLUMNS.index("reference")) == "T1w"
    page = (result.output_dir / report.outputs["report_page"]).read_text()
    assert "<b>Sequences used:</b> T1w, T2w" in page and "no DWI: not given" in page


def test_no_sequence_at_all_is_a_one_line_message(scene, one_case):
    nodes = subset_nodes(scene, one_case)                         # the mask only
    logic = LiverStiffnessLogic(scene)
    assert missing_inputs(nodes) == "Select at least one of the T1w, T2w and DWI volumes."
    with pytest.raises(InputError) as err:
        logic.exam_images(nodes)
    assert str(err.value) == "inputs: Select at least one of the T1w, T2w and DWI volumes."
    nodes.t2w = load_volume(scene, one_case.t2w, "T2w")
    nodes.left_out = {"t2w": "motion artefact"}
    assert missing_inputs(nodes) == "Every selected sequence is left out: keep at least one of T1w, T2w and DWI."
    with pytest.raises(InputError, match=r"^inputs: Every selected sequence is left out"):
        logic.exam_images(nodes)
    nodes.left_out = {}
    nodes.dwi = dwi_node(scene, one_case, "DWI")                  # a DWI needs its b-values, only when used
    assert missing_inputs(nodes) == "Enter the DWI b-value(s) in s/mm²."
    nodes.left_out = {"dwi": "motion artefact"}
    assert missing_inputs(nodes) is None


def test_left_out_and_dwi_only_inputs(scene, one_case):
    """A selected sequence left out with a reason is not read (its b-values may be missing); a
    DWI alone is the reference, and a segmentation mask is exported onto its grid."""
    logic = LiverStiffnessLogic(scene)
    nodes = subset_nodes(scene, one_case, "t1w", "t2w", "dwi", segmentation=True,
                         left_out={"t1w": "motion artefact", "dwi": "not acquired"})
    nodes.dwi_b_values = ()
    images = logic.exam_images(nodes)
    assert images.sequences == ("t2w",) and images.reference_name == "t2w"
    assert images.left_out == {"t1w": "motion artefact", "dwi": "not acquired"}
    assert images.mask.GetSize() == images.t2w.GetSize()
    dwi_only = subset_nodes(scene, one_case, "dwi", segmentation=True)
    images = logic.exam_images(dwi_only)
    assert images.sequences == ("dwi",) and images.reference_name == "dwi"
    assert images.mask.GetSize() == images.dwi.images[0].GetSize() and sitk.GetArrayViewFromImage(images.mask).any()
    assert dwi_only.reference_node is dwi_only.dwi


@pytest.mark.slow
def test_background_run_of_a_subset_names_the_left_out_sequence(scene, one_case, tiny_model):
    """The panel's (and the web page's) way: `liverstiffness predict` in a child process, given only
    the sequences used, and the reason for the one left out."""
    nodes = subset_nodes(scene, one_case, "t1w", "t2w", "dwi", left_out={"t2w": "motion artefact"})
    logic = LiverStiffnessLogic(scene)
    run = logic.start_background(nodes, tiny_model, "cpu", maps="none")
    assert "--t2w" not in run.child.proc.args and "t2w:motion artefact" in run.child.proc.args
    state, deadline = "running", time.time() + 300
    while state == "running" and time.time() < deadline:
        state = run.poll()
        time.sleep(0.05)
    assert state == "done", run.error()
    res = run.result()
    try:
        assert res.report.sequences_used == ["t1w", "dwi"]
        assert res.report.sequences_missing == {"t2w": "motion artefact"}
        assert res.attention["rollout"].GetName() == "T1w stiffness attention"
        assert_on_geometry(res.attention["rollout"], nodes.t1w)
    finally:
        run.cleanup()
