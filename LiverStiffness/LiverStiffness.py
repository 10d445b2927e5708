"""LiverStiffness: liver shear stiffness (MRE kPa) from non-contrast T1w/T2w/DWI with a liver mask.

The module file holds the four standard classes. The widget is a thin layer: it mirrors a
parameter node, asks the logic (LiverStiffnessLib/logic.py, no Qt, tested on real MRML in CI)
to do the work, and shows the results. Heavy packages (torch, MONAI) are imported only after
the dependency check, never at module load.

Long module: Slicer finds a scripted module's widget, logic and self-test classes in this one file
(the ScriptedLoadableModule convention); everything else lives in LiverStiffnessLib.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from liverstiffness.devices import DEVICES
from liverstiffness.report import Report
from LiverStiffnessLib import dependencies
from LiverStiffnessLib.logic import LiverStiffnessLogic, facts_problem, fib4_text, map_key, missing_inputs
from LiverStiffnessLib.map_display import MapDisplay
from LiverStiffnessLib.nodes import SEQUENCE_LABELS, ExamNodes

# The maps the web page offers too (LiverStiffnessLib.logic.MAP_KINDS, which a test compares with
# these): rollout and saliency, which point at a planted signal, and GradCAM with its caveat.
MAP_KINDS = ((_("Attention rollout"), "rollout"), (_("Saliency (gradient × input), per sequence"), "saliency"),
             (_("GradCAM: did not point at a planted signal (see the note)"), "gradcam"))
LEAVE_OUT_PARAMS = {"t1w": "leaveOutT1w", "t2w": "leaveOutT2w", "dwi": "leaveOutDwi"}   # sequence → parameter
SEQUENCES = ((_("All sequences"), ""), ("T1w", "t1w"), ("T2w", "t2w"), ("DWI", "dwi"), ("ADC", "adc"))
# The blood tests beside age, sex, BMI and PDFF: (parameter, label, spin box maximum, decimals).
# 0 is "unknown"; the maximum is above the plausible range (manifest.AST_RANGE, ...) so a value out
# of it (a platelet count per µL, 250000) is typed as it is and named in one line, not clamped.
LAB_FIELDS = (("ast", _("AST (U/L):"), 100000.0, 1), ("alt", _("ALT (U/L):"), 100000.0, 1),
              ("platelets", _("Platelets (10⁹/L):"), 1000000.0, 0))


class LiverStiffness(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Liver Stiffness")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["LiverStiffness developers"]
        self.parent.helpText = _(
            "Estimates liver shear stiffness (kPa, as 60 Hz MR elastography measures it) from non-contrast "
            "T1-weighted, T2-weighted and diffusion-weighted MRI (any of them; the result names those used) and a "
            "liver mask, with a calibrated interval, the MRE category and attention maps that show where the model "
            "looked. Check the mask first. "
            "The shipped demo model was trained on synthetic phantoms: it is for demonstration only, not for clinical use.")
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, MONAI, PyTorch and SimpleITK. Method after transformer-based multi-channel MRI "
            "stiffness estimation with multi-site cross-validation.")


@parameterNodeWrapper
class LiverStiffnessParameterNode:
    """Panel state, saved with the scene: inputs, patient facts, model choice and the last result."""

    t1w: slicer.vtkMRMLScalarVolumeNode
    t2w: slicer.vtkMRMLScalarVolumeNode
    dwi: slicer.vtkMRMLNode
    dwiBValues: str = ""
    leaveOutT1w: str = ""             # why a selected sequence is not to be used (empty: use it)
    leaveOutT2w: str = ""
    leaveOutDwi: str = ""
    maskSegmentation: slicer.vtkMRMLSegmentationNode
    maskSegmentId: str = ""
    maskLabelmap: slicer.vtkMRMLLabelMapVolumeNode
    maskLabel: int = 0                # 0: any non-zero
    age: float = -1.0                 # < 0: unknown
    sex: str = "unknown"              # unknown, F or M (the combo box texts)
    bmi: float = 9.0                  # at the minimum: unknown
    pdff: float = -1.0
    ast: float = 0.0                  # 0: unknown (U/L)
    alt: float = 0.0                  # 0: unknown (U/L)
    platelets: float = 0.0            # 0: unknown (10⁹/L)
    modelPath: str = ""
    device: str = "auto"
    lastAttention: slicer.vtkMRMLScalarVolumeNode
    lastReport: str = ""              # report.json text of the last run
    opacity: float = 0.5


class LiverStiffnessWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)
        self._result = None
        self._finished_run = None
        self._qa = None

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LiverStiffness.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LiverStiffnessLogic(slicer.mrmlScene)
        self._maps = MapDisplay(self.logic, slicer.mrmlScene)   # the overlay nodes, interpolated patch maps

        self.ui.sexComboBox.addItems(["unknown", "F", "M"])
        for label, kind in MAP_KINDS:
            self.ui.mapKindComboBox.addItem(label, kind)
        for label, key in SEQUENCES:
            self.ui.sequenceComboBox.addItem(label, key)
        self._fill_devices()
        self._add_leave_out_row()
        self._add_lab_fields()
        self._add_stiffness_map_button()
        self._add_followup_section(uiWidget)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.maskSegmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._on_segment_selected)
        self.ui.maskSegmentSelector.connect("currentSegmentChanged(QString)", self._on_segment_selected)
        for w in (self.ui.t1wSelector, self.ui.t2wSelector, self.ui.dwiSelector, self.ui.maskLabelmapSelector):
            w.connect("currentNodeChanged(vtkMRMLNode*)", self._update_state)
        self.ui.dwiBValuesLineEdit.textChanged.connect(self._update_state)
        self.ui.modelPathLineEdit.currentPathChanged.connect(self._show_model_card)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.saveReportButton.clicked.connect(self.onSaveReport)
        self.ui.mapKindComboBox.currentIndexChanged.connect(self._show_overlay)
        self.ui.sequenceComboBox.currentIndexChanged.connect(self._show_overlay)
        self.ui.opacitySlider.valueChanged.connect(self._show_overlay)
        self.ui.insideLiverCheckBox.toggled.connect(self._show_overlay)
        self.ui.checkMaskButton.clicked.connect(self.onCheckMask)
        self.ui.qaFlagsList.itemClicked.connect(self.onFlagClicked)
        self.ui.openSegmentEditorButton.clicked.connect(self.onOpenSegmentEditor)
        self.ui.segmentLiverButton.clicked.connect(self.onSegmentLiver)
        self.ui.loadStudyButton.clicked.connect(self.onLoadStudy)
        self.initializeParameterNode()
        self._show_model_card()

    def cleanup(self) -> None:
        self.onCancel()
        self._drop_finished_run()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._fill_followup()

    def exit(self) -> None:
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
        self._fill_followup()           # the closed scene's results table is gone

    def initializeParameterNode(self) -> None:
        self.setParameterNode(LiverStiffnessParameterNode(
            slicer.mrmlScene.GetSingletonNode("LiverStiffness", "vtkMRMLScriptedModuleNode")
            or self._new_parameter_node()))

    def _new_parameter_node(self):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
        node.SetSingletonTag("LiverStiffness")
        node.SetName("LiverStiffness")
        return node

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            if self._parameterNodeGuiTag:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent, self._update_state)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui({
                "t1w": self.ui.t1wSelector, "t2w": self.ui.t2wSelector, "dwi": self.ui.dwiSelector,
                "dwiBValues": self.ui.dwiBValuesLineEdit, "maskLabelmap": self.ui.maskLabelmapSelector,
                "maskLabel": self.ui.maskLabelSpinBox, "age": self.ui.ageSpinBox, "sex": self.ui.sexComboBox,
                "bmi": self.ui.bmiSpinBox, "pdff": self.ui.pdffSpinBox, "opacity": self.ui.opacitySlider,
                **self._labSpinBoxes,
                **{param: edit for param, edit in zip(LEAVE_OUT_PARAMS.values(), self._leaveOutEdits)}})
            # The segment selector is not a parameter widget: mirror it by hand (saved with the scene).
            if self._parameterNode.maskSegmentation:
                self.ui.maskSegmentSelector.setCurrentNode(self._parameterNode.maskSegmentation)
                self.ui.maskSegmentSelector.setCurrentSegmentID(self._parameterNode.maskSegmentId)
            self.addObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent, self._update_state)
            if self._parameterNode.lastReport:
                self._show_report(Report.from_dict(json.loads(self._parameterNode.lastReport)))
        self._update_state()

    # ------------------------------------------------------------------ state
    def _add_leave_out_row(self) -> None:
        """A reason per sequence, below the inputs: a selected sequence with a reason is not used
        (e.g. "motion artefact"), and the report names it with that reason."""
        row = qt.QWidget()
        box = qt.QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        self._leaveOutEdits = []
        for name in LEAVE_OUT_PARAMS:
            edit = qt.QLineEdit()
            edit.placeholderText = _("{name}: why").format(name=SEQUENCE_LABELS[name])
            edit.toolTip = _("Type why to leave the selected {name} out (e.g. motion artefact); empty: use it. "
                             "Any of T1w, T2w and DWI may be missing; the result names those used.").format(
                name=SEQUENCE_LABELS[name])
            box.addWidget(edit)
            self._leaveOutEdits.append(edit)
        self.ui.inputsCollapsibleButton.layout().addRow(_("Leave out:"), row)

    def _add_lab_fields(self) -> None:
        """AST, ALT and platelets under PDFF (optional, as the command line's --ast, --alt,
        --platelets), and FIB-4 computed from them with the age, read-only."""
        form = self.ui.patientCollapsibleButton.layout()
        self._labSpinBoxes = {}
        for name, label, maximum, decimals in LAB_FIELDS:
            box = qt.QDoubleSpinBox()
            box.decimals = decimals
            box.minimum, box.maximum, box.value = 0.0, maximum, 0.0
            box.specialValueText = _("unknown")
            box.toolTip = _("Optional blood test; 0 is unknown. Used only by a model trained with it "
                            "(the report says so otherwise).")
            form.addRow(label, box)
            self._labSpinBoxes[name] = box
        self._fib4Label = qt.QLabel()
        self._fib4Label.toolTip = _("FIB-4 = age × AST / (platelets × √ALT): computed, not typed")
        self._fib4Label.textInteractionFlags = qt.Qt.TextSelectableByMouse
        form.addRow(_("FIB-4:"), self._fib4Label)

    def _nodes(self) -> ExamNodes:
        from liverstiffness.manifest import PatientFacts, parse_b_values

        p = self._parameterNode
        seg = p.maskSegmentation
        try:
            b = parse_b_values(p.dwiBValues) if p.dwiBValues.strip() else ()
        except Exception:  # noqa: BLE001 - shown as "enter the b-values" until it parses
            b = ()
        sex = p.sex
        return ExamNodes(
            t1w=p.t1w, t2w=p.t2w, dwi=p.dwi, dwi_b_values=b, mask_segmentation=seg,
            mask_segment_id=p.maskSegmentId if seg else "",
            mask_labelmap=None if seg else p.maskLabelmap, mask_label=p.maskLabel or None,
            facts=PatientFacts(age=p.age if p.age >= 0 else None, sex=sex if sex in ("F", "M") else None,
                               bmi=p.bmi if p.bmi > 9.0 else None, pdff=p.pdff if p.pdff >= 0 else None,
                               **{name: getattr(p, name) or None for name, *_rest in LAB_FIELDS}),
            left_out={name: getattr(p, param).strip() for name, param in LEAVE_OUT_PARAMS.items()
                      if getattr(p, param).strip()})

    def _reference_node(self, name: str | None = None):
        """The volume the results lie on: sequence ``name`` (a result's reference), else the first
        used of T1w, T2w, DWI."""
        nodes = self._nodes()
        return (nodes.volume_node(name) if name else None) or nodes.reference_node

    def _on_segment_selected(self, *args) -> None:
        if self._parameterNode:
            self._parameterNode.maskSegmentation = self.ui.maskSegmentSelector.currentNode()
            self._parameterNode.maskSegmentId = self.ui.maskSegmentSelector.currentSegmentID() or ""
        self._update_state()

    def _update_state(self, *args) -> None:
        if not self._parameterNode or self._run is not None:
            return
        nodes = self._nodes()
        problem = facts_problem(nodes.facts)   # a typed fact out of its range, in one line naming it
        self._fib4Label.text = fib4_text(nodes.facts) or (problem or _("needs age, AST, ALT and platelets"))
        reason = missing_inputs(nodes) or problem
        self.ui.applyButton.enabled = reason is None
        self.ui.applyButton.toolTip = reason or _("Estimate liver stiffness from the selected inputs")
        used = ", ".join(SEQUENCE_LABELS[n] for n in nodes.sequences)
        self.ui.statusLabel.text = reason or _("Ready: the estimate uses {used}.").format(used=used)

    def _fill_devices(self) -> None:
        self.ui.deviceComboBox.clear()
        self.ui.deviceComboBox.addItems(list(DEVICES))
        missing = dependencies.missing()
        if "torch" in missing:
            self.ui.deviceInfoLabel.text = _("PyTorch is not installed yet (you will be asked on first use).")
            return
        import torch
        found = (_("CUDA GPU: {name}").format(name=torch.cuda.get_device_name(0)) if torch.cuda.is_available()
                 else _("no CUDA GPU found: CPU"))
        self.ui.deviceInfoLabel.text = f"{found} (torch {torch.__version__})"

    def _show_model_card(self, *args) -> None:
        path = self.ui.modelPathLineEdit.currentPath
        folder = Path(path) if path else Path(__file__).resolve().parent / "liverstiffness" / "shipped_models" / "demo"
        card = folder / "MODEL_CARD.md"
        self.ui.modelCardBrowser.setMarkdown(card.read_text() if card.is_file()
                                             else _("No MODEL_CARD.md in {folder}").format(folder=folder))

    # ------------------------------------------------------------------ dependencies
    def _ensure_dependencies(self) -> bool:
        missing = dependencies.missing()
        if not missing:
            return True
        if not dependencies.installable(missing):
            slicer.util.errorDisplay(dependencies.describe(missing), windowTitle=_("LiverStiffness needs Python packages"))
            return False
        if not slicer.util.confirmOkCancelDisplay(dependencies.describe(missing), _("LiverStiffness needs Python packages")):
            slicer.util.warningDisplay(_("Not installed: {names}. The estimate cannot run without them; "
                                         "install them later from this panel.").format(names=", ".join(missing)))
            return False
        with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=True):
            dependencies.install(missing)
            self._fill_devices()
            return not dependencies.missing()
        return False

    # ------------------------------------------------------------------ running
    def onApply(self) -> None:
        if not self._ensure_dependencies():
            return
        from liverstiffness.errors import InputError

        try:
            self._run = self.logic.start_background(self._nodes(), self.ui.modelPathLineEdit.currentPath or None,
                                                    self.ui.deviceComboBox.currentText)
        except InputError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("LiverStiffness: check the inputs"))
            return
        self.ui.applyButton.enabled = False
        self.ui.cancelButton.visible = True
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Starting...")
        self._timer.start()

    def _poll(self) -> None:
        run = self._run
        state = run.poll()
        self.ui.progressBar.value = int(100 * run.progress)
        self.ui.statusLabel.text = _("Running: {stage}...").format(stage=run.stage)
        if state == "running":
            return
        self._timer.stop()
        self._run = None
        self.ui.cancelButton.visible = False
        self.ui.progressBar.visible = False
        if state == "done":
            with slicer.util.tryWithErrorDisplay(_("Could not load the results."), waitCursor=True):
                self._drop_finished_run()
                self._finished_run = run  # its folder holds the maps the overlay and Save report read
                self._maps.clear()                      # a new result: its own overlay nodes
                self._result = run.result()
                self._parameterNode.lastReport = self._result.report.to_json()
                self._parameterNode.lastAttention = self._result.attention["rollout"]
                self._show_report(self._result.report)
                self._show_overlay()
                self._fill_followup()
        elif state == "failed":
            slicer.util.errorDisplay(run.error(), windowTitle=_("LiverStiffness: the estimate failed"),
                                     detailedText="\n".join(run.log[-50:]))
        self._update_state()

    def _drop_finished_run(self) -> None:
        """Remove the folder of the run whose result was shown (its nodes stay in the scene)."""
        if self._finished_run is not None:
            self._finished_run.cleanup()
            self._finished_run = None

    def onCancel(self) -> None:
        if self._run is not None:
            self._timer.stop()
            self._run.cancel()
            self._run = None
            self.ui.cancelButton.visible = False
            self.ui.progressBar.visible = False
            self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
            self._update_state()

    # ------------------------------------------------------------------ results
    def _show_report(self, report) -> None:
        lo, hi = report.interval_kpa
        self.ui.resultLabel.setText(f"<span style='font-size:20pt;font-weight:bold'>{report.stiffness_kpa:.2f} kPa</span>"
                                    "<br>" + _("{coverage:.0%} interval {lo:.2f}–{hi:.2f} kPa").format(
                                        coverage=report.interval_coverage, lo=lo, hi=hi))
        note = " — " + _("demo model (synthetic), not for clinical use") if report.synthetic_model else ""
        warn = "<br>".join(report.warnings)
        seqs = LiverStiffnessLogic.sequences_text(report)
        if not (report.input_range or {}).get("checked", False):  # older model folders carry no training ranges
            warn += ("<br>" if warn else "") + "Out-of-range check not available for this model."
        self.ui.categoryLabel.setText(f"<b>{report.category}</b>{note}<br>{seqs}" + (f"<br><i>{warn}</i>" if warn else ""))
        self.ui.saveReportButton.enabled = self._result is not None
        self._stiffnessMapButton.enabled = self._result is not None and self._result.stiffness_map is not None

    def _show_overlay(self, *args) -> None:
        if self._result is None:
            return
        key = map_key(self.ui.mapKindComboBox.currentData, self.ui.sequenceComboBox.currentData)
        # Maps cover the model's whole crop (the spleen matters too); "inside the liver" shows a
        # copy zeroed outside the mask; a patch map is drawn interpolated (as on the web page).
        # The note says the unit, or that the map is near-uniform.
        node = self._maps.node(self._result, key if key in self._result.attention else "rollout",
                               inside_liver=self.ui.insideLiverCheckBox.checked)
        self.ui.mapNoteLabel.text = self.logic.map_note(self._result.report, node.GetAttribute("LiverStiffness.mapKind"))
        reference = (self._result.report.preprocessing or {}).get("reference_sequence")
        slicer.util.setSliceViewerLayers(background=self._reference_node(reference), foreground=node,
                                         foregroundOpacity=self.ui.opacitySlider.value)

    def _add_stiffness_map_button(self) -> None:
        """"Show stiffness map" under the maps: enabled when the result has one (a model trained on
        elastograms)."""
        self._stiffnessMapButton = qt.QPushButton(_("Show stiffness map"))
        self._stiffnessMapButton.toolTip = _("The model's estimate of the MRE stiffness map (kPa, coloured 0–8 kPa as "
                                             "elastograms are) as the overlay: an estimate, not a measurement")
        self._stiffnessMapButton.enabled = False
        self._stiffnessMapButton.clicked.connect(self.onShowStiffnessMap)
        self.ui.resultsCollapsibleButton.layout().addRow(self._stiffnessMapButton)

    def onShowStiffnessMap(self) -> None:
        if self._result is None or self._result.stiffness_map is None:
            return
        reference = (self._result.report.preprocessing or {}).get("reference_sequence")
        with slicer.util.tryWithErrorDisplay(_("Could not show the stiffness map."), waitCursor=True):
            legend = self.logic.show_stiffness_map(self._result, self._reference_node(reference),
                                                   self.ui.opacitySlider.value)
            self.ui.mapNoteLabel.text = self.logic.stiffness_map_text(self._result.report, legend is not None)

    def onSaveReport(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Save the stiffness report to"))
        if folder and self._result is not None:
            with slicer.util.tryWithErrorDisplay(_("Could not save the report."), waitCursor=True):
                files = LiverStiffnessLogic.save_report(self._result, folder)
                slicer.util.showStatusMessage(_("Saved {n} files to {folder}").format(n=len(files), folder=folder), 5000)

    # ------------------------------------------------------------------ follow-up
    def _add_followup_section(self, uiWidget) -> None:
        """Follow-up, under Results: the earlier and the later result (rows of the results table,
        or the earlier exam's saved report.json), Compare, and the change in one line."""
        import ctk

        section = ctk.ctkCollapsibleButton()
        section.text = _("Follow-up")
        section.collapsed = True
        form = qt.QFormLayout(section)
        self._followupEarlier, self._followupLater = qt.QComboBox(), qt.QComboBox()
        self._followupFile = ctk.ctkPathLineEdit()
        self._followupFile.filters = ctk.ctkPathLineEdit.Files
        self._followupFile.nameFilters = ["report.json (*.json)"]
        self._followupFile.toolTip = _("The earlier exam's report.json (Save report): used instead of the earlier row")
        self._followupAnyway = qt.QCheckBox(_("Compare anyway (different model or cut-off table)"))
        button = qt.QPushButton(_("Compare"))
        button.toolTip = _("The change from the earlier to the later result, against the repeatability of MRE and of the model")
        self._followupLabel = qt.QLabel()
        self._followupLabel.wordWrap = True
        self._followupLabel.textInteractionFlags = qt.Qt.TextSelectableByMouse
        form.addRow(_("Earlier:"), self._followupEarlier)
        form.addRow(_("…or its report.json:"), self._followupFile)
        form.addRow(_("Later:"), self._followupLater)
        form.addRow(self._followupAnyway)
        form.addRow(button)
        form.addRow(self._followupLabel)
        button.clicked.connect(self.onCompare)
        section.contentsCollapsed.connect(lambda collapsed: collapsed or self._fill_followup())
        top = uiWidget.layout()
        top.insertWidget(top.indexOf(self.ui.resultsCollapsibleButton) + 1, section)

    def _fill_followup(self) -> None:
        """The results table's rows in both choosers: the earlier on the last but one, the later on the last."""
        if self.logic is None:
            return
        rows = self.logic.comparable_results()
        for combo, pick in ((self._followupEarlier, -2), (self._followupLater, -1)):
            combo.clear()
            for row, label in rows:
                combo.addItem(label, row)
            combo.currentIndex = max(0, len(rows) + pick) if rows else -1

    def onCompare(self) -> None:
        path = self._followupFile.currentPath
        earlier = path if path else self._followupEarlier.currentData
        if earlier is not None and not path:
            earlier = int(earlier)
        later = self._followupLater.currentData
        result = self.logic.compare_results(earlier, int(later) if later is not None else None,
                                            self._followupAnyway.checked)
        warn = "".join(f"<br><i>{escape(w)}</i>" for w in result.warnings)
        self._followupLabel.setText(f"<b>{escape(result.text)}</b>{warn}")

    # ------------------------------------------------------------------ DICOM study
    def onLoadStudy(self) -> None:
        """Load the T1w, T2w, DWI (and liver SEG) a study's rules choose, and select them as inputs."""
        if not self._ensure_dependencies():
            return
        from liverstiffness.errors import InputError

        folder = self.ui.studyPathLineEdit.currentPath
        try:
            with slicer.util.tryWithErrorDisplay("Could not load the DICOM study.", waitCursor=True):
                nodes, selection = self.logic.load_study(folder)
        except InputError as exc:  # a missing or ambiguous series: the message holds the candidate table
            print(exc)
            slicer.util.errorDisplay(str(exc).splitlines()[0], windowTitle="LiverStiffness: DICOM study",
                                     detailedText=str(exc))
            return
        print(selection.format_table())
        p = self._parameterNode
        p.t1w, p.t2w, p.dwi = nodes.t1w, nodes.t2w, nodes.dwi   # a role the study lacks: None (not given)
        p.dwiBValues = ",".join(f"{b:g}" for b in nodes.dwi_b_values)
        if nodes.mask_segmentation is not None:
            self.ui.maskSegmentSelector.setCurrentNode(nodes.mask_segmentation)
            self.ui.maskSegmentSelector.setCurrentSegmentID(nodes.mask_segment_id)
            self._on_segment_selected()
        f = nodes.facts
        if f.age is not None:
            p.age = f.age
        if f.sex is not None:
            p.sex = f.sex
        if f.bmi is not None:
            p.bmi = f.bmi
        for name, *_rest in LAB_FIELDS:         # a study whose facts carry blood tests
            if getattr(f, name) is not None:
                setattr(p, name, getattr(f, name))
        chosen = "; ".join(f"{r.upper()} {c.series.label()}" for r, c in selection.chosen.items())
        lacking = "".join(f"; no {SEQUENCE_LABELS[r]}: {why}" for r, why in nodes.left_out.items())
        self.ui.statusLabel.text = f"Study loaded: {chosen}{lacking} (the reasons are in the Python console)."
        slicer.util.setSliceViewerLayers(background=nodes.reference_node)

    # ------------------------------------------------------------------ automatic mask
    def onSegmentLiver(self) -> None:
        """Propose a liver segment from the T2w; it becomes the selected mask, to check and edit."""
        if not self._ensure_dependencies():
            return
        from liverstiffness.errors import InputError

        result = None
        try:
            with slicer.util.tryWithErrorDisplay(_("Automatic liver segmentation failed."), waitCursor=True):
                result = self.logic.segment_liver(self._parameterNode.t2w, device=self.ui.deviceComboBox.currentText)
        except InputError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("LiverStiffness: segment liver"))
            return
        if result is None:
            return
        self.ui.maskSegmentSelector.setCurrentNode(result.segmentation)
        self.ui.maskSegmentSelector.setCurrentSegmentID(result.segment_id)
        self._on_segment_selected()
        c = result.info["confidence"]
        folds, scales = c.get("fold_agreement_dice"), c.get("tta_agreement_dice")
        sure = (_("mean probability {p:.2f}").format(p=c["mean_probability"])
                + (", " + _("fold agreement {d:.2f}").format(d=folds) if folds else "")
                + (", " + _("scale agreement {d:.2f}").format(d=scales) if scales else ""))
        check = _("LOW CONFIDENCE: check it carefully") if c.get("low_confidence") else _("check it")
        self.ui.statusLabel.text = _("Automatic liver mask: {ml:.0f} mL ({sure}); {check} "
                                     "(Check mask, Fix in Segment Editor) before estimating.").format(
            ml=result.info["volume_ml"], sure=sure, check=check)
        slicer.util.setSliceViewerLayers(background=self._parameterNode.t2w)

    # ------------------------------------------------------------------ mask QA
    def onCheckMask(self) -> None:
        if not self._ensure_dependencies():
            return
        from liverstiffness.errors import InputError

        self.ui.qaFlagsList.clear()
        try:
            with slicer.util.tryWithErrorDisplay(_("Mask QA failed."), waitCursor=True):
                self._qa = self.logic.check_mask(self._nodes())
        except InputError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("LiverStiffness: check the inputs"))
            return
        if self._qa is None:
            return
        if not self._qa.flags:
            ml = self._qa.measurements["volume_ml"]
            self.ui.qaFlagsList.addItem(_("Mask OK: {ml:.0f} mL, one piece, no flag.").format(ml=ml))
        for i, flag in enumerate(self._qa.flags):
            item = qt.QListWidgetItem(f"{flag.severity.upper()} {flag.code}: {flag.message}")
            item.setData(qt.Qt.UserRole, i)
            self.ui.qaFlagsList.addItem(item)

    def onFlagClicked(self, item) -> None:
        index = item.data(qt.Qt.UserRole)
        if self._qa is None or index is None:
            return
        flag = self._qa.flags[int(index)]
        pos = flag.positions_mm[0] if flag.positions_mm else None
        k = flag.slices[len(flag.slices) // 2] if flag.slices else 0
        reference = self._reference_node()
        if reference is None:
            return
        ras = self.logic.slice_position_ras(reference, k, pos)
        slicer.modules.markups.logic().JumpSlicesToLocation(*ras, True)

    def onOpenSegmentEditor(self) -> None:
        seg = self.ui.maskSegmentSelector.currentNode()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        if seg is not None:
            editor.setSegmentationNode(seg)
            editor.setSourceVolumeNode(self._reference_node())


class LiverStiffnessTest(ScriptedLoadableModuleTest):
    """Runs in the Slicer application (Slicer's test runner): a synthetic exam end to end."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_estimate_on_synthetic_case()

    def test_estimate_on_synthetic_case(self):
        import tempfile

        from liverstiffness.manifest import read_manifest
        from liverstiffness.phantom import generate_cohort

        self.delayDisplay("Generating a synthetic exam")
        folder = Path(tempfile.mkdtemp())
        rec = read_manifest(generate_cohort(folder, n=1, seed=3, sites=("A",), progress=False))[0]
        t1 = slicer.util.loadVolume(str(rec.t1w))
        t2 = slicer.util.loadVolume(str(rec.t2w))
        import SimpleITK as sitk
        dwi_img = sitk.ReadImage(str(rec.dwi))
        high = dwi_img[:, :, :, dwi_img.GetSize()[3] - 1]
        sitk.WriteImage(high, str(folder / "dwi_high.nii.gz"))
        dwi = slicer.util.loadVolume(str(folder / "dwi_high.nii.gz"))
        mask = slicer.util.loadLabelVolume(str(rec.mask))
        widget = slicer.modules.liverstiffness.widgetRepresentation().self()
        p = widget._parameterNode
        p.t1w, p.t2w, p.dwi, p.maskLabelmap = t1, t2, dwi, mask
        p.dwiBValues = str(rec.dwi_b[-1])
        self.assertTrue(widget.ui.applyButton.enabled)
        self.delayDisplay("Running the estimate")
        widget.onApply()
        while widget._run is not None:
            slicer.app.processEvents()
            widget._poll()
        self.assertIsNotNone(widget._result)
        report = widget._result.report
        self.assertGreater(report.stiffness_kpa, 0.5)
        att = widget._result.attention["rollout"]
        self.assertEqual(att.GetImageData().GetDimensions(), t1.GetImageData().GetDimensions())
        self.delayDisplay("Test passed")
