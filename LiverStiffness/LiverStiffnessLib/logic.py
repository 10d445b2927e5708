"""The LiverStiffness module's logic: plain Python over MRML, no Qt.

It turns the selected nodes into the core package's inputs (``ExamImages``), runs the core
(in this process, or as a background ``liverstiffness predict`` process the panel can cancel),
and turns the results into new nodes: attention volumes on the reference's geometry, a row in the
results table and, for a model trained on elastograms, the stiffness map (kPa, in the MRE colours)
with a table of its regional means. Input nodes are only read.

Any non-empty subset of T1w, T2w and DWI is an exam (a node None: not given; ``ExamNodes.left_out``:
given but not to be used, with why). The reference, whose grid and name the results take, is the
first used of T1w, T2w, DWI, as in the core (``preprocess.ExamImages.reference``).

Long module: ``LiverStiffnessLogic`` is the one entry both front ends (the panel and the web page)
call for inputs, runs, results, masks and follow-up, plus the background run it returns; the
helpers it calls live in the sibling modules (``mrml_convert``, ``followup_nodes``, ``map_display``).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from liverstiffness.errors import InputError
from liverstiffness.imageio import binarize_mask, dwi_from_volumes
from liverstiffness.input_checks import check_geometry, check_values
from liverstiffness.manifest import PatientFacts
from liverstiffness.montage import MRE_STYLE
from liverstiffness.ood import describe as describe_range
from liverstiffness.preprocess import ExamImages, check_exam
from liverstiffness.report import Report

from .followup_nodes import REPORT_ID_COLUMN, FollowUp, compare_sources, keep_report, stored_results
from .i18n import _
from .mrml_convert import labelmap_from_segment, n_components, sitk_from_volume, volume_from_sitk
from .nodes import LIVER_COLOR, LIVER_SEGMENT_NAME, SEQUENCE_LABELS, SEQUENCES, AutoMaskResult, ExamNodes, ResultNodes

RESULTS_TABLE_NAME = "LiverStiffness results"
ATTENTION_COLOR_NAME = "LiverStiffness attention"
TABLE_COLUMNS = ("time", "reference", "stiffness_kPa", "interval_low_kPa", "interval_high_kPa", "coverage", "category",
                 "model", "device", "mask_QA_flags", "input_range", "attention_node", "sequences", REPORT_ID_COLUMN)
# The maps both front ends offer, (kind, label): those that point at a planted signal in the
# project's pointing game (Testing/Python/test_learning.py: rollout and saliency), and GradCAM only
# with what that test measured. Saliency is one map per sequence (``map_key``).
MAP_KINDS = (("rollout", "Attention rollout"), ("saliency", "Saliency (gradient × input), per sequence"),
             ("gradcam", "GradCAM: did not point at a planted signal (see the note)"))
GRADCAM_CAVEAT = ("GradCAM did not point at the signal in the project's planted-signal test (0.65 times the "
                  "region's share, where rollout and saliency pointed at it): do not read it as where the model looked.")
DEFAULT_SALIENCY = "t2w"   # the sequence of the saliency map the pointing game measured
STIFFNESS_MAP_COLOR_NAME = "LiverStiffness MRE stiffness (kPa)"
REGION_COLUMNS = ("region", "mean_kPa")   # the stiffness map's regional table
WHOLE_LIVER = "whole liver"               # its first row: the map's mean over the liver


def map_key(kind: str, sequence: str | None = None) -> str:
    """The ``attention_maps`` key of map ``kind``: saliency is per sequence (``saliency_<seq>``,
    the T2w's when none is chosen); the others are one map for all sequences."""
    return f"saliency_{sequence or DEFAULT_SALIENCY}" if kind == "saliency" else kind


def map_window_max(arr) -> float:
    """Display window top for a times-uniform map: at least 2 (so a uniform map looks flat and
    dim), else its 99.5th percentile inside the crop, so one hot voxel does not wash it out."""
    a = np.asarray(arr)
    return max(2.0, float(np.percentile(a[a > 0], 99.5))) if np.any(a > 0) else 2.0


def missing_inputs(nodes: ExamNodes) -> str | None:
    """Why "Estimate stiffness" must stay disabled, or None when the inputs are complete: at least
    one of T1w, T2w and DWI (not left out), the DWI's b-values when it is used, and the mask."""
    if not nodes.sequences:
        if any(getattr(nodes, name) is not None for name in SEQUENCES):
            return _("Every selected sequence is left out: keep at least one of T1w, T2w and DWI.")
        return _("Select at least one of the T1w, T2w and DWI volumes.")
    if "dwi" in nodes.sequences and not nodes.dwi_b_values:
        return _("Enter the DWI b-value(s) in s/mm².")
    if nodes.mask_segmentation is None and nodes.mask_labelmap is None:
        return _("Select the liver mask (a segmentation and segment, or a labelmap).")
    if nodes.mask_segmentation is not None and not nodes.mask_segment_id:
        return _("Select the liver segment.")
    return None


# The patient facts typed beside the images, in the order of ``liverstiffness predict``'s flags;
# the blood tests (AST, ALT in U/L, platelets in 10⁹/L) travel as --ast, --alt, --platelets.
FACT_FLAGS = (("age", "--age"), ("sex", "--sex"), ("bmi", "--bmi"), ("pdff", "--pdff"),
              ("ast", "--ast"), ("alt", "--alt"), ("platelets", "--platelets"))


def facts_problem(facts: PatientFacts) -> str | None:
    """Why the typed patient facts cannot be used, in one line naming the field (the core's own
    range check, ``PatientFacts.validate``), or None when they can."""
    try:
        facts.validate("patient")
    except InputError as exc:
        return str(exc)
    return None


def fib4_text(facts: PatientFacts) -> str:
    """FIB-4, computed (``PatientFacts.fib4``: age × AST / (platelets × √ALT)), as both front ends
    show it read-only; empty unless age, AST, ALT and platelets are all given and plausible."""
    value = facts.fib4 if facts_problem(facts) is None else None
    return "" if value is None else _("FIB-4 {value:.2f} (computed from age, AST, ALT and platelets)").format(value=value)


def _dwi_volumes(nodes: ExamNodes) -> list[sitk.Image]:
    dwi = nodes.dwi
    if dwi.IsA("vtkMRMLSequenceNode"):
        return [sitk_from_volume(dwi.GetNthDataNode(i), f"dwi volume {i}") for i in range(dwi.GetNumberOfDataNodes())]
    k = n_components(dwi)
    if k > 1:
        return [sitk_from_volume(dwi, f"dwi component {i}", component=i) for i in range(k)]
    return [sitk_from_volume(dwi, "dwi")]


# Matplotlib's "jet" (the montage's colours, ``MRE_STYLE.cmap``) as (position, value) per channel:
# dark blue, blue, cyan, yellow, red, dark red.
JET = {"r": ((0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)),
       "g": ((0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)),
       "b": ((0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0))}


def jet(t: float) -> tuple[float, float, float]:
    """The colour (r, g, b in 0..1) of the elastograms' scale at ``t`` in [0, 1]."""
    t = min(1.0, max(0.0, float(t)))
    return tuple(float(np.interp(t, [p for p, _v in JET[c]], [v for _p, v in JET[c]])) for c in "rgb")


class LiverStiffnessLogic:
    def __init__(self, scene=None):
        self.scene = scene if scene is not None else slicer.mrmlScene

    # ------------------------------------------------------------------ inputs
    def exam_images(self, nodes: ExamNodes) -> ExamImages:
        """The selected nodes as core inputs; InputError (one line) for anything wrong, a patient
        fact (age, BMI, PDFF, AST, ALT, platelets) out of its range included. A sequence not
        selected or left out is None; the mask is exported onto the reference's grid."""
        reason = missing_inputs(nodes)
        if reason:
            raise InputError("inputs", reason)
        nodes.facts.validate("patient")   # a typed fact out of its range: one line naming it, before any reading
        used = nodes.sequences
        anatomy = {}
        for name in ("t1w", "t2w"):
            node = getattr(nodes, name)
            if name not in used:
                continue
            img = sitk_from_volume(node, name)
            where = f"{name} {node.GetName()}"   # the same checks as for files (input_checks.py)
            check_geometry(img, where)
            check_values(img, where)
            anatomy[name] = img
        dwi = (dwi_from_volumes(_dwi_volumes(nodes), nodes.dwi_b_values, f"dwi {nodes.dwi.GetName()}")
               if "dwi" in used else None)
        if nodes.mask_segmentation is not None:
            mask = labelmap_from_segment(nodes.mask_segmentation, nodes.mask_segment_id, nodes.reference_node, self.scene)
            mask_name = nodes.mask_segmentation.GetName()
        else:
            mask_name = nodes.mask_labelmap.GetName()
            label_img = sitk_from_volume(nodes.mask_labelmap, "liver mask")
            check_geometry(label_img, f"liver mask {mask_name}")
            mask = binarize_mask(label_img, nodes.mask_label, f"liver mask {mask_name}", allow_empty=True)
        if not sitk.GetArrayViewFromImage(mask).any():
            raise InputError(f"liver mask {mask_name}", "is empty")
        paths = {name: getattr(nodes, name).GetName() for name in used}
        left_out = {name: str(why).strip() for name, why in nodes.left_out.items()
                    if name in SEQUENCES and name not in used and str(why or "").strip()}
        images = ExamImages(anatomy.get("t1w"), anatomy.get("t2w"), dwi, mask, {**paths, "mask": mask_name},
                            left_out=left_out)
        check_exam(images)
        return images

    def load_study(self, folder, rules=None, overrides: dict | None = None):
        """A DICOM study folder → new T1w, T2w, DWI (and liver SEG) nodes chosen by the selection
        rules, as ``ExamNodes`` ready for ``estimate``; and the selection (``format_table()``)."""
        from .dicom_nodes import load_study_nodes

        return load_study_nodes(folder, self.scene, rules, overrides)

    # ------------------------------------------------------------------ running
    def estimate(self, nodes: ExamNodes, model_dir=None, device: str = "auto", output_dir=None,
                 on_stage=None, maps: str = "default") -> ResultNodes:
        """Run in this process (console, tests, batch scripts) and create the result nodes."""
        from liverstiffness.predict import PredictOptions, predict_images
        from liverstiffness.stiffness.ensemble import Ensemble

        images = self.exam_images(nodes)
        out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="liverstiffness-"))
        ens = Ensemble.load(model_dir, device)
        opts = PredictOptions(detail_maps=maps == "all", gradient_maps=maps != "none")
        predict_images(images, nodes.facts, ens, out, opts, on_stage)
        return self.load_results(out, nodes)

    def start_background(self, nodes: ExamNodes, model_dir=None, device: str = "auto", maps: str = "default",
                         work_root=None) -> BackgroundRun:
        """Write the converted inputs to a temporary folder (under ``work_root`` if given) and start
        ``liverstiffness predict`` there, so the application stays responsive and Cancel can stop it."""
        images = self.exam_images(nodes)
        work = Path(tempfile.mkdtemp(prefix="liverstiffness-", dir=work_root))
        (work / "inputs").mkdir()
        files = {name: work / "inputs" / f"{name}.nii.gz" for name in (*images.sequences, "mask")}
        try:
            for name in ("t1w", "t2w", "mask"):
                if name in files:
                    sitk.WriteImage(getattr(images, name), str(files[name]))
            if images.dwi is not None:
                dwi = images.dwi.images
                sitk.WriteImage(sitk.JoinSeries(dwi) if len(dwi) > 1 else dwi[0], str(files["dwi"]))
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        cmd = [python_executable(), "-m", "liverstiffness", "predict", "--stages", "--quiet"]
        for name in images.sequences:        # a sequence not given is left out of the command
            cmd += [f"--{name}", str(files[name])]
        if images.dwi is not None:
            cmd += ["--dwi-b", ",".join(f"{b:g}" for b in images.dwi.b_values)]
        for name, why in images.left_out.items():   # the report names the reason
            cmd += ["--leave-out", f"{name}:{why}"]
        cmd += ["--mask", str(files["mask"]), "--device", device, "--maps", maps, "--out", str(work / "result")]
        for name, flag in FACT_FLAGS:      # as typed on the command line: a fact not given is left out
            value = getattr(nodes.facts, name)
            if value is not None:
                cmd += [flag, str(value)]
        if model_dir:
            cmd += ["--model", str(model_dir)]
        return BackgroundRun(cmd, work, nodes, self)

    # ------------------------------------------------------------------ results
    def _overlay_color_table(self, name: str, colour):
        """The scene's colour table ``name`` for an overlay, made on first use: 256 colours
        ``colour(t)`` for t in [0, 1], transparent at 0 (where the map is not). Returns (node, made)."""
        existing = self.scene.GetFirstNodeByName(name)
        if existing is not None:
            return existing, False
        node = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
        node.SetTypeToUser()
        node.SetNumberOfColors(256)
        node.SetNamesInitialised(True)
        for i in range(256):
            node.SetColor(i, f"{i}", *colour(i / 255.0), 0.0 if i == 0 else 1.0)
        return node, True

    def attention_color_node(self):
        """A colour table for attention overlays: transparent at 0, then black-red-yellow-white."""
        return self._overlay_color_table(ATTENTION_COLOR_NAME, lambda t: (
            min(1.0, 3 * t), min(1.0, max(0.0, 3 * t - 1)), min(1.0, max(0.0, 3 * t - 2))))[0]

    def stiffness_map_color_node(self):
        """A colour table for stiffness maps as elastograms are shown: jet over the window (0–8
        kPa, ``MRE_STYLE``, as the montage), transparent at 0 (outside the liver)."""
        node, made = self._overlay_color_table(STIFFNESS_MAP_COLOR_NAME, jet)
        if made:
            lo, hi = MRE_STYLE.value_range
            node.SetDescription(_("MRE stiffness display: jet from {lo:g} to {hi:g} kPa (the volume's window), "
                                  "transparent at 0 (outside the liver)").format(lo=lo, hi=hi))
        return node

    def results_table(self):
        """The scene's results table; a column it lacks (a table saved by an older version) is added."""
        table = self.scene.GetFirstNodeByName(RESULTS_TABLE_NAME)
        if table is None:
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", RESULTS_TABLE_NAME)
        for col in TABLE_COLUMNS:
            if table.GetColumnIndex(col) < 0:
                arr = vtk.vtkDoubleArray() if col.endswith(("kPa", "coverage")) else vtk.vtkStringArray()
                arr.SetName(col)
                arr.SetNumberOfTuples(table.GetNumberOfRows())
                table.AddColumn(arr)
        return table

    def load_results(self, out_dir, nodes: ExamNodes) -> ResultNodes:
        """Attention NIfTIs → new volume nodes on the reference's geometry (the report's reference
        sequence: T1w when used, else T2w, else the DWI), named after it; the report → a table row.
        A stiffness map (a model trained on elastograms) → a volume node in kPa and a table of its
        regional means; without one both are None."""
        out_dir = Path(out_dir)
        report = Report.read(out_dir)
        color = self.attention_color_node()
        ref_name = (report.preprocessing or {}).get("reference_sequence") or nodes.reference_name or "t1w"
        like = nodes.volume_node(ref_name)
        if like is None:
            raise InputError("results", f"the {SEQUENCE_LABELS.get(ref_name, ref_name)} volume they are placed "
                                        "on is no longer selected")
        base = getattr(nodes, ref_name).GetName()
        attention = {}
        for kind, fname in report.outputs["attention_maps"].items():
            img = sitk.ReadImage(str(out_dir / fname))
            label = "attention" if kind == "rollout" else f"attention {kind}"
            node = volume_from_sitk(img, like, self.scene.GenerateUniqueName(f"{base} stiffness {label}"), self.scene)
            node.SetAttribute("LiverStiffness.mapKind", kind)
            node.SetAttribute("LiverStiffness.referenceSequence", ref_name)
            node.CreateDefaultDisplayNodes()
            disp = node.GetDisplayNode()
            disp.SetAndObserveColorNodeID(color.GetID())
            disp.AutoWindowLevelOff()
            disp.SetWindowLevelMinMax(0.0, map_window_max(sitk.GetArrayViewFromImage(img)))
            attention[kind] = node
        stiffness = (self._stiffness_map_volume(report, out_dir, like, base, ref_name)
                     if report.stiffness_map and report.outputs.get("stiffness_map") else None)
        table = self.results_table()
        row = table.AddEmptyRow()
        values = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "reference": base, "stiffness_kPa": report.stiffness_kpa,
                  "interval_low_kPa": report.interval_kpa[0], "interval_high_kPa": report.interval_kpa[1],
                  "coverage": report.interval_coverage, "category": report.category,
                  "model": f"{report.model['name']} {report.model['version']}", "device": report.device,
                  "mask_QA_flags": ";".join(f["code"] for f in report.qa_flags),
                  "input_range": describe_range(report.input_range or {}),
                  "attention_node": attention["rollout"].GetName(), "sequences": report.sequences_text}
        for col, value in values.items():
            table.SetCellText(row, table.GetColumnIndex(col), str(value))
        keep_report(table, row, report)   # kept with the row: any two rows can be compared (follow-up)
        regions = self.stiffness_regions_table(report, base) if stiffness is not None else None
        return ResultNodes(report, attention, table, row, out_dir, stiffness_map=stiffness, stiffness_regions=regions)

    # ------------------------------------------------------------------ stiffness map
    def _stiffness_map_volume(self, report: Report, out_dir: Path, like, base: str, ref_name: str):
        """stiffness_map.nii.gz (kPa, on the reference's grid) → a new volume node placed like
        ``like``, in the MRE colours with the window 0–8 kPa."""
        img = sitk.ReadImage(str(out_dir / report.outputs["stiffness_map"]))
        node = volume_from_sitk(img, like, self.scene.GenerateUniqueName(f"{base} stiffness map (kPa)"), self.scene)
        node.SetAttribute("LiverStiffness.mapKind", "stiffness_map")
        node.SetAttribute("LiverStiffness.referenceSequence", ref_name)
        node.SetDescription(report.stiffness_map.get("note", ""))
        units = slicer.vtkCodedEntry()
        units.SetValueSchemeMeaning("kPa", "UCUM", "kilopascal")
        node.SetVoxelValueUnits(units)
        node.CreateDefaultDisplayNodes()
        disp = node.GetDisplayNode()
        disp.SetAndObserveColorNodeID(self.stiffness_map_color_node().GetID())
        disp.AutoWindowLevelOff()
        disp.SetWindowLevelMinMax(*MRE_STYLE.value_range)   # above 8 kPa: the scale's top colour
        # Transparent outside the liver (0 there) by the threshold too, whatever the colour table;
        # drawn voxel by voxel, so the liver's edge is not blended with the 0 outside into a blue rim.
        disp.AutoThresholdOff()
        disp.SetThreshold(1e-6, 1e9)
        disp.ApplyThresholdOn()
        disp.SetInterpolate(False)
        return node

    def stiffness_regions_table(self, report: Report, base: str):
        """A new table of the stiffness map's means (kPa): the whole liver, then each region of the
        report (``regions_kpa``, by geometry). Its description and column title say it is a model
        estimate, not a measurement."""
        summary = report.stiffness_map
        table = self.scene.AddNewNodeByClass("vtkMRMLTableNode",
                                             self.scene.GenerateUniqueName(f"{base} stiffness map regions (kPa)"))
        region, kpa = vtk.vtkStringArray(), vtk.vtkDoubleArray()
        region.SetName(REGION_COLUMNS[0])
        kpa.SetName(REGION_COLUMNS[1])
        rows = ([(WHOLE_LIVER, summary["liver_mean_kpa"])] if summary.get("liver_mean_kpa") is not None else [])
        for name, value in [*rows, *summary.get("regions_kpa", {}).items()]:
            region.InsertNextValue(name)
            kpa.InsertNextValue(float(value))
        table.AddColumn(region)
        table.AddColumn(kpa)
        note = summary.get("note", "").rstrip(".")
        table.SetColumnTitle(REGION_COLUMNS[1], _("mean kPa (model estimate, not a measurement)"))
        table.SetColumnUnitLabel(REGION_COLUMNS[1], "kPa")
        table.SetColumnDescription(REGION_COLUMNS[1], note)
        table.SetColumnDescription(REGION_COLUMNS[0], summary.get("regions_by", ""))
        table.SetUseColumnTitleAsColumnHeader(True)
        table.SetDescription(_("Stiffness map: {note}. Regions by {by}.").format(note=note, by=summary.get("regions_by", "")))
        return table

    def show_stiffness_map(self, result: ResultNodes, background=None, opacity: float = MRE_STYLE.alpha):
        """The stiffness map as every slice view's foreground (over ``background``: kept when None),
        with its colour legend. Returns the legend node, or None where this Slicer cannot make one
        (``stiffness_map_legend``). InputError when the result has no map."""
        node = result.stiffness_map
        if node is None:
            raise InputError("stiffness map", _("this result has none: its model was not trained on elastograms "
                                                "(no map decoder)"))
        # As slicer.util.setSliceViewerLayers, on this logic's scene (the web page's is not slicer.mrmlScene).
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            view = self.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            if background is not None:
                view.SetBackgroundVolumeID(background.GetID())
            view.SetForegroundVolumeID(node.GetID())
            view.SetForegroundOpacity(opacity)
        return self.stiffness_map_legend(node)

    def stiffness_map_legend(self, node):
        """The colour legend (bar) of stiffness-map volume ``node``, made once, titled in kPa; None
        where this Slicer has no colour legends (then the window, 0–8 kPa, is the only scale)."""
        legend_class = getattr(slicer, "vtkMRMLColorLegendDisplayNode", None)
        add = getattr(getattr(slicer, "vtkSlicerColorLogic", None), "AddDefaultColorLegendDisplayNode", None)
        if legend_class is None or add is None:
            return None
        if not self.scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
            self.scene.RegisterNodeClass(legend_class())   # in the application the Colors module has done it
        legend = add(node)
        if legend is None:
            return None
        legend.SetTitleText(_("Stiffness (kPa), model estimate"))
        lo, hi = MRE_STYLE.value_range
        legend.SetNumberOfLabels(int(round(hi - lo)) // 2 + 1)   # 0, 2, 4, 6, 8 kPa
        legend.SetLabelFormat("%.0f")
        legend.SetVisibility(True)
        return legend

    @staticmethod
    def stiffness_map_text(report: Report, legend: bool = True) -> str:
        """One line for the panel under the stiffness map: what it is, its liver mean, and the scale
        when no colour legend could be drawn."""
        s = report.stiffness_map or {}
        if not s:
            return _("This model has no stiffness map (it was not trained on elastograms).")
        text = _("Stiffness map, kPa: {note}.").format(note=s.get("note", "").rstrip("."))
        if s.get("liver_mean_kpa") is not None:
            text += " " + _("Mean over the liver {kpa:.2f} kPa.").format(kpa=s["liver_mean_kpa"])
        if not legend:
            lo, hi = MRE_STYLE.value_range
            text += " " + _("Colour scale: blue {lo:g} kPa to red {hi:g} kPa (no colour legend in this Slicer).").format(
                lo=lo, hi=hi)
        return text

    # ------------------------------------------------------------------ follow-up
    def comparable_results(self) -> list[tuple[int, str]]:
        """The results table's rows that carry their report, as (row, label) for two choosers."""
        table = self.scene.GetFirstNodeByName(RESULTS_TABLE_NAME)
        return stored_results(table)

    def compare_results(self, before, after, compare_anyway: bool = False) -> FollowUp:
        """The earlier result against the later: each a results-table row (int), a report.json
        (or its folder) or a ``Report``. One line for the panel (``FollowUp.text``), the core's
        ``Comparison`` and its warnings; different models or cut-off tables are refused in one
        line unless ``compare_anyway``."""
        return compare_sources(before, after, self.scene.GetFirstNodeByName(RESULTS_TABLE_NAME), compare_anyway)

    @staticmethod
    def sequences_text(report: Report) -> str:
        """One line for the panel and the page: the sequences used, and each missing one with why."""
        return _("Sequences used: {text}").format(text=report.sequences_text)

    def map_node(self, result: ResultNodes, kind: str, inside_liver: bool = False):
        """The volume node showing map ``kind`` (or ``saliency``: see ``map_key``); with
        ``inside_liver`` a copy zeroed outside the liver mask (a new node, made once), same unit
        and window."""
        node = result.attention.get(map_key(kind)) or result.attention["rollout"]
        if not inside_liver:
            return node
        kind = node.GetAttribute("LiverStiffness.mapKind")
        if kind not in result.liver_only:
            liver = sitk.ReadImage(str(result.output_dir / result.report.outputs["liver_mask"]))
            img = sitk.ReadImage(str(result.output_dir / result.report.outputs["attention_maps"][kind]))
            img = sitk.Mask(img, sitk.Cast(liver > 0, sitk.sitkUInt8))
            copy = volume_from_sitk(img, node, self.scene.GenerateUniqueName(f"{node.GetName()} (liver only)"), self.scene)
            copy.SetAttribute("LiverStiffness.mapKind", kind)
            copy.CreateDefaultDisplayNodes()
            copy.GetDisplayNode().Copy(node.GetDisplayNode())
            result.liver_only[kind] = copy
        return result.liver_only[kind]

    @staticmethod
    def map_note(report: Report, kind: str) -> str:
        """One line on what map ``kind`` says: its unit, peak and concentration, or that it is
        near-uniform and shows nothing about where the model looked."""
        kind = map_key(kind)
        s = (report.attention or {}).get("maps", {}).get(kind)
        if not s:
            return ""
        caveat = " " + _(GRADCAM_CAVEAT) if kind == "gradcam" else ""
        if kind.startswith("saliency_"):
            seq = kind.split("_", 1)[1]
            label = {"t1w": "T1w", "t2w": "T2w"}.get(seq, seq.upper())
            used = "dwi" if seq == "adc" else seq
            if used not in report.sequences_used:   # its channels were zero: there is nothing to show
                return _("The {seq} was not used in this estimate ({why}): it has no saliency.").format(
                    seq=label, why=report.sequences_missing.get(used, "not given"))
            caveat = " " + _("Saliency of the {seq} only.").format(seq=label)
        if s.get("top10_share") is None:           # an all-zero map
            return _("This map is empty: it carries no information about where the model looked.") + caveat
        if not s.get("informative"):
            return _("This map is near-uniform (its top tenth holds {share:.0%} of it; 10% would be uniform): "
                     "it carries no information about where the model looked.").format(share=s["top10_share"]) + caveat
        return _("Unit: times the uniform share (1.0 = uniform). Peak {peak:.1f}×; its top tenth holds "
                 "{share:.0%}; mean inside the liver {liver:.2f}×.").format(
            peak=s["max_times_uniform"], share=s["top10_share"], liver=s.get("liver_mean_times_uniform", 0)) + caveat

    # ------------------------------------------------------------------ automatic mask
    def segment_liver(self, volume_node, model_dir=None, device: str = "auto", segmenter: str = "model") -> AutoMaskResult:
        """Segment the liver in ``volume_node`` (an axial T2w) into a new segmentation node with one
        segment, "liver", on the volume's geometry and under its parent transform, ready for
        Segment Editor. The volume is only read; the node carries the confidence as attributes."""
        from liverstiffness.segmentation.auto_mask import get_segmenter

        if volume_node is None:
            raise InputError("Segment liver", "select the T2w volume first (the liver model segments T2-weighted MRI)")
        image = sitk_from_volume(volume_node, "T2w")
        res = get_segmenter(segmenter, model_dir, device).segment(image, f"T2w {volume_node.GetName()}")
        return self.auto_mask_segmentation(volume_node, res)

    def auto_mask_segmentation(self, volume_node, res) -> AutoMaskResult:
        """The segmenter's result ``res`` (on ``volume_node``'s grid) as a new segmentation node;
        split from ``segment_liver`` so a front end can run the network off its main thread."""
        base = volume_node.GetName()
        label = volume_from_sitk(res.mask, volume_node, "__liverstiffness_tmp_auto_mask", self.scene,
                                 node_class="vtkMRMLLabelMapVolumeNode")
        seg = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(f"{base} liver (automatic)"))
        try:
            seg.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
            seg.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
            logic = slicer.vtkSlicerSegmentationsModuleLogic()
            logic.SetMRMLScene(self.scene)
            if not logic.ImportLabelmapToSegmentationNode(label, seg):
                raise InputError(f"Segment liver {base}", "the mask could not be imported into a segmentation")
        except BaseException:
            self.scene.RemoveNode(seg)  # no half-made node is left behind
            raise
        finally:
            self.scene.RemoveNode(label)
        segment_id = seg.GetSegmentation().GetNthSegmentID(0)
        segment = seg.GetSegmentation().GetSegment(segment_id)
        segment.SetName(LIVER_SEGMENT_NAME)
        segment.SetColor(*LIVER_COLOR)
        seg.CreateDefaultDisplayNodes()
        info = res.report()
        seg.SetAttribute("LiverStiffness.automaticMask", json.dumps(info))
        return AutoMaskResult(seg, segment_id, info)

    # ------------------------------------------------------------------ mask QA
    def check_mask(self, nodes: ExamNodes, thresholds=None):
        """Mask QA on the selected nodes (the mask need not be complete for the estimate)."""
        from liverstiffness.qa import run_qa

        return run_qa(self.exam_images(nodes), thresholds)

    @staticmethod
    def slice_position_ras(reference_node, k: int, position_lps=None) -> list[float]:
        """RAS point to jump to for a flag: its position, or the centre of slice ``k`` of the
        reference volume (``ExamNodes.reference_node``: the grid mask QA works on)."""
        if position_lps is not None:
            return [-position_lps[0], -position_lps[1], position_lps[2]]
        from .mrml_convert import ijk_to_world

        dims = reference_node.GetImageData().GetDimensions()
        ijk = np.array([(dims[0] - 1) / 2, (dims[1] - 1) / 2, k, 1.0])
        return (ijk_to_world(reference_node) @ ijk)[:3].tolist()

    @staticmethod
    def save_report(result: ResultNodes, folder) -> list[Path]:
        """Copy report.json, the montage and the maps: the same files the command line writes."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        copied = []
        for f in result.output_dir.iterdir():
            if f.is_file():
                copied.append(Path(shutil.copy2(f, folder / f.name)))
        return copied


def python_executable() -> str:
    """Slicer's Python (PythonSlicer) when in the application, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


class BackgroundRun:
    """A ``liverstiffness predict`` process: poll() for its stage, cancel() to stop it.

    Its output (stdout and stderr merged) is read on a thread (``process.ChildProcess``), so
    polling never blocks, on any platform; ``log`` keeps every line. Cancel stops the whole
    process tree (``PythonSlicer`` is a launcher with the real interpreter as its child). The
    converted inputs are removed as soon as the run ends; a failed or cancelled run removes its
    whole folder, and ``cleanup()`` removes the results once they are no longer shown.
    """

    STAGES = ("read", "qa", "preprocess", "model", "write")

    def __init__(self, cmd, work: Path, nodes: ExamNodes, logic: LiverStiffnessLogic):
        from .process import ChildProcess

        self.work, self.nodes, self.logic = Path(work), nodes, logic
        self.stage = "starting"
        self.log: list[str] = []
        self.state = "running"
        import liverstiffness

        # The core package ships inside the module folder: make it importable for the child too.
        core_parent = str(Path(liverstiffness.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8",
                   PYTHONPATH=os.pathsep.join(p for p in (core_parent, os.environ.get("PYTHONPATH", "")) if p))
        try:
            self.child = ChildProcess(cmd, env=env)
        except BaseException:
            self.cleanup()
            raise
        _LIVE_RUN_FOLDERS.add(self.work)

    def poll(self) -> str:
        """'running', 'done', 'failed' or 'cancelled'; updates ``stage`` and ``log``."""
        if self.state != "running":
            return self.state
        for line in self.child.new_lines():
            self.log.append(line)
            if line.startswith("STAGE "):
                self.stage = line.split()[1]
        code = self.child.poll()
        if code is None:
            return "running"
        self.log += self.child.new_lines()
        if self.child.killed:
            self.state = "cancelled"
        elif code == 0 and (self.work / "result" / "report.json").is_file():
            self.state = "done"
        else:
            self.state = "failed"
        if self.state == "done":
            shutil.rmtree(self.work / "inputs", ignore_errors=True)
        else:
            self.cleanup()  # nothing half-written is left behind
        return self.state

    @property
    def progress(self) -> float:
        return (self.STAGES.index(self.stage) + 0.5) / len(self.STAGES) if self.stage in self.STAGES else 0.0

    def error(self) -> str:
        return self.child.last_error("the estimate failed")

    def cancel(self) -> None:
        """Stop the run and everything it started; remove its folder."""
        if self.state == "running":
            self.child.kill_tree()
            self.state = "cancelled"
        self.cleanup()

    def result(self) -> ResultNodes:
        return self.logic.load_results(self.work / "result", self.nodes)

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        _LIVE_RUN_FOLDERS.discard(self.work)


_LIVE_RUN_FOLDERS: set[Path] = set()


@atexit.register
def _remove_run_folders() -> None:
    """Last resort when the application quits with runs still shown or running."""
    for folder in list(_LIVE_RUN_FOLDERS):
        shutil.rmtree(folder, ignore_errors=True)
