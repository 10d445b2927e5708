"""The LiverStiffness module's logic: plain Python over MRML, no Qt.

It turns the selected nodes into the core package's inputs (``ExamImages``), runs the core
(in this process, or as a background ``liverstiffness predict`` process the panel can cancel),
and turns the results into new nodes: attention volumes on the T1w geometry and a row in the
results table. Input nodes are only read.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from liverstiffness.errors import InputError
from liverstiffness.imageio import binarize_mask, dwi_from_volumes
from liverstiffness.input_checks import check_geometry, check_values
from liverstiffness.manifest import PatientFacts
from liverstiffness.ood import describe as describe_range
from liverstiffness.preprocess import ExamImages, check_exam

from .mrml_convert import labelmap_from_segment, n_components, sitk_from_volume, volume_from_sitk

RESULTS_TABLE_NAME = "LiverStiffness results"
ATTENTION_COLOR_NAME = "LiverStiffness attention"
TABLE_COLUMNS = ("time", "T1w", "stiffness_kPa", "interval_low_kPa", "interval_high_kPa", "coverage", "category",
                 "model", "device", "mask_QA_flags", "input_range", "attention_node")


@dataclass
class ExamNodes:
    """What the panel selected. The liver is a segmentation + segment, or a labelmap (+ label)."""

    t1w: object = None
    t2w: object = None
    dwi: object = None                   # scalar/multi-component volume node, or a sequence node
    dwi_b_values: tuple = ()             # s/mm², one per DWI volume/component
    mask_segmentation: object = None
    mask_segment_id: str = ""
    mask_labelmap: object = None
    mask_label: int | None = None
    facts: PatientFacts = field(default_factory=PatientFacts)


@dataclass
class ResultNodes:
    report: dict
    attention: dict                      # kind → volume node (on the T1w geometry)
    table: object
    row: int
    output_dir: Path


def missing_inputs(nodes: ExamNodes) -> str | None:
    """Why "Estimate stiffness" must stay disabled, or None when the inputs are complete."""
    for name in ("t1w", "t2w", "dwi"):
        if getattr(nodes, name) is None:
            return f"Select the {name.upper()} volume."
    if not nodes.dwi_b_values:
        return "Enter the DWI b-value(s) in s/mm²."
    if nodes.mask_segmentation is None and nodes.mask_labelmap is None:
        return "Select the liver mask (a segmentation and segment, or a labelmap)."
    if nodes.mask_segmentation is not None and not nodes.mask_segment_id:
        return "Select the liver segment."
    return None


def _dwi_volumes(nodes: ExamNodes) -> list[sitk.Image]:
    dwi = nodes.dwi
    if dwi.IsA("vtkMRMLSequenceNode"):
        return [sitk_from_volume(dwi.GetNthDataNode(i), f"dwi volume {i}") for i in range(dwi.GetNumberOfDataNodes())]
    k = n_components(dwi)
    if k > 1:
        return [sitk_from_volume(dwi, f"dwi component {i}", component=i) for i in range(k)]
    return [sitk_from_volume(dwi, "dwi")]


class LiverStiffnessLogic:
    def __init__(self, scene=None):
        self.scene = scene if scene is not None else slicer.mrmlScene

    # ------------------------------------------------------------------ inputs
    def exam_images(self, nodes: ExamNodes) -> ExamImages:
        """The selected nodes as core inputs; InputError (one line) for anything wrong."""
        reason = missing_inputs(nodes)
        if reason:
            raise InputError("inputs", reason)
        t1 = sitk_from_volume(nodes.t1w, "t1w")
        t2 = sitk_from_volume(nodes.t2w, "t2w")
        for img, what, node in ((t1, "t1w", nodes.t1w), (t2, "t2w", nodes.t2w)):
            where = f"{what} {node.GetName()}"   # the same checks as for files (input_checks.py)
            check_geometry(img, where)
            check_values(img, where)
        dwi = dwi_from_volumes(_dwi_volumes(nodes), nodes.dwi_b_values, f"dwi {nodes.dwi.GetName()}")
        if nodes.mask_segmentation is not None:
            mask = labelmap_from_segment(nodes.mask_segmentation, nodes.mask_segment_id, nodes.t1w, self.scene)
            mask_name = nodes.mask_segmentation.GetName()
        else:
            mask_name = nodes.mask_labelmap.GetName()
            label_img = sitk_from_volume(nodes.mask_labelmap, "liver mask")
            check_geometry(label_img, f"liver mask {mask_name}")
            mask = binarize_mask(label_img, nodes.mask_label, f"liver mask {mask_name}", allow_empty=True)
        if not sitk.GetArrayViewFromImage(mask).any():
            raise InputError(f"liver mask {mask_name}", "is empty")
        images = ExamImages(t1, t2, dwi, mask, {"t1w": nodes.t1w.GetName(), "t2w": nodes.t2w.GetName(),
                                                "dwi": nodes.dwi.GetName(), "mask": mask_name})
        check_exam(images)
        nodes.facts.validate("patient")
        return images

    # ------------------------------------------------------------------ running
    def estimate(self, nodes: ExamNodes, model_dir=None, device: str = "auto", output_dir=None,
                 on_stage=None, maps: str = "default") -> ResultNodes:
        """Run in this process (console, tests, batch scripts) and create the result nodes."""
        from liverstiffness.ensemble import Ensemble
        from liverstiffness.predict import PredictOptions, predict_images

        images = self.exam_images(nodes)
        out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="liverstiffness-"))
        ens = Ensemble.load(model_dir, device)
        opts = PredictOptions(detail_maps=maps == "all", gradient_maps=maps != "none")
        predict_images(images, nodes.facts, ens, out, opts, on_stage)
        return self.load_results(out, nodes)

    def start_background(self, nodes: ExamNodes, model_dir=None, device: str = "auto", maps: str = "default") -> "BackgroundRun":
        """Write the converted inputs to a temporary folder and start ``liverstiffness predict``
        there, so the application stays responsive and Cancel can stop it."""
        images = self.exam_images(nodes)
        work = Path(tempfile.mkdtemp(prefix="liverstiffness-"))
        files = {}
        for name, img in (("t1w", images.t1w), ("t2w", images.t2w), ("mask", images.mask)):
            files[name] = work / f"{name}.nii.gz"
            sitk.WriteImage(img, str(files[name]))
        files["dwi"] = work / "dwi.nii.gz"
        sitk.WriteImage(sitk.JoinSeries(images.dwi.images) if len(images.dwi.images) > 1 else images.dwi.images[0], str(files["dwi"]))
        cmd = [python_executable(), "-m", "liverstiffness", "predict", "--stages", "--quiet",
               "--t1w", str(files["t1w"]), "--t2w", str(files["t2w"]), "--dwi", str(files["dwi"]),
               "--dwi-b", ",".join(f"{b:g}" for b in images.dwi.b_values), "--mask", str(files["mask"]),
               "--device", device, "--maps", maps, "--out", str(work / "result")]
        f = nodes.facts
        for flag, value in (("--age", f.age), ("--sex", f.sex), ("--bmi", f.bmi), ("--pdff", f.pdff)):
            if value is not None:
                cmd += [flag, str(value)]
        if model_dir:
            cmd += ["--model", str(model_dir)]
        return BackgroundRun(cmd, work, nodes, self)

    # ------------------------------------------------------------------ results
    def attention_color_node(self):
        """A colour table for attention overlays: transparent at 0, then black-red-yellow-white."""
        existing = self.scene.GetFirstNodeByName(ATTENTION_COLOR_NAME)
        if existing is not None:
            return existing
        node = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", ATTENTION_COLOR_NAME)
        node.SetTypeToUser()
        node.SetNumberOfColors(256)
        node.SetNamesInitialised(True)
        for i in range(256):
            t = i / 255.0
            r, g, b = min(1.0, 3 * t), min(1.0, max(0.0, 3 * t - 1)), min(1.0, max(0.0, 3 * t - 2))
            node.SetColor(i, f"{i}", r, g, b, 0.0 if i == 0 else 1.0)
        return node

    def results_table(self):
        table = self.scene.GetFirstNodeByName(RESULTS_TABLE_NAME)
        if table is None:
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", RESULTS_TABLE_NAME)
            for col in TABLE_COLUMNS:
                arr = vtk.vtkDoubleArray() if col.endswith(("kPa", "coverage")) else vtk.vtkStringArray()
                arr.SetName(col)
                table.AddColumn(arr)
        return table

    def load_results(self, out_dir, nodes: ExamNodes) -> ResultNodes:
        """Attention NIfTIs → new volume nodes on the T1w geometry; the report → a table row."""
        out_dir = Path(out_dir)
        report = json.loads((out_dir / "report.json").read_text())
        color = self.attention_color_node()
        base = nodes.t1w.GetName()
        attention = {}
        for kind, fname in report["outputs"]["attention_maps"].items():
            img = sitk.ReadImage(str(out_dir / fname))
            label = "attention" if kind == "rollout" else f"attention {kind}"
            node = volume_from_sitk(img, nodes.t1w, self.scene.GenerateUniqueName(f"{base} stiffness {label}"), self.scene)
            node.SetAttribute("LiverStiffness.mapKind", kind)
            node.CreateDefaultDisplayNodes()
            disp = node.GetDisplayNode()
            disp.SetAndObserveColorNodeID(color.GetID())
            disp.AutoWindowLevelOff()
            disp.SetWindowLevelMinMax(0.0, 1.0)
            attention[kind] = node
        table = self.results_table()
        row = table.AddEmptyRow()
        values = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "T1w": base, "stiffness_kPa": report["stiffness_kpa"],
                  "interval_low_kPa": report["interval_kpa"][0], "interval_high_kPa": report["interval_kpa"][1],
                  "coverage": report["interval_coverage"], "category": report["category"],
                  "model": f"{report['model']['name']} {report['model']['version']}", "device": report["device"],
                  "mask_QA_flags": ";".join(f["code"] for f in (report.get("mask_qa") or {}).get("flags", [])),
                  "input_range": describe_range(report.get("input_range") or {}),
                  "attention_node": attention["rollout"].GetName()}
        for col, value in values.items():
            table.SetCellText(row, TABLE_COLUMNS.index(col), str(value))
        return ResultNodes(report, attention, table, row, out_dir)

    # ------------------------------------------------------------------ mask QA
    def check_mask(self, nodes: ExamNodes, thresholds=None):
        """Mask QA on the selected nodes (the mask need not be complete for the estimate)."""
        from liverstiffness.qa import run_qa

        return run_qa(self.exam_images(nodes), thresholds)

    @staticmethod
    def slice_position_ras(t1w_node, k: int, position_lps=None) -> list[float]:
        """RAS point to jump to for a flag: its position, or the centre of T1w slice ``k``."""
        if position_lps is not None:
            return [-position_lps[0], -position_lps[1], position_lps[2]]
        from .mrml_convert import ijk_to_world

        dims = t1w_node.GetImageData().GetDimensions()
        ijk = np.array([(dims[0] - 1) / 2, (dims[1] - 1) / 2, k, 1.0])
        return (ijk_to_world(t1w_node) @ ijk)[:3].tolist()

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
    """A ``liverstiffness predict`` process: poll() for its stage, cancel() to stop it."""

    STAGES = ("read", "qa", "preprocess", "model", "write")

    def __init__(self, cmd, work: Path, nodes: ExamNodes, logic: LiverStiffnessLogic):
        self.work, self.nodes, self.logic = work, nodes, logic
        self.stage = "starting"
        import liverstiffness

        # The core package ships inside the module folder: make it importable for the child too.
        core_parent = str(Path(liverstiffness.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(p for p in (core_parent, os.environ.get("PYTHONPATH", "")) if p))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
        os.set_blocking(self.proc.stdout.fileno(), False)

    def poll(self) -> str:
        """'running', 'done', 'failed' or 'cancelled'; updates ``stage``."""
        for line in iter(self.proc.stdout.readline, ""):
            if line.startswith("STAGE "):
                self.stage = line.split()[1]
        code = self.proc.poll()
        if code is None:
            return "running"
        if code < 0:
            return "cancelled"
        return "done" if code == 0 else "failed"

    @property
    def progress(self) -> float:
        return (self.STAGES.index(self.stage) + 0.5) / len(self.STAGES) if self.stage in self.STAGES else 0.0

    def error(self) -> str:
        lines = [l for l in (self.proc.stderr.read() or "").splitlines() if l.strip()]
        return lines[-1].removeprefix("error: ") if lines else "the estimate failed"

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.cleanup()

    def result(self) -> ResultNodes:
        return self.logic.load_results(self.work / "result", self.nodes)

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
