""""Segment liver" in the module's logic, on real MRML nodes (PyPI slicer-core): a new
segmentation node on the T2w's geometry and parent transform, editable, usable as the mask."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # PyPI slicer-core: a missing one must fail, not skip
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from test_slicer_logic import load_volume, matrix

from liverstiffness.errors import InputError
from liverstiffness.segmentation.metrics import dice
from LiverStiffnessLib.logic import LiverStiffnessLogic
from LiverStiffnessLib.mrml_convert import labelmap_from_segment, sitk_from_volume
from LiverStiffnessLib.nodes import ExamNodes

pytestmark = pytest.mark.slow   # runs the shipped segmenter on MRML nodes


def test_segment_liver_makes_an_editable_segment_on_the_t2w_geometry(scene, real_data):  # noqa: F811
    t2 = load_volume(scene, real_data / "chaos_t2spir" / "image_3.nii.gz", "T2w")
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "table shift")
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 14.0)
    m.SetElement(2, 3, -9.0)
    shift.SetMatrixTransformToParent(m)
    t2.SetAndObserveTransformNodeID(shift.GetID())
    before = (slicer.util.arrayFromVolume(t2).copy(), matrix(t2))
    n_labelmaps = scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems()  # before "manual" is added

    logic = LiverStiffnessLogic(scene)
    result = logic.segment_liver(t2, device="cpu")
    seg = result.segmentation
    assert seg.GetName() == "T2w liver (automatic)" and seg.GetTransformNodeID() == shift.GetID()
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    assert segmentation.GetSegment(result.segment_id).GetName() == "liver"
    assert seg.GetDisplayNode() is not None                              # shown, ready for Segment Editor
    info = json.loads(seg.GetAttribute("LiverStiffness.automaticMask"))
    assert info["source"] == "automatic" and 0.5 < info["confidence"]["mean_probability"] <= 1
    # The input is untouched and no temporary node is left behind.
    assert np.array_equal(slicer.util.arrayFromVolume(t2), before[0]) and np.allclose(matrix(t2), before[1])
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == n_labelmaps

    # Exported back on the T2w grid it is the core's own mask, and it sits on the manual liver.
    exported = sitk.GetArrayFromImage(labelmap_from_segment(seg, result.segment_id, t2, scene))
    from liverstiffness.segmentation.auto_mask import get_segmenter
    direct = get_segmenter("model", None, "cpu").segment(sitk_from_volume(t2, "T2w")).mask
    assert dice(exported, sitk.GetArrayFromImage(direct)) > 0.99
    # The manual label, loaded as Slicer loads it (its voxel order may differ from the file's) and
    # under the same transform, lies on the same grid.
    label = load_volume(scene, real_data / "chaos_t2spir" / "label_3.nii.gz", "manual", labelmap=True)
    label.SetAndObserveTransformNodeID(shift.GetID())
    manual = sitk.GetArrayFromImage(sitk_from_volume(label, "manual")) == 1
    assert dice(exported, manual) > 0.9

    # It is a mask the estimate accepts, like any segment.
    nodes = ExamNodes(t1w=t2, t2w=t2, dwi=t2, dwi_b_values=(800.0,), mask_segmentation=seg,
                      mask_segment_id=result.segment_id)
    images = logic.exam_images(nodes)
    assert dice(sitk.GetArrayFromImage(images.mask), exported) > 0.99


def test_segment_liver_without_a_volume_is_a_clear_error(scene):  # noqa: F811
    with pytest.raises(InputError, match="select the T2w volume first"):
        LiverStiffnessLogic(scene).segment_liver(None)
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
