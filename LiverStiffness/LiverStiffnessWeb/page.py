"""The page's layout: a drawer of cards (exam, sequences and patient, check and estimate, result,
display, model) beside the three slice views.

Every element the browser tests address has an ``id``; the cards bind to the session's state by
name and to the app's actions (``app``: a ``LiverStiffnessWebApp``), and hold no logic of their own.
"""
from __future__ import annotations

from trame.widgets import client, html
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v3

from LiverStiffnessLib.logic import MAP_KINDS as LOGIC_MAP_KINDS

from . import stiffness_map
from .result_view import BAR_MAX_KPA

# The maps the Slicer panel offers too (rollout, saliency, GradCAM with its caveat).
MAP_KINDS = [{"title": label, "value": kind} for kind, label in LOGIC_MAP_KINDS]
MAP_SEQUENCES = [{"title": "T1w", "value": "t1w"}, {"title": "T2w", "value": "t2w"}, {"title": "DWI", "value": "dwi"},
                 {"title": "ADC", "value": "adc"}]
SEX_ITEMS = [{"title": "F", "value": "F"}, {"title": "M", "value": "M"}]
BACKGROUNDS = [{"title": "T1w", "value": "t1w"}, {"title": "T2w", "value": "t2w"}, {"title": "DWI (highest b)", "value": "dwi"}]
# Colours of the attention colour table (LiverStiffnessLogic.attention_color_node): black, red, yellow, white.
LEGEND_GRADIENT = "linear-gradient(to right, #000 0%, #f00 33.3%, #ff0 66.7%, #fff 100%)"
# What the views draw over the background once there is a result: where the model looked (the
# attention maps above), or the stiffness map in kPa of a model trained on elastograms.
OVERLAYS = [{"title": "Where the model looked (attention maps)", "value": "attention"},
            {"title": "Stiffness map (kPa)", "value": "stiffness"}]
# The stiffness map is shown (the chooser offers it only for a result that has one).
SHOWS_STIFFNESS = "result && result.stiffness_map && overlay === 'stiffness'"


def build_page(app) -> SinglePageWithDrawerLayout:
    ctrl = app.server.controller
    with SinglePageWithDrawerLayout(app.server, full_height=True) as ui:
        ui.title.set_text("LiverStiffness")
        ui.drawer.width = 430
        with ui.toolbar:
            v3.VSpacer()
            v3.VChip("{{ device_text }}", prepend_icon="mdi-chip", size="small", classes="mr-2", id="device")
            v3.VChip("Demo model: synthetic data, not for clinical use", v_if="model_summary.synthetic",
                     color="warning", size="small", classes="mr-2")
        with ui.drawer:
            with html.Div(classes="pa-3", style="overflow-y: auto;"):
                _exam_card(app, ctrl)
                _inputs_card(app)
                _run_card(app)
                _result_card(app, ctrl)
                _display_card()
                _model_card()
        with ui.content:
            with html.Div(style="position: relative; height: calc(100vh - 64px); display: flex; flex-direction: column;"):
                # One line per problem; never taller than a few lines, so the views stay in sight.
                v3.VAlert("{{ error }}", v_if="error", type="error", density="compact", closable=True, id="error",
                          classes="ma-1 text-body-2", click_close="error = ''",
                          style="max-height: 6em; overflow-y: auto; flex: 0 0 auto;")
                v3.VProgressLinear(v_if="busy", indeterminate=True, color="primary")
                html.Div("{{ busy || status }}", classes="text-caption px-2", id="status")
                with html.Div(style="flex: 1 1 auto; min-height: 300px;"):
                    app.layout_manager.initialize_layout_grid(ui)
                html.Div("{{ slice_positions }}", classes="text-caption px-2", id="slice-positions")
                html.Div("Background: {{ background_name }}", v_if="background_name", classes="text-caption px-2",
                         id="background-name")
        client.Style(".ls-band { height: 18px; display: inline-block; } .ls-bar { position: relative; white-space: nowrap; }")
    return ui


def _exam_card(app, ctrl) -> None:
    with v3.VCard(title="Exam", density="compact", classes="mb-2", variant="outlined"):
        with v3.VCardText():
            html.Div("{{ exams_note }}", classes="text-caption mb-1", id="exams-note")
            with html.Div(classes="d-flex align-center"):
                v3.VSelect(v_model=("exam", None), items=("exams", []), label="Exam", density="compact", hide_details=True,
                           id="exam-select", classes="ls-exam-select")
                # The chooser's value travels with the click (a state change and a click sent together
                # may reach the server in either order).
                v3.VBtn("Open", click=(app.load_exam, "[exam]"), disabled=("!exam || running",), classes="ml-2",
                        id="open-exam")
            v3.VFileInput(
                label="…or upload the exam's files (NIfTI, NRRD, MHA, DICOM)", multiple=True, density="compact",
                hide_details=True, classes="mt-2", id="upload", prepend_icon="mdi-upload",
                # The size limit is checked here first (nothing is sent) and again on the server.
                change=("($event.target.files && $event.target.files.length) ? ("
                        "Array.from($event.target.files).reduce((a, f) => a + f.size, 0) > max_upload_mb * 1e6"
                        f" ? trigger('{ctrl.trigger_name(app.upload_refused)}',"
                        " [Array.from($event.target.files).reduce((a, f) => a + f.size, 0) / 1e6])"
                        f" : trigger('{ctrl.trigger_name(app.upload)}', [Array.from($event.target.files)])) : null"),
            )


def _inputs_card(app) -> None:
    with v3.VCard(title="Sequences and patient", density="compact", classes="mb-2", variant="outlined",
                  v_if="series_items.length"):
        with v3.VCardText():
            for role, label in (("t1w", "T1w"), ("t2w", "T2w"), ("dwi", "DWI"), ("mask", "Liver mask")):
                v3.VSelect(v_model=(role, None), items=("series_items", []), label=label, density="compact", clearable=True,
                           hide_details=True, classes=f"mb-1 ls-pick-{role}", id=f"pick-{role}")
            v3.VTextField(v_model=("dwi_b", ""), label="DWI b-values (s/mm², in volume order)", density="compact",
                          hide_details=True, classes="mb-1", id="dwi-b")
            v3.VBtn("Segment liver", click=app.segment_liver, disabled=("!t2w || running || !!busy",), size="small",
                    prepend_icon="mdi-auto-fix", id="segment-liver")
            html.Div("{{ auto_mask_text }}", v_if="auto_mask_text", classes="text-caption mt-1", id="auto-mask-text")
            # Two facts a row: a narrower chooser has no room left for its value beside its icons.
            with v3.VRow(dense=True, classes="mt-2"):
                with v3.VCol(cols=6):
                    v3.VTextField(v_model=("age", ""), label="Age (y)", density="compact", hide_details=True, id="age")
                with v3.VCol(cols=6):
                    v3.VSelect(v_model=("sex", None), items=("sex_items", SEX_ITEMS), label="Sex", density="compact",
                               clearable=True, hide_details=True, id="sex", classes="ls-sex")
                with v3.VCol(cols=6):
                    v3.VTextField(v_model=("bmi", ""), label="BMI", density="compact", hide_details=True, id="bmi")
                with v3.VCol(cols=6):
                    v3.VTextField(v_model=("pdff", ""), label="PDFF %", density="compact", hide_details=True, id="pdff")
                # Blood tests, optional (the command line's --ast, --alt, --platelets); FIB-4 is computed.
                with v3.VCol(cols=6):
                    v3.VTextField(v_model=("ast", ""), label="AST (U/L)", density="compact", hide_details=True, id="ast")
                with v3.VCol(cols=6):
                    v3.VTextField(v_model=("alt", ""), label="ALT (U/L)", density="compact", hide_details=True, id="alt")
                with v3.VCol(cols=6):
                    v3.VTextField(v_model=("platelets", ""), label="Platelets (10⁹/L)", density="compact",
                                  hide_details=True, id="platelets")
                with v3.VCol(cols=6):
                    # Computed (age × AST / (platelets × √ALT)), never typed: read-only.
                    v3.VTextField(model_value=("fib4",), label="FIB-4 (computed)", readonly=True, density="compact",
                                  hide_details=True, id="fib4", placeholder="not computed",
                                  persistent_placeholder=True, title="age × AST / (platelets × √ALT): needs all four")
            html.Div("{{ facts_problem }}", v_if="facts_problem", classes="text-caption text-error", id="facts-problem")


def _run_card(app) -> None:
    with v3.VCard(title="Check and estimate", density="compact", classes="mb-2", variant="outlined",
                  v_if="series_items.length"):
        with v3.VCardText():
            with html.Div(classes="d-flex"):
                v3.VBtn("Check mask", click=app.check_mask, disabled=("!(t1w || t2w || dwi) || !mask || running || !!busy",),
                        prepend_icon="mdi-shield-check", classes="mr-2", id="check-mask")
                v3.VBtn("Estimate stiffness", click=app.estimate, disabled=("!!missing || running || !!busy",),
                        color="primary", prepend_icon="mdi-play", id="estimate")
            html.Div("{{ missing }}", v_if="missing && !running", classes="text-caption mt-1", id="missing")
            html.Div("{{ sequences_note }}", v_if="sequences_note && !missing && !running", classes="text-caption mt-1",
                     id="sequences-note")
            html.Div("{{ qa_text }}", v_if="qa_text", classes="text-body-2 mt-2", id="qa-text")
            with v3.VList(density="compact", v_if="flags.length", id="flags"):
                v3.VListItem(v_for="f in flags", key="f.i", title=("`${f.severity.toUpperCase()} ${f.code}`",),
                             subtitle=("f.message",), click=(app.jump_to_flag, "[f.i]"),
                             prepend_icon="mdi-flag", classes="ls-flag")
            with html.Div(v_if="running", classes="mt-2", id="running"):
                v3.VProgressLinear(model_value=("progress", 0), height=8, color="primary", id="progress")
                with html.Div(classes="d-flex align-center mt-1"):
                    html.Div("Stage: {{ stage }} ({{ progress }}%)", classes="text-caption", id="stage")
                    v3.VSpacer()
                    v3.VBtn("Cancel", click=app.cancel, size="small", color="error", variant="tonal", id="cancel")


def _result_card(app, ctrl) -> None:
    with v3.VCard(title="Result", density="compact", classes="mb-2", variant="outlined", v_if="result", id="result"):
        with v3.VCardText():
            with html.Div():
                html.Span("{{ result.kpa }}", style="font-size: 34px; font-weight: 700;", id="kpa")
                html.Span(" kPa", style="font-size: 20px;")
            html.Div("{{ result.coverage }} interval {{ result.interval }} kPa", id="interval")
            html.Div("{{ result.category }}", classes="text-subtitle-1 font-weight-bold", id="category")
            html.Div("Sequences used: {{ result.sequences }}", classes="text-body-2", id="sequences")
            # The MRE bands as a bar, the interval as a box on it, the estimate as a marker.
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
            _stiffness_map_table()
            html.Div("Device: {{ result.device }}; mask: {{ result.mask }}", classes="text-caption")
            with html.Div(v_if="result.warnings.length", classes="mt-1", id="warnings"):
                v3.VAlert("{{ w }}", v_for="w in result.warnings", key="w", type="warning", density="compact",
                          variant="tonal", classes="mb-1 text-caption")
            with html.Div(classes="d-flex flex-wrap mt-2"):
                for label, fn, name, mime, key in (
                        ("Report JSON", app.download_json, "report.json", "application/json", "json"),
                        ("Report (HTML)", app.download_html, "report.html", "text/html", "html"),
                        ("Maps (zip)", app.download_maps, "liverstiffness_maps.zip", "application/zip", "maps")):
                    v3.VBtn(label, size="small", variant="tonal", classes="mr-1 mb-1", prepend_icon="mdi-download",
                            id=f"download-{key}",
                            click=f"utils.download('{name}', trigger('{ctrl.trigger_name(fn)}'), '{mime}')")
            _followup(app, ctrl)


def _stiffness_map_table() -> None:
    """A model trained on elastograms: its stiffness map's mean per region of the liver, and that
    it is a model estimate, not a measurement. Nothing at all for a result without a map."""
    with html.Div(v_if="result.stiffness_map", classes="mt-2", id="stiffness-map"):
        html.Div("Stiffness map (model estimate)", classes="text-subtitle-2")
        html.Div("{{ result.stiffness_map.note }}", classes="text-caption font-weight-bold", id="stiffness-map-note")
        html.Div("Liver mean {{ result.stiffness_map.liver_mean }} kPa", v_if="result.stiffness_map.liver_mean",
                 classes="text-caption", id="stiffness-map-mean")
        with v3.VTable(density="compact", v_if="result.stiffness_map.regions.length", id="stiffness-regions",
                       classes="text-caption", style="--v-table-row-height: 22px; --v-table-header-height: 26px;"):
            with html.Thead():
                with html.Tr():
                    html.Th("Region")
                    html.Th("Mean kPa", classes="text-right")
            with html.Tbody():
                with html.Tr(v_for="r in result.stiffness_map.regions", key="r.region", classes="ls-region"):
                    html.Td("{{ r.region }}")
                    html.Td("{{ r.kpa }}", classes="text-right")
        html.Div("Regions by {{ result.stiffness_map.regions_by }}.", v_if="result.stiffness_map.regions_by",
                 classes="text-caption", id="stiffness-regions-by")


def _followup(app, ctrl) -> None:
    """Follow-up: the shown result against an earlier report (another exam of this session, or
    an uploaded report.json), in one line; a refusal (another model or cut-off table) in one line."""
    with html.Div(classes="mt-3", id="followup"):
        html.Div("Compare with an earlier report", classes="text-subtitle-2")
        v3.VSelect(v_model=("followup_before", None), items=("followup_items", []), label="Earlier report",
                   density="compact", clearable=True, hide_details=True, classes="mb-1 ls-followup-select",
                   id="followup-select", no_data_text="No other result in this session: upload its report.json")
        v3.VFileInput(
            label="…or upload the earlier exam's report.json", accept=".json,application/json", density="compact",
            hide_details=True, prepend_icon="mdi-file-compare", id="followup-upload", classes="mb-1",
            change=("($event.target.files && $event.target.files.length) ? "
                    f"trigger('{ctrl.trigger_name(app.upload_earlier_report)}', [Array.from($event.target.files)]) : null"))
        v3.VCheckbox(v_model=("followup_anyway", False), label="Compare anyway (another model or cut-off table)",
                     density="compact", hide_details=True, id="followup-anyway")
        html.Div("{{ followup.text }}", v_if="followup && !followup.refused && followup.compared",
                 classes="text-body-2 font-weight-bold", id="followup-text")
        html.Div("{{ followup.text }}", v_if="followup && (followup.refused || !followup.compared)",
                 classes="text-body-2 text-error", id="followup-refused")
        with html.Div(v_if="followup && followup.warnings.length", id="followup-warnings"):
            v3.VAlert("{{ w }}", v_for="w in followup.warnings", key="w", type="warning", density="compact",
                      variant="tonal", classes="mb-1 text-caption")


def _display_card() -> None:
    with v3.VCard(title="Display", density="compact", classes="mb-2", variant="outlined", v_if="series_items.length"):
        with v3.VCardText():
            v3.VSelect(v_model=("background", "t1w"), items=("backgrounds", BACKGROUNDS), label="Slice views show",
                       density="compact", hide_details=True, classes="mb-1", id="background")
            with html.Div(v_if="result"):
                v3.VSelect(v_model=("overlay", "attention"), items=("overlays", OVERLAYS), label="Over the views",
                           density="compact", hide_details=True, id="overlay", classes="mb-1 ls-overlay",
                           v_if="result.stiffness_map")
                with v3.VRow(dense=True, v_if=f"!({SHOWS_STIFFNESS})"):
                    with v3.VCol(cols=12):
                        v3.VSelect(v_model=("map_kind", "rollout"), items=("map_kinds", MAP_KINDS), label="Map",
                                   density="compact", hide_details=True, id="map-kind", classes="ls-map-kind")
                    with v3.VCol(cols=12, v_if="map_kind === 'saliency'"):
                        v3.VSelect(v_model=("map_seq", "t2w"), items=("map_seqs", MAP_SEQUENCES), label="Saliency of",
                                   density="compact", hide_details=True, id="map-seq", classes="ls-map-seq")
                v3.VSlider(v_model=("opacity", 0.5), min=0, max=1, step=0.05, label="Opacity", hide_details=True,
                           thumb_label=True, id="opacity", classes="ls-opacity")
                html.Div("Opacity in the views: {{ applied_opacity }}", classes="text-caption", id="applied-opacity")
                # The stiffness map is 0 outside the liver: there is no "whole crop" to show.
                v3.VCheckbox(v_model=("liver_only", True), label="Only inside the liver (clear it: the whole crop the model saw)",
                             density="compact", hide_details=True, id="liver-only", v_if=f"!({SHOWS_STIFFNESS})")
                with html.Div(classes="mt-1", id="legend", v_if=f"!({SHOWS_STIFFNESS})"):
                    html.Div(style=f"height: 12px; background: {LEGEND_GRADIENT}; border: 1px solid #999;")
                    with html.Div(classes="d-flex text-caption", style="justify-content: space-between;"):
                        html.Span("0")
                        html.Span("{{ (legend_max / 2).toFixed(1) }}")
                        html.Span("{{ legend_max.toFixed(1) }} × uniform share")
                # The elastograms' scale, as the views' colour table (stiffness_map.py) draws it.
                with html.Div(classes="mt-1", id="stiffness-legend", v_if=SHOWS_STIFFNESS):
                    html.Div(style=f"height: 12px; background: {stiffness_map.legend_gradient()}; border: 1px solid #999;",
                             id="stiffness-legend-bar")
                    with html.Div(classes="d-flex text-caption", style="justify-content: space-between;"):
                        for tick in stiffness_map.LEGEND_TICKS_KPA:
                            html.Span(f"{tick:g}" + (" kPa" if tick == stiffness_map.LEGEND_TICKS_KPA[-1] else ""),
                                      classes="ls-stiffness-tick")
                html.Div("{{ map_note }}", classes="text-caption mt-1", id="map-note")


def _model_card() -> None:
    with v3.VExpansionPanels(classes="mb-2", id="model-card"):
        with v3.VExpansionPanel(title=("`Model: ${model_summary.name || '…'} ${model_summary.version || ''}`",)):
            with v3.VExpansionPanelText():
                html.Div("{{ model_summary.error }}", v_if="model_summary.error", classes="text-error")
                html.Div("{{ model_summary.folds }} fold networks, trained on {{ model_summary.exams }} exams; "
                         "cross-validated r {{ model_summary.r }}, MAE {{ model_summary.mae }} kPa.", classes="text-caption")
                html.Div("{{ model_summary.intended_use }}", classes="text-caption mt-1")
