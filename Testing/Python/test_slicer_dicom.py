"""DICOM on real MRML nodes (PyPI slicer-core): the SEG written by --dicom-out lands on the T1w
that Slicer's own DICOM reader loads, voxel for voxel; a study loads into the panel's inputs."""
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # noqa: E402 - PyPI slicer-core, installed by `make test`
import vtk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from liverstiffness.dicom.results import FILES  # noqa: E402
from liverstiffness.dicom.selection import select_study  # noqa: E402
from LiverStiffnessLib.dicom_nodes import load_seg_node, load_series_node  # noqa: E402
from LiverStiffnessLib.logic import LiverStiffnessLogic, missing_inputs  # noqa: E402
from LiverStiffnessLib.mrml_convert import labelmap_from_segment, sitk_from_volume  # noqa: E402


def ijk_to_ras(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def test_output_seg_loads_on_the_t1w_geometry(scene, predicted, study_case):
    """Slicer reads the T1w series itself; the SEG, exported onto that node, is the liver mask of
    report.json's run (liver_mask.nii.gz), and sits where the T1w is in RAS."""
    report, out = predicted
    sel = select_study(study_case.study, need_mask=True)
    t1 = load_series_node(sel.chosen["t1w"].instances, "T1w", scene)
    liver = sitk.ReadImage(str(out / "result" / "liver_mask.nii.gz"))
    assert t1.GetImageData().GetDimensions() == liver.GetSize()
    expected = np.eye(4)
    d = np.asarray(liver.GetDirection()).reshape(3, 3) * np.asarray(liver.GetSpacing())
    expected[:3, :3], expected[:3, 3] = np.diag([-1, -1, 1]) @ d, np.diag([-1, -1, 1]) @ np.asarray(liver.GetOrigin())
    assert np.allclose(ijk_to_ras(t1), expected, atol=1e-3)
    seg = load_seg_node(out / "dicom" / FILES["seg"], t1, "liver SEG", scene)
    mask = labelmap_from_segment(seg, seg.GetSegmentation().GetNthSegmentID(0), t1, scene)
    assert np.array_equal(sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(liver) > 0)
    assert seg.GetSegmentation().GetNthSegment(0).GetName() == "liver"


def test_a_study_becomes_the_panels_inputs(scene, study_case):
    logic = LiverStiffnessLogic(scene)
    nodes, selection = logic.load_study(study_case.study)
    assert missing_inputs(nodes) is None
    assert nodes.dwi_b_values == tuple(study_case.dwi_b) and nodes.dwi.GetImageData().GetNumberOfScalarComponents() == 3
    assert nodes.facts.sex == study_case.facts.sex and nodes.mask_segmentation is not None
    assert "t1_fl2d_opp-in_tra_bh" in nodes.t1w.GetName() and "→ T1w" in selection.format_table()
    images = logic.exam_images(nodes)                   # what Estimate would run on
    ref = sitk.ReadImage(str(study_case.t1w))
    assert images.t1w.GetSize() == ref.GetSize() and np.allclose(images.t1w.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(images.mask), sitk.GetArrayFromImage(sitk.ReadImage(str(study_case.mask))))
    assert images.dwi.b_values == tuple(study_case.dwi_b)
    t2 = sitk_from_volume(nodes.t2w, "t2w")
    assert np.corrcoef(sitk.GetArrayFromImage(t2).ravel(),
                       sitk.GetArrayFromImage(sitk.ReadImage(str(study_case.t2w))).ravel())[0, 1] > 0.9999


def test_a_study_without_a_t1w_loads_the_others_and_a_failed_one_leaves_the_scene_as_it_was(scene, real_data,
                                                                                            monkeypatch):
    """A study with no T1w (a prostate MRI: T2w and DWI) is an exam without it, the reason kept
    for the report; a study that fails half-way leaves no node behind."""
    from liverstiffness.errors import InputError
    from LiverStiffnessLib import dicom_nodes

    before = scene.GetNumberOfNodes()
    logic = LiverStiffnessLogic(scene)
    nodes, _ = logic.load_study(real_data / "prostatex_0000_dicom")
    assert nodes.t1w is None and nodes.sequences == ("t2w", "dwi") and nodes.reference_node is nodes.t2w
    assert nodes.left_out == {"t1w": "no series in the study matched the T1w rules"}
    assert nodes.dwi_b_values == (50.0, 400.0, 800.0)
    for node in (nodes.t2w, nodes.dwi):
        scene.RemoveNode(node)
    assert scene.GetNumberOfNodes() == before

    def unreadable(*args, **kwargs):
        raise InputError("DWI", "cannot be read")

    monkeypatch.setattr(dicom_nodes, "read_dwi_instances", unreadable)   # after the T2w node is made
    with pytest.raises(InputError, match="cannot be read"):
        logic.load_study(real_data / "prostatex_0000_dicom")
    assert scene.GetNumberOfNodes() == before
