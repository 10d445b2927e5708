"""A DICOM study into MRML nodes for the panel: the series chosen by the rules, read by Slicer's
own DICOM reader (the archetype storage node with the series' file list), the DWI as one vector
volume (a component per b-value) and the study's liver SEG as a segmentation node.

No Qt; RAS in Slicer, LPS in the core (``mrml_convert`` and ``node_from_sitk`` convert).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer

from liverstiffness.dicom.selection import StudySelection, select_study
from liverstiffness.dicom.study_input import patient_facts_from_header, read_dwi_instances, sorted_instances
from liverstiffness.errors import InputError

from .nodes import LIVER_COLOR, LIVER_SEGMENT_NAME, SEQUENCE_LABELS, ExamNodes

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def node_from_sitk(img: sitk.Image, name: str, scene, node_class: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node holding ``img`` on its own geometry (LPS image → RAS node)."""
    node = scene.AddNewNodeByClass(node_class, name)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(img))
    d = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ d
    m[:3, 3] = LPS_TO_RAS @ np.asarray(img.GetOrigin())
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(m))
    return node


def load_series_node(instances, name: str, scene):
    """One series (or its in-phase echo) read by Slicer's DICOM reader from its file list."""
    files = [str(i.path) for i in sorted_instances(instances, name)]
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(files[0])
    storage.ResetFileNameList()
    for f in files:
        storage.AddFileName(f)
    storage.SetSingleFile(0)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise InputError(name, "Slicer could not read the DICOM series")
    return node


def load_seg_node(path, reference_node, name: str, scene):
    """The liver segment of a DICOM SEG as a new segmentation node (segment 'liver')."""
    from liverstiffness.dicom.seg import read_seg_mask


    label = node_from_sitk(read_seg_mask(path), "__liverstiffness_tmp_seg", scene, "vtkMRMLLabelMapVolumeNode")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    try:
        if reference_node is not None:
            seg.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)
        if not logic.ImportLabelmapToSegmentationNode(label, seg):
            raise InputError(f"mask SEG {path}", "could not be imported into a segmentation")
    except BaseException:
        scene.RemoveNode(seg)
        raise
    finally:
        scene.RemoveNode(label)
    segment = seg.GetSegmentation().GetNthSegment(0)
    segment.SetName(LIVER_SEGMENT_NAME)
    segment.SetColor(*LIVER_COLOR)
    return seg


def load_study_nodes(folder, scene, rules=None, overrides: dict | None = None):
    """The study's T1w, T2w, DWI (those its rules find: any non-empty subset) and liver SEG (when
    there is one, on the reference's grid) as new nodes, filled into an ``ExamNodes`` with the
    DWI b-values, the patient facts of the headers and, for a role with no series, why
    (``left_out``, which the report names); and the selection (its ``format_table()`` says what
    was chosen and why)."""

    selection: StudySelection = select_study(folder, rules, overrides, find_mask=True)
    c = selection.chosen
    made = []
    try:
        nodes = ExamNodes(left_out=dict(getattr(selection, "missing", None) or {}))
        for role in ("t1w", "t2w"):
            if role in c:
                node = load_series_node(c[role].instances, f"{SEQUENCE_LABELS[role]} {c[role].series.description}", scene)
                made.append(node)
                setattr(nodes, role, node)
        if "dwi" in c:
            dwi = read_dwi_instances(c["dwi"].instances, f"DWI {c['dwi'].series.label()}", fit_adc=False)
            node = node_from_sitk(dwi.images[0], f"DWI {c['dwi'].series.description}", scene, "vtkMRMLVectorVolumeNode")
            made.append(node)
            slicer.util.updateVolumeFromArray(node, np.stack([sitk.GetArrayFromImage(im) for im in dwi.images], axis=-1))
            nodes.dwi, nodes.dwi_b_values = node, dwi.b_values
        if not nodes.sequences:
            raise InputError(f"study {folder}", "has no T1w, T2w or DWI series the rules choose")
        nodes.facts, _ = patient_facts_from_header(c[nodes.reference_name].series.header)
        if selection.mask_series is not None:
            seg = load_seg_node(selection.mask_series.files[0], nodes.reference_node,
                                f"{selection.mask_series.description} (liver)", scene)
            made.append(seg)
            nodes.mask_segmentation, nodes.mask_segment_id = seg, seg.GetSegmentation().GetNthSegmentID(0)
    except BaseException:
        for n in made:                  # no half-loaded study is left in the scene
            scene.RemoveNode(n)
        raise
    for n in made:
        n.SetAttribute("LiverStiffness.studyFolder", str(Path(folder).resolve()))
    return nodes, selection
