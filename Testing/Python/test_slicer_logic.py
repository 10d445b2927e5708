"""The module's logic layer on real MRML nodes (PyPI slicer-core): geometry, masks, transforms,
outputs on the T1w grid, untouched inputs, clear errors."""
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # noqa: E402 - PyPI slicer-core, installed by `make test`: a missing one must fail, not skip
import vtk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from liverstiffness.errors import InputError  # noqa: E402
from LiverStiffnessLib.logic import LiverStiffnessLogic, missing_inputs  # noqa: E402
from LiverStiffnessLib.mrml_convert import sitk_from_volume  # noqa: E402
from LiverStiffnessLib.nodes import ExamNodes  # noqa: E402


def load_volume(scene, path, name, labelmap=False):
    """As Slicer loads a file: the archetype storage node reads it into a new node."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


def matrix(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def dwi_node(scene, rec, name="dwi"):
    """The 4-D DWI as one vector volume node, a component per b-value (as a MultiVolume holds it)."""
    img = sitk.ReadImage(str(rec.dwi))
    comps = [sitk.GetArrayFromImage(img[:, :, :, k]) for k in range(img.GetSize()[3])]
    # Beside the shared cohort, not in it: other tests list the exam folders.
    path = Path(tempfile.mkdtemp()) / "dwi_b0_for_geometry.nii.gz"
    sitk.WriteImage(img[:, :, :, 0], str(path))
    ref = load_volume(scene, path, "geometry")
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.stack(comps, axis=-1))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix(ref)))
    scene.RemoveNode(ref)
    shutil.rmtree(path.parent, ignore_errors=True)
    return node


def exam_nodes(scene, rec, segmentation=False):
    t1 = load_volume(scene, rec.t1w, "T1w")
    t2 = load_volume(scene, rec.t2w, "T2w")
    dwi = dwi_node(scene, rec)
    label = load_volume(scene, rec.mask, "liver label", labelmap=True)
    nodes = ExamNodes(t1w=t1, t2w=t2, dwi=dwi, dwi_b_values=rec.dwi_b, facts=rec.facts)
    if segmentation:
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "liver seg")
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)
        assert logic.ImportLabelmapToSegmentationNode(label, seg)
        nodes.mask_segmentation = seg
        nodes.mask_segment_id = seg.GetSegmentation().GetNthSegmentID(0)
        scene.RemoveNode(label)
    else:
        nodes.mask_labelmap = label
    return nodes


def test_node_geometry_matches_the_file_read_by_simpleitk(scene, one_case):
    node = load_volume(scene, one_case.t2w, "T2w")
    a, b = sitk_from_volume(node, "t2w"), sitk.ReadImage(str(one_case.t2w))
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3) and np.allclose(a.GetSpacing(), b.GetSpacing())
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_oblique_volume_keeps_its_physical_geometry(scene, one_case, tmp_path):
    img = sitk.ReadImage(str(one_case.t1w))
    c, s = np.cos(np.deg2rad(15)), np.sin(np.deg2rad(15))
    img.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    sitk.WriteImage(img, str(tmp_path / "oblique.nrrd"))
    node = load_volume(scene, tmp_path / "oblique.nrrd", "oblique")
    back = sitk_from_volume(node, "t1w")
    assert np.allclose(back.GetDirection(), img.GetDirection(), atol=1e-6)
    for idx in ((0, 0, 0), (10, 20, 5)):
        assert np.allclose(back.TransformIndexToPhysicalPoint(idx), img.TransformIndexToPhysicalPoint(idx), atol=1e-3)


@pytest.mark.parametrize("segmentation", [False, True])
def test_labelmap_and_segmentation_give_the_same_mask(scene, one_case, segmentation):
    nodes = exam_nodes(scene, one_case, segmentation)
    images = LiverStiffnessLogic(scene).exam_images(nodes)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(one_case.mask))) > 0
    got = sitk.GetArrayFromImage(images.mask) > 0
    assert got.shape == truth.shape and (got == truth).mean() > 0.999
    assert images.dwi.b_values == tuple(sorted(one_case.dwi_b)) and images.dwi.adc is not None
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == (0 if segmentation else 1)


def test_parent_transform_is_respected_and_hardening_gives_the_same_world(scene, one_case):
    nodes = exam_nodes(scene, one_case, segmentation=True)
    tr = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "table shift")
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 12.0)
    m.SetElement(2, 3, -7.0)
    tr.SetMatrixTransformToParent(m)
    for n in (nodes.t1w, nodes.t2w, nodes.dwi, nodes.mask_segmentation):
        n.SetAndObserveTransformNodeID(tr.GetID())
    logic = LiverStiffnessLogic(scene)
    moved = logic.exam_images(nodes)
    base = sitk.ReadImage(str(one_case.t1w))
    assert np.allclose(moved.t1w.GetOrigin(), np.add(base.GetOrigin(), (-12.0, 0.0, -7.0)), atol=1e-3)  # RAS x → LPS −x
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(one_case.mask))) > 0
    assert (np.array(sitk.GetArrayFromImage(moved.mask) > 0) == truth).mean() > 0.999
    nodes.t1w.HardenTransform()
    hardened = logic.exam_images(nodes)
    assert np.allclose(hardened.t1w.GetOrigin(), moved.t1w.GetOrigin(), atol=1e-3)
    assert nodes.t1w.GetParentTransformNode() is None


def test_estimate_creates_outputs_on_the_t1w_geometry_and_leaves_inputs_unchanged(scene, one_case, tiny_model, tmp_path):
    nodes = exam_nodes(scene, one_case, segmentation=True)
    tr = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    m = vtk.vtkMatrix4x4()
    m.SetElement(1, 3, 5.0)
    tr.SetMatrixTransformToParent(m)
    for n in (nodes.t1w, nodes.t2w, nodes.dwi, nodes.mask_segmentation):
        n.SetAndObserveTransformNodeID(tr.GetID())
    before = {n.GetName(): (slicer.util.arrayFromVolume(n).copy(), matrix(n)) for n in (nodes.t1w, nodes.t2w, nodes.dwi)}
    n_nodes = scene.GetNumberOfNodes()
    logic = LiverStiffnessLogic(scene)
    result = logic.estimate(nodes, tiny_model, "cpu", tmp_path / "run", maps="default")
    for name, (arr, mat) in before.items():
        node = scene.GetFirstNodeByName(name)
        assert np.array_equal(slicer.util.arrayFromVolume(node), arr) and np.allclose(matrix(node), mat)
    att = result.attention["rollout"]
    assert att.GetName() == "T1w stiffness attention"
    assert np.allclose(matrix(att), matrix(nodes.t1w)) and att.GetTransformNodeID() == tr.GetID()
    arr = slicer.util.arrayFromVolume(att)
    assert arr.shape == slicer.util.arrayFromVolume(nodes.t1w).shape
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(one_case.mask))) > 0
    assert arr.min() >= 0 and arr[mask].mean() > 0 and (arr[~mask] > 0).any()   # the whole crop, in its unit
    assert att.GetDisplayNode().GetColorNode().GetName() == "LiverStiffness attention"
    assert att.GetDisplayNode().GetWindowLevelMax() >= 2.0                         # 1.0 (uniform) is mid-scale
    liver_only = logic.map_node(result, "rollout", inside_liver=True)
    assert liver_only is not att and liver_only is logic.map_node(result, "rollout", inside_liver=True)
    only = slicer.util.arrayFromVolume(liver_only)
    assert np.all(only[~mask] == 0) and np.allclose(only[mask], arr[mask])
    assert np.allclose(matrix(liver_only), matrix(att))
    note = logic.map_note(result.report, "rollout")
    assert ("near-uniform" in note) != result.report.attention["maps"]["rollout"]["informative"]
    # What the panel (and the web page) draw: the rollout interpolated between patch centres, the
    # liver-only copy zeroed outside the mask; saliency drawn as written; the files keep the blocks.
    from LiverStiffnessLib.map_display import MapDisplay
    shown = MapDisplay(logic, scene)
    smooth = slicer.util.arrayFromVolume(shown.node(result, "rollout", inside_liver=False))
    smooth_liver = slicer.util.arrayFromVolume(shown.node(result, "rollout", inside_liver=True))
    assert len(np.unique(smooth[arr > 0])) > 5 * len(np.unique(arr[arr > 0])) and "rollout" in shown.patch_mm
    assert np.all(smooth_liver[~mask] == 0) and np.allclose(smooth_liver[mask], smooth[mask])
    assert shown.node(result, "saliency_t2w", inside_liver=False) is result.attention["saliency_t2w"]
    table = result.table
    assert table.GetName() == "LiverStiffness results" and table.GetNumberOfRows() == 1
    assert float(table.GetCellText(0, 2)) == pytest.approx(result.report.stiffness_kpa)
    from LiverStiffnessLib.logic import TABLE_COLUMNS
    assert table.GetCellText(0, TABLE_COLUMNS.index("input_range")) == "in range"   # the model's training ranges
    logic.estimate(nodes, tiny_model, "cpu", tmp_path / "run2", maps="none")
    assert table.GetNumberOfRows() == 2                          # one row per run, to compare runs
    assert {"gradcam", "saliency_t2w"} <= set(result.attention)
    assert scene.GetNumberOfNodes() > n_nodes
    saved = logic.save_report(result, tmp_path / "saved")
    assert {p.name for p in saved} >= {"report.json", "attention_montage.png", "attention.nii.gz"}


def test_bad_inputs_raise_the_clear_error_the_panel_shows(scene, one_case):
    nodes = exam_nodes(scene, one_case)
    logic = LiverStiffnessLogic(scene)
    # any of T1w, T2w and DWI is enough (test_slicer_subsets.py); the mask is not optional
    assert missing_inputs(ExamNodes(t1w=nodes.t1w)) == "Select the liver mask (a segmentation and segment, or a labelmap)."
    with pytest.raises(InputError, match="inputs: Select the liver mask"):
        logic.exam_images(ExamNodes(t1w=nodes.t1w, t2w=nodes.t2w))
    wrong_b = ExamNodes(**{**nodes.__dict__, "dwi_b_values": (0.0, 500.0, 1000.0)})
    with pytest.raises(InputError, match="has 2 volume\\(s\\) but 3 b-value"):
        logic.exam_images(wrong_b)
    empty = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "empty")
    slicer.util.updateVolumeFromArray(empty, np.zeros_like(slicer.util.arrayFromVolume(nodes.mask_labelmap)))
    empty.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix(nodes.mask_labelmap)))
    with pytest.raises(InputError, match="liver mask empty: is empty"):
        logic.exam_images(ExamNodes(**{**nodes.__dict__, "mask_labelmap": empty}))
    bent = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    nodes.t2w.SetAndObserveTransformNodeID(bent.GetID())
    with pytest.raises(InputError, match="non-linear transform"):
        logic.exam_images(nodes)


@pytest.mark.slow
def test_background_run_reports_stages_and_loads_results(scene, one_case, tiny_model):
    import time
    nodes = exam_nodes(scene, one_case)
    logic = LiverStiffnessLogic(scene)
    run = logic.start_background(nodes, tiny_model, "cpu", maps="none")
    seen, state = set(), "running"
    deadline = time.time() + 300
    while state == "running" and time.time() < deadline:
        state = run.poll()
        seen.add(run.stage)
        time.sleep(0.05)
    assert state == "done", run.error()
    assert {"qa", "model"} <= seen
    res = run.result()
    assert res.attention["rollout"].GetName().startswith("T1w stiffness attention")
    run.cleanup()
    cancelled = logic.start_background(nodes, tiny_model, "cpu", maps="none")
    cancelled.cancel()
    assert cancelled.poll() == "cancelled" and not cancelled.work.exists()


def test_check_mask_on_nodes_and_slice_jump(scene, one_case):
    nodes = exam_nodes(scene, one_case, segmentation=True)
    logic = LiverStiffnessLogic(scene)
    qa = logic.check_mask(nodes)
    assert qa.flags == []
    ras = logic.slice_position_ras(nodes.t1w, 5)
    ijk_to_ras = matrix(nodes.t1w)
    k = np.linalg.solve(ijk_to_ras, [*ras, 1.0])[2]
    assert k == pytest.approx(5.0)
