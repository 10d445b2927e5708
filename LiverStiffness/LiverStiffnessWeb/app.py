"""The LiverStiffness page: one browser session, served by trame-slicer on Slicer's MRML.

The workflow is the Slicer panel's, through the same logic (``LiverStiffnessLib``): files are
read by the core's readers into MRML volume nodes, ``LiverStiffnessLogic`` checks the mask,
segments the liver, runs the estimate as a background ``liverstiffness predict`` process
(``BackgroundRun``: progress, stage, Cancel) and turns its results into nodes, which the slice
views show. Nothing here computes a stiffness, a flag or a map itself.

This module holds the session (its state and actions) and ``main``; opening an exam is
``opening.py``, the page's layout ``page.py``, the exam's series and their nodes ``series.py``,
the chosen inputs ``inputs.py``, the slice views ``display.py`` (the maps:
``LiverStiffnessLib/map_display.py``; the stiffness map in kPa: ``stiffness_map.py``), the Result
card and its downloads ``result_view.py``, the comparison with an earlier report ``comparison.py``,
the model card ``model_info.py``, messages without server paths ``messages.py``, the process's end
``lifetime.py``, who may connect ``guard.py``.

One process serves one session (trame-slicer keeps one scene per process); the launcher
(``launcher.py``) starts one per browser session with its own work folder, and removes it.
Run alone for development: ``python -m LiverStiffnessWeb.app --data DIR --work DIR --port P``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import slicer
from trame.app import TrameApp
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from liverstiffness.errors import InputError
from LiverStiffnessLib.logic import DEFAULT_SALIENCY, LiverStiffnessLogic
from LiverStiffnessLib.nodes import ExamNodes

from . import exams, guard, result_view
from .comparison import FollowUpComparison
from .display import SliceDisplay
from .inputs import INPUT_KEYS, NUMBER_FACTS, b_value_problem, chosen_exam_nodes, missing_hint, patient_facts, sequences_note
from .lifetime import end_with_the_launcher
from .messages import public
from .model_info import describe_device, describe_model
from .opening import ExamOpening
from .page import build_page
from .series import AUTO_MASK, LoadedSeries

POLL_S = 0.25


class LiverStiffnessWebApp(ExamOpening, FollowUpComparison, TrameApp):
    """One browser session: its scene and state, and the actions the page's buttons call."""

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
        self.refused: dict[str, str] = {}   # role → why the exam's series for it could not be read
        self.run_inputs = None       # the inputs (INPUT_KEYS) the run in flight, then its result, was computed from
        self.exam_label = None       # the open exam as the page names it ("exam clean", "upload 2")
        self._uploads = 0

        self.sapp = SlicerApp()
        slicer.mrmlScene = self.sapp.scene   # slicer.util helpers look the scene up here
        self.logic = LiverStiffnessLogic(self.sapp.scene)
        register_rca_factories(self.sapp.view_manager, self.server)
        self.layout_manager = LayoutManager(self.sapp.scene, self.sapp.view_manager, self.server)
        self.layout_manager.register_layout("three", Layout(LayoutDirection.Horizontal, [
            ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view(), ViewLayoutDefinition.sagittal_view()]))
        self.layout_manager.set_layout("three")
        self.display = SliceDisplay(self.sapp, self.logic, self.state)
        self._init_state()
        self._init_followup()        # comparison.py: the shown result against an earlier report
        self.ui = build_page(self)
        self.state.change("opacity", "overlay", "map_kind", "map_seq", "liver_only", "background")(self._update_views)
        self.state.change("t1w", "t2w", "dwi", "mask", "dwi_b")(self._on_inputs_change)
        self.state.change(*INPUT_KEYS)(self._drop_stale_result)
        self.state.change(*NUMBER_FACTS, "sex")(self._on_facts_change)
        self.server.controller.on_server_ready.add(self._on_ready)

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        s = self.state
        s.trame__title = "LiverStiffness"
        s.exams = [{"title": e, "value": e} for e in exams.list_exams(self.data)] if self.data else []
        # The data folder is named nowhere on the page: its path is the server's, not the user's.
        s.exams_note = (f"{len(s.exams)} exam(s) on this server" if self.data
                        else "No exam folder on this server: upload the exam's files")
        s.exam = None
        s.series_items = []
        s.t1w = s.t2w = s.dwi = s.mask = None
        s.dwi_b = ""
        s.age = s.bmi = s.pdff = s.ast = s.alt = s.platelets = ""
        s.fib4 = ""                  # FIB-4 computed from age, AST, ALT and platelets (read-only); "" unless all four
        s.facts_problem = ""         # a typed fact that is not a number or out of its range, in one line
        s.sex = None
        s.error = ""
        s.status = "Choose an exam, or upload its files."
        s.busy = ""
        s.missing = "Choose an exam."
        s.sequences_note = ""        # which of T1w, T2w and DWI the estimate will use, and why not the others
        s.max_upload_mb = self.max_upload / 1e6
        s.model_summary = {}
        s.device_text = "checking…"
        s.flags = []
        s.qa_text = ""
        s.running = False
        s.progress = 0
        s.stage = ""
        s.result = None
        # The map over the liver by default; the whole crop the model saw is one click away.
        s.map_kind, s.map_seq, s.opacity, s.liver_only, s.background = "rollout", DEFAULT_SALIENCY, 0.5, True, "t1w"
        # Where the model looked (the attention maps) by default; a model trained on elastograms also
        # offers its stiffness map in kPa (the chooser shows only for a result that has one).
        s.overlay = "attention"
        s.overlay_shown = None       # what the views draw over the background, read back from them (display.py)
        s.map_note = ""
        s.legend_max = 2.0
        s.applied_opacity = None
        s.slice_positions = ""
        s.background_name = ""       # the volume the slice views show under the mask and the map
        s.auto_mask_text = ""

    def _on_ready(self, **_):
        asyncio.ensure_future(self._describe_model_and_device())

    async def _describe_model_and_device(self) -> None:
        try:
            summary = await asyncio.to_thread(describe_model, self.model)
        except InputError as exc:
            summary = {"error": public(f"The model cannot be used: {exc}")}
        try:
            text = await asyncio.to_thread(describe_device, self.device)
        except Exception as exc:  # noqa: BLE001 - shown, not fatal: the estimate reports its own device
            text = public(f"device unknown ({exc})")
        with self.state:
            self.state.model_summary = summary
            self.state.device_text = text

    # ------------------------------------------------------------------ inputs
    def exam_nodes(self) -> ExamNodes:
        return chosen_exam_nodes(self.sapp.scene, self.state, self.series, self.auto_mask)

    def _on_inputs_change(self, **_):
        if not self.series:
            self.state.missing, self.state.sequences_note = "Choose an exam.", ""
            return
        nodes = self.exam_nodes()
        self.state.sequences_note = public(sequences_note(nodes, self.refused))
        problem = b_value_problem(self.state.dwi_b, self.series.get(self.state.dwi), nodes.dwi_b_values)
        if problem and nodes.dwi is not None:   # b-values matter only with a DWI
            self.state.missing = public(problem)
            return
        self.state.missing = public(missing_hint(nodes, self.refused) or "")
        self._update_views()

    def _on_facts_change(self, **_):
        """FIB-4 (computed, read-only) once age, AST, ALT and platelets are all given; a typed fact
        that cannot be used is named in one line under the fields (and in the banner on Estimate)."""
        try:
            facts, problem = patient_facts(self.state), ""
        except InputError as exc:
            facts, problem = None, public(str(exc), self.data)
        self.state.fib4 = f"{facts.fib4:.2f}" if facts is not None and facts.fib4 is not None else ""
        self.state.facts_problem = problem

    def _inputs_now(self) -> dict:
        return {k: self.state[k] for k in INPUT_KEYS}

    def _drop_stale_result(self, **_):
        """A changed input (a series, a b-value, a patient fact) takes the result away: it was
        computed from the inputs as they were."""
        if self.result is not None and self.run_inputs != self._inputs_now():
            self._drop_result()
            self.state.status = "The inputs changed since the estimate: its result was removed. Estimate again."

    def _update_views(self, **_):
        """The slice views after any change: the map once there is a result, else the inputs."""
        if self.result is not None:
            self.display.show_map(self.series, self.auto_mask, self.result)
        elif self.series:
            self.display.show_inputs(self.series, self.auto_mask)

    def jump_to_flag(self, index):
        if self.qa is None or index is None or not (0 <= int(index) < len(self.qa.flags)):
            return
        flag = self.qa.flags[int(index)]
        pos = flag.positions_mm[0] if flag.positions_mm else None
        k = flag.slices[len(flag.slices) // 2] if flag.slices else 0
        reference = self.exam_nodes().reference_node   # the grid mask QA worked on
        if reference is None:
            return
        r, a, s = self.logic.slice_position_ras(reference, k, pos)
        self.display.centre_on(r, a, s)
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
            items = [i for i in self.state.series_items if i["value"] != AUTO_MASK]
            self.state.series_items = [*items, {"title": "Automatic liver mask (Segment liver)", "value": AUTO_MASK}]
            self.state.mask = AUTO_MASK
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
            nodes.facts = patient_facts(self.state)
            run = self.logic.start_background(nodes, self.model, self.device, work_root=self.work)
        except InputError as exc:
            return self._error(str(exc))
        self.run, self.run_inputs = run, self._inputs_now()
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
            if state == "done" and self.run_inputs != self._inputs_now():
                run.cleanup()
                self.state.status = "The inputs changed while it ran: its result was not kept. Estimate again."
            elif state == "done":
                try:
                    self._drop_result()
                    self.finished_run, self.result = run, run.result()
                    self.state.result = result_view.result_card(self.result.report)
                    self._remember_result(self.result.report, self.exam_label or "exam")
                    # The maps lie on the reference's grid (the first used of T1w, T2w, DWI): shown over it.
                    self.state.background = self.state.result["reference"]
                    self.state.status = "Done."
                except Exception as exc:  # noqa: BLE001 - shown as one line; the run's folder goes
                    run.cleanup()
                    self.state.error = public(f"the results could not be loaded: {exc}", self.data)
            else:
                self.state.error = public(run.error(), self.data)
                self.state.status = "The estimate failed."
        if self.result is not None:
            self._update_views()

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
            # (a model trained on elastograms: its stiffness map and the table of its regional means too)
            for node in (*self.result.attention.values(), *self.result.liver_only.values(),
                         getattr(self.result, "stiffness_map", None), getattr(self.result, "stiffness_regions", None)):
                if node is not None:
                    self.sapp.scene.RemoveNode(node)
        self.result = None
        if self.finished_run is not None:
            self.finished_run.cleanup()
            self.finished_run = None
        with self.state:
            self.state.result = None
            self.state.map_note = ""
        self._forget_shown_result()
        self.display.hide_map()

    # ------------------------------------------------------------------ downloads
    def _out(self) -> Path | None:
        return self.result.output_dir if self.result is not None else None

    def download_json(self):
        out = self._out()
        return self.server.protocol.addAttachment(result_view.report_json(out)) if out else None

    def download_html(self):
        out = self._out()
        return self.server.protocol.addAttachment(result_view.report_page(out, self.result.report)) if out else None

    def download_maps(self):
        out = self._out()
        return self.server.protocol.addAttachment(result_view.maps_zip(out)) if out else None

    # ------------------------------------------------------------------ misc
    def _error(self, text: str) -> None:
        with self.state:
            self.state.error = public(text, self.data)
            self.state.busy = ""

    def shutdown(self) -> None:
        """End of the session: stop a run, remove every file the session made."""
        if self.run is not None:
            self.run.cancel()
        if self.finished_run is not None:
            self.finished_run.cleanup()
        shutil.rmtree(self.work, ignore_errors=True)


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
    # Only the launcher, which holds this session's secret, may connect; under a loopback name and
    # from no page of another origin. Run alone (no launcher, no secret): a warning says so.
    secret = os.environ.get(guard.SECRET_ENV) or None
    if secret is None:
        print("warning: no session secret (run without `liverstiffness serve`): any account on this machine can connect",
              flush=True)
    check = guard.middleware(set(guard.LOOPBACK_NAMES), lambda line: print(line, flush=True), secret)
    app.server.controller.on_server_bind.add(lambda web_server, **_: web_server.app.middlewares.append(check))
    end_with_the_launcher(app.shutdown)
    try:
        app.server.start(host=args.host, port=args.port, open_browser=False, timeout=args.timeout, show_connection_info=False)
    finally:
        app.shutdown()


if __name__ == "__main__":
    main()
