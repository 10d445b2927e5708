"""The series of an opened exam: read by the core's readers and shown as MRML volume nodes (a
DWI also as one vector node, a mask also as a labelmap, both made when first needed).

Reading (``read_exam``) runs on a worker thread and touches no MRML; everything else here runs on
the server's thread, in the session's scene.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
import slicer

from liverstiffness.errors import InputError
from LiverStiffnessLib.mrml_convert import new_volume_from_sitk

from . import exams
from .messages import read_problem

AUTO_MASK = "__auto__"   # the mask chooser's value for the mask made by "Segment liver"


@dataclass
class LoadedSeries:
    """A series read by the core's readers, and the volume node that shows it."""

    name: str
    role: str
    images: list            # sitk images: one, or one per DWI b-value
    b_values: tuple
    node: object            # scalar volume node (the last image: the highest b of a DWI)
    extra: dict = field(default_factory=dict)   # cached nodes: "dwi" (vector node), "label" (labelmap)


def _read_series(s: exams.Series) -> tuple[list, tuple]:
    """The images of one series through the core's readers (InputError names the series by its
    name, never its path on the server)."""
    try:
        return _read_images(s)
    except InputError as exc:
        raise InputError(s.name, read_problem(exc.problem)) from None


def _read_images(s: exams.Series) -> tuple[list, tuple]:
    from liverstiffness.imageio import _read_any, read_dwi

    if s.path.is_file() and s.path.stat().st_size == 0:
        raise InputError(s.name, "the file is empty (0 bytes)")
    if s.path.is_dir() and s.role == "dwi":
        d = read_dwi(s.path, what=s.name, fit_adc=False)
        return list(d.images), tuple(d.b_values)
    img = _read_any(s.path, s.name)
    if img.GetDimension() == 4:
        return [sitk.Cast(img[:, :, :, k], sitk.sitkFloat32) for k in range(img.GetSize()[3])], s.b_values
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(s.name, f"is not a 3-D or 4-D scalar image (size {img.GetSize()})")
    return [img], s.b_values


@dataclass
class ExamRead:
    loaded: list            # (Series, images, b-values) of each series that could be read
    facts: dict             # patient facts from a manifest, as text
    errors: list[str]       # one line per series that could not be read
    refused: dict[str, str] = field(default_factory=dict)   # role → why its series was refused


def read_exam(root: Path, folder: Path, label: str) -> ExamRead:
    """Every series of exam ``folder`` (``label``: what the page calls it); runs on a worker
    thread (no MRML)."""
    exam = exams.scan_exam(root, folder)
    out = ExamRead([], exam.facts, [])
    for s in exam.series:
        try:
            images, b = _read_series(s)
            out.loaded.append((s, images, b))
        except InputError as exc:
            out.errors.append(str(exc))
            if s.role:
                out.refused.setdefault(s.role, f"{s.name} was refused: {exc.problem}")
    if not exam.series:
        out.errors.append(f"{label}: no NIfTI, NRRD, MetaImage file or DICOM series found")
    return out


def add_series(scene, s: exams.Series, images: list, b_values: tuple) -> LoadedSeries:
    """A read series as a grey volume node in ``scene`` (its last image: the highest b of a DWI)."""
    node = new_volume_from_sitk(images[-1], s.name, scene)
    node.CreateDefaultDisplayNodes()
    disp = node.GetDisplayNode()
    disp.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    disp.AutoWindowLevelOn()
    return LoadedSeries(s.name, s.role, images, b_values, node)


def remove_series(scene, x: LoadedSeries) -> None:
    for node in (x.node, *x.extra.values()):
        scene.RemoveNode(node)


def chooser_items(series: dict[str, LoadedSeries]) -> list[dict]:
    """The sequence choosers' items: a series with several volumes says how many."""
    return [{"title": n + (f" ({len(x.images)} volumes)" if len(x.images) > 1 else ""), "value": n}
            for n, x in series.items()]


def dwi_node(scene, x: LoadedSeries):
    """The DWI as one node: a scalar volume, or a vector volume with a component per b-value."""
    if len(x.images) == 1:
        return x.node
    if "dwi" not in x.extra:
        import numpy as np

        arr = np.stack([sitk.GetArrayFromImage(im) for im in x.images], axis=-1)
        node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", f"{x.name} (all b-values)")
        slicer.util.updateVolumeFromArray(node, arr)
        import vtk
        m = vtk.vtkMatrix4x4()
        x.node.GetIJKToRASMatrix(m)
        node.SetIJKToRASMatrix(m)
        x.extra["dwi"] = node
    return x.extra["dwi"]


def label_node(scene, x: LoadedSeries):
    """A mask series as a labelmap node (made once, then kept with the series)."""
    if "label" not in x.extra:
        from liverstiffness.imageio import binarize_mask

        mask = binarize_mask(x.images[-1], None, x.name, allow_empty=True)
        node = new_volume_from_sitk(mask, f"{x.name} (liver)", scene, "vtkMRMLLabelMapVolumeNode")
        node.CreateDefaultDisplayNodes()
        x.extra["label"] = node
    return x.extra["label"]

