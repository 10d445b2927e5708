"""MRML volume nodes ⇄ SimpleITK images, respecting IJK-to-RAS and parent transforms.

Slicer stores geometry as an IJK→RAS matrix (plus an optional parent transform to world); ITK
uses LPS. World geometry = parent transform (linear only) ∘ IJK→RAS, then RAS→LPS flips x and y.
``sitkUtils`` is not shipped outside the application, and this is all it would do for us here.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from liverstiffness.errors import InputError

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ijk_to_world(node) -> np.ndarray:
    """4×4 IJK → world RAS matrix, including a linear parent transform."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(m)
    parent = node.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise InputError(node.GetName(), "has a non-linear transform; harden it (Transforms module) first")
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = slicer.util.arrayFromVTKMatrix(to_world) @ ijk_to_ras
    return ijk_to_ras


def sitk_from_volume(node, what: str, component: int | None = None) -> sitk.Image:
    """A scalar (or one component of a vector) volume node as a float32 LPS SimpleITK image."""
    if node is None or node.GetImageData() is None:
        raise InputError(what, "no volume selected (or it has no image data)")
    arr = slicer.util.arrayFromVolume(node)
    if arr.ndim == 4:
        if component is None:
            raise InputError(f"{what} {node.GetName()}", f"has {arr.shape[-1]} components; pick one")
        arr = arr[..., component]
    if min(arr.shape) < 2:
        raise InputError(f"{what} {node.GetName()}", f"is not a 3-D volume (size {arr.shape[::-1]})")
    m = ijk_to_world(node)
    if not np.all(np.isfinite(m)):
        raise InputError(f"{what} {node.GetName()}", "has a non-finite IJK-to-RAS matrix")
    lps = RAS_TO_LPS @ m[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"{what} {node.GetName()}", f"has a zero voxel spacing {tuple(spacing.round(4).tolist())} mm")
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=np.float32))  # copy: the node is never touched
    img.SetSpacing(spacing.tolist())
    try:
        img.SetDirection((lps / spacing).ravel().tolist())
    except RuntimeError:                 # ITK refuses a singular direction matrix
        raise InputError(f"{what} {node.GetName()}", "has a singular IJK-to-RAS direction matrix") from None
    img.SetOrigin((RAS_TO_LPS @ m[:3, 3]).tolist())
    return img   # values are checked by the caller, as for files (liverstiffness.input_checks)


def n_components(node) -> int:
    return node.GetImageData().GetNumberOfScalarComponents() if node and node.GetImageData() else 0


def volume_from_sitk(img: sitk.Image, like_node, name: str, scene, node_class: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node holding ``img``, placed exactly like ``like_node`` (same IJK→RAS and
    parent transform). ``img`` must be on ``like_node``'s voxel grid (as core results are)."""
    node = scene.AddNewNodeByClass(node_class, name)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(img))
    m = vtk.vtkMatrix4x4()
    like_node.GetIJKToRASMatrix(m)
    node.SetIJKToRASMatrix(m)
    if like_node.GetParentTransformNode() is not None:
        node.SetAndObserveTransformNodeID(like_node.GetTransformNodeID())
    return node


def labelmap_from_segment(seg_node, segment_id: str, reference_node, scene) -> sitk.Image:
    """Binary mask of one segment on ``reference_node``'s grid, through Slicer's own export
    (which handles the segmentation's geometry and transforms)."""
    if seg_node is None:
        raise InputError("liver mask", "no segmentation selected")
    segmentation = seg_node.GetSegmentation()
    if not segment_id or segmentation.GetSegment(segment_id) is None:
        raise InputError(f"liver mask {seg_node.GetName()}", f"has no segment {segment_id!r}")
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__liverstiffness_tmp_mask")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not logic.ExportSegmentsToLabelmapNode(seg_node, ids, label, reference_node):
            raise InputError(f"liver mask {seg_node.GetName()}", "could not be exported to a labelmap")
        # The export lands on the reference's voxel grid; place it under the reference's transform too.
        label.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
        img = sitk_from_volume(label, "liver mask")
    finally:
        scene.RemoveNode(label)  # temporary: the scene is left as it was
    return sitk.Cast(img > 0, sitk.sitkUInt8)


def new_volume_from_sitk(img: sitk.Image, name: str, scene, node_class: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node holding ``img`` where the image lies in space: its LPS geometry becomes
    the node's IJK→RAS matrix (the inverse of ``sitk_from_volume``). For images read from files."""
    node = scene.AddNewNodeByClass(node_class, name)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(img))
    direction = np.array(img.GetDirection(), dtype=float).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = RAS_TO_LPS @ direction @ np.diag(img.GetSpacing())
    m[:3, 3] = RAS_TO_LPS @ np.array(img.GetOrigin(), dtype=float)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(m))
    return node
