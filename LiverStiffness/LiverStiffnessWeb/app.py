"""The LiverStiffness page: one browser session, served by trame-slicer on Slicer's MRML.

The workflow is the Slicer panel's, through the same logic (``LiverStiffnessLib``): files are
read by the core's readers into MRML volume nodes, ``LiverStiffnessLogic`` checks the mask,
segments the liver, runs the estimate as a background ``liverstiffness predict`` process
(``BackgroundRun``: progress, stage, Cancel) and turns its results into nodes, which the slice
views show. Nothing here computes a stiffness, a flag or a map itself.

One process serves one session (trame-slicer keeps one scene per process); the launcher
(``launcher.py``) starts one per browser session with its own work folder, and removes it.
Run alone for development: ``python -m LiverStiffnessWeb.app --data DIR --work DIR --port P``.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
import slicer
from trame.app import TrameApp
from trame.widgets import client, html
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v3

from liverstiffness.errors import InputError
from liverstiffness.manifest import PatientFacts, parse_b_values
from liverstiffness.report import Report
from LiverStiffnessLib.logic import LiverStiffnessLogic
from LiverStiffnessLib.mrml_convert import new_volume_from_sitk
from LiverStiffnessLib.nodes import ExamNodes

from . import exams

MAP_KINDS = [{"title": "Attention rollout", "value": "rollout"}, {"title": "GradCAM (gradient)", "value": "gradcam"}]
MAP_SEQUENCES = [{"title": "All sequences", "value": ""}, {"title": "T1w", "value": "t1w"}, {"title": "T2w", "value": "t2w"},
                 {"title": "DWI", "value": "dwi"}, {"title": "ADC", "value": "adc"}]
BACKGROUNDS = [{"title": "T1w", "value": "t1w"}, {"title": "T2w", "value": "t2w"}, {"title": "DWI (highest b)", "value": "dwi"}]
# Colours of the attention colour table (LiverStiffnessLogic.attention_color_node): black, red, yellow, white.
LEGEND_GRADIENT = "linear-gradient(to right, #000 0%, #f00 33.3%, #ff0 66.7%, #fff 100%)"
BAND_COLOURS = ["#4caf50", "#cddc39", "#ffc107", "#ff7043", "#d32f2f"]
BAR_MAX_KPA = 8.0      # the MRE bar's right end
POLL_S = 0.25


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
    """The images of one series through the core's readers (InputError names the file)."""
    from liverstiffness.imageio import _read_any, read_dwi

    if s.path.is_dir() and s.role == "dwi":
        d = read_dwi(s.path, what=s.name, fit_adc=False)
        return list(d.images), tuple(d.b_values)
    img = _read_any(s.path, s.name)
    if img.GetDimension() == 4:
        return [sitk.Cast(img[:, :, :, k], sitk.sitkFloat32) for k in range(img.GetSize()[3])], s.b_values
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(s.name, f"is not a 3-D or 4-D scalar image (size {img.GetSize()})")
    return [img], s.b_values


def _read_exam(root: Path, folder: Path) -> tuple[list, dict, list]:
    """(series and images, facts from a manifest, errors); runs on a worker thread (no MRML)."""
    exam = exams.scan_exam(root, folder)
    loaded, errors = [], []
    for s in exam.series:
        try:
            images, b = _read_series(s)
            loaded.append((s, images, b))
        except InputError as exc:
            errors.append(str(exc))
    if not exam.series:
        errors.append(f"{folder.name}: no NIfTI, NRRD, MetaImage file or DICOM series found")
    return loaded, exam.facts, errors


class LiverStiffnessWebApp(TrameApp):
    def __init__(self, server=None, data: Path | None = None, model: str | None = None, work: Path | None = None,
                 device: str = "auto", max_upload_mb: float = 512):
        super().__init__(server)
        self.data = Path(data).resolve() if data else None
        self.model = model
        self.work = Path(work) if work else Path(tempfile.mkdtemp(prefix="liverstiffness-web-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.max_upload = int(max_upload_mb * 1e6)
        self.series: dict[str, LoadedSeries] = {}
        self.run = None              # BackgroundRun in flight
        self.finished_run = None     # the run whose result is shown (its folder holds the maps)
        self.result = None           # ResultNodes
        self.qa = None
        self.auto_mask = None        # AutoMaskResult of "Segment liver"
        self._uploads = 0

        self.sapp = SlicerApp()
        slicer.mrmlScene = self.sapp.scene   # slicer.util helpers look the scene up here
        self.logic = LiverStiffnessLogic(self.sapp.scene)
        register_rca_factories(self.sapp.view_manager, self.server)
        self.layout_manager = LayoutManager(self.sapp.scene, self.sapp.view_manager, self.server)
        self.layout_manager.register_layout("three", Layout(LayoutDirection.Horizontal, [
            ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view(), ViewLayoutDefinition.sagittal_view()]))
        self.layout_manager.set_layout("three")
        self._init_state()
        self._build_ui()
        self.state.change("opacity", "map_kind", "map_seq", "liver_only", "background")(self._on_display_change)
        self.state.change("t1w", "t2w", "dwi", "mask", "dwi_b")(self._on_inputs_change)
        self.server.controller.on_server_ready.add(self._on_ready)

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        s = self.state
        s.trame__title = "LiverStiffness"
        s.exams = [{"title": e, "value": e} for e in exams.list_exams(self.data)] if self.data else []
        s.data_label = str(self.data) if self.data else "(no --data folder: upload files)"
        s.exam = None
        s.series_items = []
        s.t1w = s.t2w = s.dwi = s.mask = None
        s.dwi_b = ""
        s.age = s.bmi = s.pdff = ""
        s.sex = None
        s.error = ""
        s.status = "Choose an exam, or upload its files."
        s.busy = ""
        s.missing = "Choose an exam."
        s.max_upload_mb = self.max_upload / 1e6
        s.model_summary = {}
        s.device_text = "checking…"
        s.flags = []
        s.qa_text = ""
        s.running = False
        s.progress = 0
        s.stage = ""
        s.result = None
        s.map_kind, s.map_seq, s.opacity, s.liver_only, s.background = "rollout", "", 0.5, False, "t1w"
        s.map_note = ""
        s.legend_max = 2.0
        s.applied_opacity = None
        s.slice_positions = ""
        s.auto_mask_text = ""

    def _on_ready(self, **_):
        asyncio.ensure_future(self._describe_model_and_device())

    async def _describe_model_and_device(self) -> None:
        def describe():
            from liverstiffness.stiffness.checkpoint import DEMO_MODEL_DIR, read_meta

            folder = Path(self.model) if self.model else DEMO_MODEL_DIR
            meta = read_meta(folder)
            cv = ((meta.metrics or {}).get("cross_validation") or {}).get("transformer") or {}
            summary = {"name": meta.name, "version": meta.version, "folds": len(meta.folds),
                       "exams": (meta.trained_on or {}).get("n_exams"), "r": cv.get("pearson_r"), "mae": cv.get("mae_kpa"),
                       "intended_use": meta.intended_use, "synthetic": bool(meta.synthetic)}
            return summary

        def device():
            from liverstiffness.devices import resolve_device

            if resolve_device(self.device).type == "cuda":
                import torch
                return f"CUDA GPU: {torch.cuda.get_device_name(0)}"
            return "CPU (no CUDA GPU found)" if self.device == "auto" else "CPU"

        try:
            summary = await asyncio.to_thread(describe)
        except InputError as exc:
            summary = {"error": f"The model cannot be used: {exc}"}
        try:
            text = await asyncio.to_thread(device)
        except Exception as exc:  # noqa: BLE001 - shown, not fatal: the estimate reports its own device
            text = f"device unknown ({exc})"
        with self.state:
            self.state.model_summary = summary
            self.state.device_text = text

    # ------------------------------------------------------------------ exams
    async def load_exam(self, exam=None):
        """Open an exam folder under --data (the chooser's value, or ``exam``)."""
        rel = exam if exam is not None else self.state.exam
        if self.data is None:
            return self._error("exam: this server was started without --data; upload files instead")
        try:
            folder = exams.resolve_inside(self.data, rel)
            if not folder.is_dir():
                raise InputError(f"exam {rel}", "is not a folder")
        except InputError as exc:
            return self._error(str(exc))
        await self._open_folder(folder, rel)

    async def upload(self, files):
        """Files from the browser: into this session's folder, then opened as an exam."""
        self._uploads += 1
        dest = self.work / "uploads" / f"{self._uploads:03d}"
        try:
            exams.save_uploads(files or [], dest, self.max_upload)
            exams.group_dicom_uploads(dest)
        except InputError as exc:
            return self._error(str(exc))
        await self._open_folder(dest, f"upload {self._uploads}", uploaded=True)

    async def _open_folder(self, folder: Path, label: str, uploaded: bool = False) -> None:
        if self.run is not None:
            return self._error("An estimate is running: cancel it before opening another exam.")
        with self.state:
            self.state.busy = f"Reading {label}…"
            self.state.error = ""
        try:
            loaded, facts, errors = await asyncio.to_thread(_read_exam, folder if uploaded else self.data, folder)
        except InputError as exc:
            loaded, facts, errors = [], {}, [str(exc)]
        finally:
            self.state.busy = ""
        if uploaded and not loaded:
            shutil.rmtree(folder, ignore_errors=True)  # nothing usable: do not keep it
        if not loaded:
            with self.state:
                self.state.error = "; ".join(errors) or f"{label}: nothing could be read"
            return
        self._clear_exam()
        for s, images, b in loaded:
            node = new_volume_from_sitk(images[-1], s.name, self.sapp.scene)
            node.CreateDefaultDisplayNodes()
            disp = node.GetDisplayNode()
            disp.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
            disp.AutoWindowLevelOn()
            self.series[s.name] = LoadedSeries(s.name, s.role, images, b, node)
        with self.state:
            st = self.state
            st.series_items = [{"title": n + (f" ({len(x.images)} volumes)" if len(x.images) > 1 else ""), "value": n}
                               for n, x in self.series.items()]
            for role in exams.ROLES:
                st[role] = next((x.name for x in self.series.values() if x.role == role), None)
            dwi = self.series.get(st.dwi)
            st.dwi_b = ",".join(f"{b:g}" for b in dwi.b_values) if dwi and dwi.b_values else ""
            st.age, st.bmi, st.pdff = facts.get("age", ""), facts.get("bmi", ""), facts.get("pdff", "")
            st.sex = facts.get("sex") or None
            st.error = "; ".join(errors)
            st.status = f"Opened {label}: {len(self.series)} series. Check the assignment, then Check mask."
        self._show_inputs()

    def _clear_exam(self) -> None:
        self._drop_result()
        self.qa = None
        if self.auto_mask is not None:
            self.sapp.scene.RemoveNode(self.auto_mask.segmentation)
            self.auto_mask = None
        for x in self.series.values():
            for node in (x.node, *x.extra.values()):
                self.sapp.scene.RemoveNode(node)
        self.series = {}
        with self.state:
            self.state.flags, self.state.qa_text, self.state.auto_mask_text = [], "", ""

    # ------------------------------------------------------------------ inputs → ExamNodes
    def _facts(self) -> PatientFacts:
        s = self.state

        def num(v, what):
            if v in (None, ""):
                return None
            try:
                return float(v)
            except (TypeError, ValueError):
                raise InputError(what, f"{v!r} is not a number") from None

        return PatientFacts(num(s.age, "age"), s.sex or None, num(s.bmi, "BMI"), num(s.pdff, "PDFF")).validate("patient")

    def _dwi_node(self, x: LoadedSeries):
        """The DWI as one node: a scalar volume, or a vector volume with a component per b-value."""
        if len(x.images) == 1:
            return x.node
        if "dwi" not in x.extra:
            import numpy as np

            arr = np.stack([sitk.GetArrayFromImage(im) for im in x.images], axis=-1)
            node = self.sapp.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", f"{x.name} (all b-values)")
            slicer.util.updateVolumeFromArray(node, arr)
            import vtk
            m = vtk.vtkMatrix4x4()
            x.node.GetIJKToRASMatrix(m)
            node.SetIJKToRASMatrix(m)
            x.extra["dwi"] = node
        return x.extra["dwi"]

    def _label_node(self, x: LoadedSeries):
        if "label" not in x.extra:
            from liverstiffness.imageio import binarize_mask

            mask = binarize_mask(x.images[-1], None, x.name, allow_empty=True)
            node = new_volume_from_sitk(mask, f"{x.name} (liver)", self.sapp.scene, "vtkMRMLLabelMapVolumeNode")
            node.CreateDefaultDisplayNodes()
            x.extra["label"] = node
        return x.extra["label"]

    def exam_nodes(self) -> ExamNodes:
        s = self.state
        pick = {r: self.series.get(s[r]) if s[r] else None for r in exams.ROLES}
        try:
            b = parse_b_values(s.dwi_b, "DWI b-values") if (s.dwi_b or "").strip() else ()
        except InputError:
            b = ()
        nodes = ExamNodes(t1w=pick["t1w"] and pick["t1w"].node, t2w=pick["t2w"] and pick["t2w"].node,
                          dwi=pick["dwi"] and self._dwi_node(pick["dwi"]), dwi_b_values=b)
        if s.mask == "__auto__" and self.auto_mask is not None:
            nodes.mask_segmentation, nodes.mask_segment_id = self.auto_mask.segmentation, self.auto_mask.segment_id
        elif pick["mask"] is not None:
            nodes.mask_labelmap = self._label_node(pick["mask"])
        return nodes

    def _on_inputs_change(self, **_):
        from LiverStiffnessLib.logic import missing_inputs

        if not self.series:
            self.state.missing = "Choose an exam."
            return
        nodes = self.exam_nodes()
        if (self.state.dwi_b or "").strip():
            try:
                parse_b_values(self.state.dwi_b, "DWI b-values")
            except InputError as exc:
                self.state.missing = str(exc)
                return
        dwi = self.series.get(self.state.dwi)
        if dwi and nodes.dwi_b_values and len(nodes.dwi_b_values) != len(dwi.images):
            self.state.missing = f"The DWI has {len(dwi.images)} volume(s): give {len(dwi.images)} b-value(s)."
            return
        self.state.missing = missing_inputs(nodes) or ""
        self._show_inputs()

    # ------------------------------------------------------------------ display
    def _slice_views(self):
        return self.sapp.view_manager.get_slice_views()

    def _background_node(self):
        key = self.state.background or "t1w"
        x = self.series.get(self.state[key]) if self.state[key] else None
        return x.node if x else None

    def _show_inputs(self) -> None:
        """Background: the chosen sequence; the liver mask as an outline; no overlay until a result."""
        if self.result is not None:
            return self._show_overlay()
        bg = self._background_node()
        dm = self.sapp.display_manager
        dm.show_volume_in_slice_background(bg)
        dm.show_volume_in_slice_foreground(None)
        self._show_mask_outline()
        dm.reset_views()
        self._report_slices()

    def _show_mask_outline(self) -> None:
        s = self.state
        label = None
        if s.mask and s.mask != "__auto__" and s.mask in self.series:
            label = self._label_node(self.series[s.mask])
        for view in self._slice_views():
            view._logic.GetSliceCompositeNode().SetLabelVolumeID(label.GetID() if label else None)
            view._logic.GetSliceNode().SetUseLabelOutline(True)
            view.schedule_render()
        if self.auto_mask is not None:
            disp = self.auto_mask.segmentation.GetDisplayNode()
            disp.SetVisibility(s.mask == "__auto__")
            disp.SetOpacity2DFill(0.0)
            disp.SetOpacity2DOutline(1.0)

    def _show_overlay(self) -> None:
        s = self.state
        key = f"saliency_{s.map_seq}" if s.map_seq else s.map_kind
        if key not in self.result.attention:
            key = s.map_kind if s.map_kind in self.result.attention else "rollout"
        node = self.logic.map_node(self.result, key, inside_liver=bool(s.liver_only))
        kind = node.GetAttribute("LiverStiffness.mapKind")
        disp = node.GetDisplayNode()
        dm = self.sapp.display_manager
        dm.show_volume_in_slice_background(self._background_node())
        dm.show_volume_in_slice_foreground(node)
        for view in self._slice_views():
            view.set_foreground_opacity(float(s.opacity))
        self._show_mask_outline()
        with self.state:
            s.map_note = self.logic.map_note(self.result.report, kind)
            s.legend_max = round(disp.GetWindowLevelMax(), 2)
            s.applied_opacity = round(self._slice_views()[0].get_foreground_opacity(), 2)

    def _on_display_change(self, **_):
        if self.result is not None:
            self._show_overlay()
        elif self.series:
            self._show_inputs()

    def _report_slices(self) -> None:
        """Where the slice views are (mm), shown under them and read by the tests."""
        parts = []
        for view in self._slice_views():
            node = view._logic.GetSliceNode()
            parts.append(f"{node.GetOrientation()} {node.GetSliceOffset():.1f} mm")
        with self.state:
            self.state.slice_positions = " · ".join(parts)

    def jump_to_flag(self, index):
        if self.qa is None or index is None or not (0 <= int(index) < len(self.qa.flags)):
            return
        flag = self.qa.flags[int(index)]
        pos = flag.positions_mm[0] if flag.positions_mm else None
        k = flag.slices[len(flag.slices) // 2] if flag.slices else 0
        t1 = self.series.get(self.state.t1w)
        if t1 is None:
            return
        r, a, s = self.logic.slice_position_ras(t1.node, k, pos)
        for view in self._slice_views():
            view._logic.GetSliceNode().JumpSliceByCentering(r, a, s)
            view.schedule_render()
        self._report_slices()
        with self.state:
            self.state.status = f"Showing {flag.code} at R {r:.0f} A {a:.0f} S {s:.0f} mm."

    # ------------------------------------------------------------------ mask
    async def check_mask(self):
        from liverstiffness.qa import run_qa

        try:
            images = self.logic.exam_images(self.exam_nodes())
        except InputError as exc:
            return self._error(str(exc))
        with self.state:
            self.state.busy, self.state.error, self.state.flags, self.state.qa_text = "Checking the mask…", "", [], ""
        try:
            self.qa = await asyncio.to_thread(run_qa, images)
        except InputError as exc:
            return self._error(str(exc))
        finally:
            self.state.busy = ""
        with self.state:
            self.state.flags = [{"i": i, "severity": f.severity, "code": f.code, "message": f.message}
                                for i, f in enumerate(self.qa.flags)]
            m = self.qa.measurements
            self.state.qa_text = (f"Mask OK: {m['volume_ml']:.0f} mL, one piece, no flag." if not self.qa.flags
                                  else f"{len(self.qa.flags)} flag(s); click one to see where it shows.")

    async def segment_liver(self):
        t2 = self.series.get(self.state.t2w)
        if t2 is None:
            return self._error("Segment liver: pick the T2w first (the liver model segments T2-weighted MRI)")
        with self.state:
            self.state.busy, self.state.error = "Segmenting the liver on the T2w…", ""
        try:
            from liverstiffness.segmentation.auto_mask import confidence_text, get_segmenter
            from LiverStiffnessLib.mrml_convert import sitk_from_volume

            image = sitk_from_volume(t2.node, "T2w")
            res = await asyncio.to_thread(lambda: get_segmenter("model", None, self.device).segment(image, f"T2w {t2.name}"))
            result = self.logic.auto_mask_segmentation(t2.node, res)
        except InputError as exc:
            return self._error(str(exc))
        finally:
            self.state.busy = ""
        if self.auto_mask is not None:
            self.sapp.scene.RemoveNode(self.auto_mask.segmentation)
        self.auto_mask = result
        c = result.info["confidence"]
        with self.state:
            items = [i for i in self.state.series_items if i["value"] != "__auto__"]
            self.state.series_items = [*items, {"title": "Automatic liver mask (Segment liver)", "value": "__auto__"}]
            self.state.mask = "__auto__"
            self.state.auto_mask_text = (f"Automatic liver mask: {result.info['volume_ml']:.0f} mL, {confidence_text(c)}"
                                         + ("; LOW CONFIDENCE" if c.get("low_confidence") else "")
                                         + ". Check it (Check mask) before estimating.")
        self._on_inputs_change()

    # ------------------------------------------------------------------ estimate
    async def estimate(self):
        if self.run is not None:
            return
        try:
            nodes = self.exam_nodes()
            nodes.facts = self._facts()
            run = self.logic.start_background(nodes, self.model, self.device, work_root=self.work)
        except InputError as exc:
            return self._error(str(exc))
        self.run = run
        with self.state:
            self.state.running, self.state.progress, self.state.stage, self.state.error = True, 0, "starting", ""
            self.state.status = "Estimating…"
        asyncio.ensure_future(self._poll(run))

    async def _poll(self, run) -> None:
        while True:
            state = run.poll()
            if self.run is not run:  # cancelled meanwhile
                return
            with self.state:
                self.state.progress = round(100 * run.progress)
                self.state.stage = run.stage
            if state != "running":
                break
            await asyncio.sleep(POLL_S)
        self.run = None
        with self.state:
            self.state.running = False
            if state == "done":
                try:
                    self._drop_result()
                    self.finished_run, self.result = run, run.result()
                    self.state.result = self._result_card(self.result.report)
                    self.state.status = "Done."
                except Exception as exc:  # noqa: BLE001 - shown as one line; the run's folder goes
                    run.cleanup()
                    self.state.error = f"the results could not be loaded: {exc}"
            else:
                self.state.error = run.error()
                self.state.status = "The estimate failed."
        if self.result is not None:
            self._show_overlay()

    def cancel(self):
        run, self.run = self.run, None
        if run is None:
            return
        run.cancel()  # the whole process tree; its folder is removed
        with self.state:
            self.state.running, self.state.progress, self.state.stage = False, 0, ""
            self.state.status = "Cancelled: nothing was kept."

    def _drop_result(self) -> None:
        if self.result is not None:
            for node in (*self.result.attention.values(), *self.result.liver_only.values()):
                self.sapp.scene.RemoveNode(node)
        self.result = None
        if self.finished_run is not None:
            self.finished_run.cleanup()
            self.finished_run = None
        with self.state:
            self.state.result = None
            self.state.map_note = ""
        self.sapp.display_manager.show_volume_in_slice_foreground(None)

    @staticmethod
    def _result_card(r: Report) -> dict:
        lo, hi = r.interval_kpa
        bands = []
        for i, b in enumerate(r.mre_bands):
            top = b["high_kpa"] if b["high_kpa"] is not None else BAR_MAX_KPA
            width = 100 * (min(top, BAR_MAX_KPA) - b["low_kpa"]) / BAR_MAX_KPA
            bands.append({"label": b["label"], "low": b["low_kpa"], "width": width,
                          "colour": BAND_COLOURS[i % len(BAND_COLOURS)]})
        pos = lambda v: max(0.0, min(100.0, 100 * v / BAR_MAX_KPA))  # noqa: E731
        folds = r.fold_predictions_kpa or []
        return {"kpa": f"{r.stiffness_kpa:.2f}", "interval": f"{lo:.2f}–{hi:.2f}", "coverage": f"{r.interval_coverage:.0%}",
                "category": r.category, "bands": bands, "marker": pos(r.stiffness_kpa), "lo": pos(lo), "hi": pos(hi),
                "folds": ", ".join(f"{v:.2f}" for v in folds),
                "spread": f"{min(folds):.2f}–{max(folds):.2f}" if folds else "",
                "warnings": r.warnings or [],
                "synthetic": r.synthetic_model, "device": r.device,
                "mask": (r.mask or {}).get("source", "given")}

    # ------------------------------------------------------------------ downloads
    def _out(self) -> Path | None:
        return self.result.output_dir if self.result is not None else None

    def download_json(self):
        out = self._out()
        return self.server.protocol.addAttachment((out / "report.json").read_bytes()) if out else None

    def download_html(self):
        """The same one-page report the command line writes (report_page.py), not a second one."""
        out = self._out()
        return self.server.protocol.addAttachment((out / self.result.report.outputs["report_page"]).read_bytes()) \
            if out else None

    def download_maps(self):
        out = self._out()
        if not out:
            return None
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.iterdir()):
                if f.is_file():
                    z.write(f, f.name)
        return self.server.protocol.addAttachment(buf.getvalue())

    # ------------------------------------------------------------------ misc
    def _error(self, text: str) -> None:
        with self.state:
            self.state.error = text
            self.state.busy = ""

    def shutdown(self) -> None:
        """End of the session: stop a run, remove every file the session made."""
        if self.run is not None:
            self.run.cancel()
        if self.finished_run is not None:
            self.finished_run.cleanup()
        shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ page
    def _build_ui(self) -> None:
        ctrl = self.server.controller
        with SinglePageWithDrawerLayout(self.server, full_height=True) as ui:
            ui.title.set_text("LiverStiffness")
            ui.drawer.width = 430
            with ui.toolbar:
                v3.VSpacer()
                v3.VChip("{{ device_text }}", prepend_icon="mdi-chip", size="small", classes="mr-2", id="device")
                v3.VChip("Demo model: synthetic data, not for clinical use", v_if="model_summary.synthetic",
                         color="warning", size="small", classes="mr-2")
            with ui.drawer:
                with html.Div(classes="pa-3", style="overflow-y: auto;"):
                    self._exam_card(ctrl)
                    self._inputs_card(ctrl)
                    self._run_card(ctrl)
                    self._result_card_ui(ctrl)
                    self._display_card()
                    self._model_card()
            with ui.content:
                with html.Div(style="position: relative; height: calc(100vh - 64px); display: flex; flex-direction: column;"):
                    v3.VAlert("{{ error }}", v_if="error", type="error", density="compact", closable=True, id="error",
                              classes="ma-1", click_close="error = ''")
                    v3.VProgressLinear(v_if="busy", indeterminate=True, color="primary")
                    html.Div("{{ busy || status }}", classes="text-caption px-2", id="status")
                    with html.Div(style="flex: 1 1 auto; min-height: 300px;"):
                        self.layout_manager.initialize_layout_grid(ui)
                    html.Div("{{ slice_positions }}", classes="text-caption px-2", id="slice-positions")
            client.Style(".ls-band { height: 18px; display: inline-block; } .ls-bar { position: relative; white-space: nowrap; }")
        self.ui = ui

    def _exam_card(self, ctrl) -> None:
        with v3.VCard(title="Exam", density="compact", classes="mb-2", variant="outlined"):
            with v3.VCardText():
                html.Div("Data folder: {{ data_label }}", classes="text-caption mb-1")
                with html.Div(classes="d-flex align-center"):
                    v3.VSelect(v_model=("exam", None), items=("exams", []), label="Exam", density="compact", hide_details=True,
                               id="exam-select", classes="ls-exam-select")
                    # The chooser's value travels with the click (a state change and a click sent together
                    # may reach the server in either order).
                    v3.VBtn("Open", click=(self.load_exam, "[exam]"), disabled=("!exam || running",), classes="ml-2",
                            id="open-exam")
                v3.VFileInput(
                    label="…or upload the exam's files (NIfTI, NRRD, MHA, DICOM)", multiple=True, density="compact",
                    hide_details=True, classes="mt-2", id="upload", prepend_icon="mdi-upload",
                    # The size limit is checked here first (nothing is sent) and again on the server.
                    change=("($event.target.files && $event.target.files.length) ? ("
                            "Array.from($event.target.files).reduce((a, f) => a + f.size, 0) > max_upload_mb * 1e6"
                            " ? (error = 'upload: ' + (Array.from($event.target.files).reduce((a, f) => a + f.size, 0) / 1e6)"
                            ".toFixed(1) + ' MB is over the limit of ' + max_upload_mb.toFixed(0) + ' MB')"
                            f" : trigger('{ctrl.trigger_name(self.upload)}', [Array.from($event.target.files)])) : null"),
                )

    def _inputs_card(self, ctrl) -> None:
        with v3.VCard(title="Sequences and patient", density="compact", classes="mb-2", variant="outlined",
                      v_if="series_items.length"):
            with v3.VCardText():
                for role, label in (("t1w", "T1w"), ("t2w", "T2w"), ("dwi", "DWI"), ("mask", "Liver mask")):
                    v3.VSelect(v_model=(role, None), items=("series_items", []), label=label, density="compact", clearable=True,
                               hide_details=True, classes=f"mb-1 ls-pick-{role}", id=f"pick-{role}")
                v3.VTextField(v_model=("dwi_b", ""), label="DWI b-values (s/mm², in volume order)", density="compact",
                              hide_details=True, classes="mb-1", id="dwi-b")
                v3.VBtn("Segment liver", click=self.segment_liver, disabled=("!t2w || running || !!busy",), size="small",
                        prepend_icon="mdi-auto-fix", id="segment-liver")
                html.Div("{{ auto_mask_text }}", v_if="auto_mask_text", classes="text-caption mt-1", id="auto-mask-text")
                with v3.VRow(dense=True, classes="mt-2"):
                    with v3.VCol(cols=3):
                        v3.VTextField(v_model=("age", ""), label="Age (y)", density="compact", hide_details=True, id="age")
                    with v3.VCol(cols=3):
                        v3.VSelect(v_model=("sex", None), items=("sex_items", ["F", "M"]), label="Sex", density="compact",
                                   clearable=True, hide_details=True, id="sex")
                    with v3.VCol(cols=3):
                        v3.VTextField(v_model=("bmi", ""), label="BMI", density="compact", hide_details=True, id="bmi")
                    with v3.VCol(cols=3):
                        v3.VTextField(v_model=("pdff", ""), label="PDFF %", density="compact", hide_details=True, id="pdff")

    def _run_card(self, ctrl) -> None:
        with v3.VCard(title="Check and estimate", density="compact", classes="mb-2", variant="outlined",
                      v_if="series_items.length"):
            with v3.VCardText():
                with html.Div(classes="d-flex"):
                    v3.VBtn("Check mask", click=self.check_mask, disabled=("!t1w || !mask || running || !!busy",),
                            prepend_icon="mdi-shield-check", classes="mr-2", id="check-mask")
                    v3.VBtn("Estimate stiffness", click=self.estimate, disabled=("!!missing || running || !!busy",),
                            color="primary", prepend_icon="mdi-play", id="estimate")
                html.Div("{{ missing }}", v_if="missing && !running", classes="text-caption mt-1", id="missing")
                html.Div("{{ qa_text }}", v_if="qa_text", classes="text-body-2 mt-2", id="qa-text")
                with v3.VList(density="compact", v_if="flags.length", id="flags"):
                    v3.VListItem(v_for="f in flags", key="f.i", title=("`${f.severity.toUpperCase()} ${f.code}`",),
                                 subtitle=("f.message",), click=(self.jump_to_flag, "[f.i]"),
                                 prepend_icon="mdi-flag", classes="ls-flag")
                with html.Div(v_if="running", classes="mt-2", id="running"):
                    v3.VProgressLinear(model_value=("progress", 0), height=8, color="primary", id="progress")
                    with html.Div(classes="d-flex align-center mt-1"):
                        html.Div("Stage: {{ stage }} ({{ progress }}%)", classes="text-caption", id="stage")
                        v3.VSpacer()
                        v3.VBtn("Cancel", click=self.cancel, size="small", color="error", variant="tonal", id="cancel")

    def _result_card_ui(self, ctrl) -> None:
        with v3.VCard(title="Result", density="compact", classes="mb-2", variant="outlined", v_if="result", id="result"):
            with v3.VCardText():
                with html.Div():
                    html.Span("{{ result.kpa }}", style="font-size: 34px; font-weight: 700;", id="kpa")
                    html.Span(" kPa", style="font-size: 20px;")
                html.Div("{{ result.coverage }} interval {{ result.interval }} kPa", id="interval")
                html.Div("{{ result.category }}", classes="text-subtitle-1 font-weight-bold", id="category")
                with html.Div(classes="ls-bar mt-2 mb-1", style="width: 100%;", title="MRE bands (kPa)"):
                    html.Div(v_for="b in result.bands", key="b.label", classes="ls-band",
                             style=("{ width: b.width + '%', background: b.colour }",), title=("b.label",))
                    html.Div(style=("{ position: 'absolute', top: '-3px', height: '24px', left: result.lo + '%', "
                                    "width: (result.hi - result.lo) + '%', border: '2px solid #222', borderRadius: '3px' }",))
                    html.Div(style=("{ position: 'absolute', top: '-6px', height: '30px', width: '3px', background: '#000', "
                                    "left: result.marker + '%' }",))
                with html.Div(classes="d-flex text-caption", style="justify-content: space-between;"):
                    html.Span(v_for="b in result.bands", key="b.label", children=["{{ b.low }}"])
                    html.Span(f"{BAR_MAX_KPA:g} kPa")
                html.Div("Folds: {{ result.folds }} kPa (spread {{ result.spread }})", classes="text-caption", id="folds")
                html.Div("Device: {{ result.device }}; mask: {{ result.mask }}", classes="text-caption")
                with html.Div(v_if="result.warnings.length", classes="mt-1", id="warnings"):
                    v3.VAlert("{{ w }}", v_for="w in result.warnings", key="w", type="warning", density="compact",
                              variant="tonal", classes="mb-1 text-caption")
                with html.Div(classes="d-flex flex-wrap mt-2"):
                    for label, fn, name, mime, key in (
                            ("Report JSON", self.download_json, "report.json", "application/json", "json"),
                            ("Report (HTML)", self.download_html, "report.html", "text/html", "html"),
                            ("Maps (zip)", self.download_maps, "liverstiffness_maps.zip", "application/zip", "maps")):
                        v3.VBtn(label, size="small", variant="tonal", classes="mr-1 mb-1", prepend_icon="mdi-download",
                                id=f"download-{key}",
                                click=f"utils.download('{name}', trigger('{self.server.controller.trigger_name(fn)}'), '{mime}')")

    def _display_card(self) -> None:
        with v3.VCard(title="Display", density="compact", classes="mb-2", variant="outlined", v_if="series_items.length"):
            with v3.VCardText():
                v3.VSelect(v_model=("background", "t1w"), items=("backgrounds", BACKGROUNDS), label="Slice views show",
                           density="compact", hide_details=True, classes="mb-1", id="background")
                with html.Div(v_if="result"):
                    with v3.VRow(dense=True):
                        with v3.VCol(cols=6):
                            v3.VSelect(v_model=("map_kind", "rollout"), items=("map_kinds", MAP_KINDS), label="Map",
                                       density="compact", hide_details=True, id="map-kind", classes="ls-map-kind")
                        with v3.VCol(cols=6):
                            v3.VSelect(v_model=("map_seq", ""), items=("map_seqs", MAP_SEQUENCES), label="Sequence",
                                       density="compact", hide_details=True, id="map-seq", classes="ls-map-seq")
                    v3.VSlider(v_model=("opacity", 0.5), min=0, max=1, step=0.05, label="Opacity", hide_details=True,
                               thumb_label=True, id="opacity", classes="ls-opacity")
                    html.Div("Opacity in the views: {{ applied_opacity }}", classes="text-caption", id="applied-opacity")
                    v3.VCheckbox(v_model=("liver_only", False), label="Only inside the liver", density="compact",
                                 hide_details=True, id="liver-only")
                    with html.Div(classes="mt-1", id="legend"):
                        html.Div(style=f"height: 12px; background: {LEGEND_GRADIENT}; border: 1px solid #999;")
                        with html.Div(classes="d-flex text-caption", style="justify-content: space-between;"):
                            html.Span("0")
                            html.Span("{{ (legend_max / 2).toFixed(1) }}")
                            html.Span("{{ legend_max.toFixed(1) }} × uniform share")
                    html.Div("{{ map_note }}", classes="text-caption mt-1", id="map-note")

    def _model_card(self) -> None:
        with v3.VExpansionPanels(classes="mb-2", id="model-card"):
            with v3.VExpansionPanel(title=("`Model: ${model_summary.name || '…'} ${model_summary.version || ''}`",)):
                with v3.VExpansionPanelText():
                    html.Div("{{ model_summary.error }}", v_if="model_summary.error", classes="text-error")
                    html.Div("{{ model_summary.folds }} fold networks, trained on {{ model_summary.exams }} exams; "
                             "cross-validated r {{ model_summary.r }}, MAE {{ model_summary.mae }} kPa.", classes="text-caption")
                    html.Div("{{ model_summary.intended_use }}", classes="text-caption mt-1")


def _end_with_the_launcher(app: LiverStiffnessWebApp) -> None:
    """Stopped (SIGTERM) or orphaned, the session stops its run and removes its folder first.

    The estimate runs in its own process group (so Cancel can stop its tree), which a signal to
    this process's group does not reach: it must be stopped from here. And if the launcher dies
    without ending the session (killed), nothing else would: a thread notices the parent is gone.
    """
    def stop(*_):
        try:
            app.shutdown()
        finally:
            os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    if sys.platform.startswith("win"):
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)  # handled on the main thread, as a real SIGTERM

    threading.Thread(target=watch, name="watch the launcher", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="One LiverStiffness web session (started by `liverstiffness serve`).")
    p.add_argument("--data")
    p.add_argument("--model")
    p.add_argument("--device", default="auto")
    p.add_argument("--work", required=True, help="this session's folder (removed at the end)")
    p.add_argument("--max-upload-mb", type=float, default=512)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--timeout", type=int, default=0, help="exit after this many seconds with no browser connected")
    args = p.parse_args(argv)
    app = LiverStiffnessWebApp(data=args.data, model=args.model, work=Path(args.work), device=args.device,
                               max_upload_mb=args.max_upload_mb)
    _end_with_the_launcher(app)
    try:
        app.server.start(host=args.host, port=args.port, open_browser=False, timeout=args.timeout, show_connection_info=False)
    finally:
        app.shutdown()


if __name__ == "__main__":
    main()
