"""Follow-up in the Slicer panel and on the web page: two results of one patient compared with
the core's ``liverstiffness.followup.compare`` (as ``liverstiffness compare`` does), as one line.

Each run's report is kept with the results table (``keep_report``: a table attribute per row,
keyed by the row's ``report_id``), so any two rows can be compared after their run folders are
gone and after the scene is saved and loaded again; a report.json the user saved earlier can
stand for either side. Reports from different models or cut-off tables are refused with one line
unless the user asks to "compare anyway"; the comparison then carries the core's warning.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from liverstiffness.errors import InputError
from liverstiffness.followup import Comparison, ComparisonRefused, compare
from liverstiffness.report import Report

from .i18n import _

REPORT_ID_COLUMN = "report_id"
REPORT_ATTRIBUTE = "LiverStiffness.report."    # + the row's report_id: the report's JSON


@dataclass
class FollowUp:
    """What the panel and the page show: one line, and the comparison's warnings."""

    text: str                                   # the change against repeatability, or why not compared
    comparison: Comparison | None = None        # None: not compared
    warnings: list[str] = field(default_factory=list)
    refused: bool = False                       # different models or cut-off tables: "Compare anyway" compares them

    def to_dict(self) -> dict:
        return {"text": self.text, "warnings": list(self.warnings), "refused": self.refused,
                "compared": self.comparison is not None,
                "beyond": bool(self.comparison and self.comparison.beyond_repeatability)}


# ---------------------------------------------------------------------------------- the one line

def _pct(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def change_text(c: Comparison) -> str:
    """"+0.62 kPa (+24 %) from 2.58 to 3.20 kPa: an increase beyond repeatability (MRE 22 %, this
    model 18.1 %)"; within it: "... : within repeatability (...)"; a changed category is added."""
    model = (_("this model {rc} %").format(rc=_pct(c.model_rc_percent)) if c.model_rc_percent is not None
             else _("this model: not measured"))
    verdict = ((_("an increase beyond repeatability") if c.direction == "increase"
                else _("a decrease beyond repeatability")) if c.beyond_repeatability else _("within repeatability"))
    text = _("{kpa:+.2f} kPa ({pct:+.0f} %) from {before:.2f} to {after:.2f} kPa: {verdict} (MRE {mre} %, {model})").format(
        kpa=c.change_kpa, pct=c.change_percent, before=c.before_kpa, after=c.after_kpa, verdict=verdict,
        mre=_pct(c.mre_rc_percent), model=model)
    if c.before_category != c.after_category:
        text += "; " + _("category {before} → {after}").format(before=c.before_category, after=c.after_category)
    return text


def compare_reports(before: Report, after: Report, compare_anyway: bool = False) -> FollowUp:
    """The earlier report ``before`` against the later ``after``. A refusal (different models or
    cut-off tables) is one line unless ``compare_anyway``; then the comparison warns."""
    try:
        c = compare(before, after, allow_different_models=compare_anyway, allow_different_cutoffs=compare_anyway)
    except ComparisonRefused as exc:   # the panel and the page offer "Compare anyway" instead of --allow-*
        return FollowUp(_("Not compared: the later result {why}. Tick “Compare anyway” to compare them regardless.").format(
            why=exc.problem), refused=True)
    except InputError as exc:
        return FollowUp(_("Not compared: {why}").format(why=exc))
    return FollowUp(change_text(c), c, list(c.warnings))


# ---------------------------------------------------------------------------------- the table's reports

def keep_report(table, row: int, report: Report) -> str:
    """Keep ``report`` with row ``row`` of the results table (saved with the scene); its id."""
    report_id = uuid.uuid4().hex[:12]
    table.SetAttribute(REPORT_ATTRIBUTE + report_id, json.dumps(report.to_dict(), separators=(",", ":")))
    col = table.GetColumnIndex(REPORT_ID_COLUMN)
    if col >= 0:
        table.SetCellText(row, col, report_id)
    return report_id


def _cell(table, row: int, name: str) -> str:
    col = table.GetColumnIndex(name)
    return table.GetCellText(row, col) if col >= 0 else ""


def stored_report(table, row: int) -> Report:
    """The report kept with row ``row``; InputError when it has none (a table of an older version:
    pick that run's report.json instead)."""
    where = _("results table row {n}").format(n=row + 1)
    if table is None or not 0 <= row < table.GetNumberOfRows():
        raise InputError(where, _("does not exist"))
    text = table.GetAttribute(REPORT_ATTRIBUTE + _cell(table, row, REPORT_ID_COLUMN)) if _cell(
        table, row, REPORT_ID_COLUMN) else None
    if not text:
        raise InputError(where, _("has no stored report (made by an older version): pick its report.json instead"))
    try:
        data = json.loads(text)
    except ValueError:
        raise InputError(where, _("its stored report is damaged")) from None
    return Report.from_dict(data, where)


def stored_results(table) -> list[tuple[int, str]]:
    """The rows that can be compared, as (row, label): "2: 2024-05-01 12:00:03, T1w, 3.20 kPa"."""
    if table is None:
        return []
    out = []
    for row in range(table.GetNumberOfRows()):
        report_id = _cell(table, row, REPORT_ID_COLUMN)
        if not report_id or not table.GetAttribute(REPORT_ATTRIBUTE + report_id):
            continue
        try:
            kpa = f"{float(_cell(table, row, 'stiffness_kPa')):.2f} kPa"
        except ValueError:
            kpa = "? kPa"
        out.append((row, f"{row + 1}: {_cell(table, row, 'time')}, {_cell(table, row, 'reference')}, {kpa}"))
    return out


def read_source(source, table=None) -> Report:
    """A side of a comparison: a ``Report``, a results-table row (int), or a report.json (or the
    folder holding it)."""
    if isinstance(source, Report):
        return source
    if isinstance(source, int):
        return stored_report(table, source)
    if source is None or not str(source).strip():
        raise InputError(_("follow-up"), _("pick two results to compare"))
    return Report.read(Path(source))


def compare_sources(before, after, table=None, compare_anyway: bool = False) -> FollowUp:
    """``compare_reports`` on two sides given as ``read_source`` takes them; a side that cannot be
    read is a one-line "Not compared" too."""
    try:
        a, b = read_source(before, table), read_source(after, table)
    except InputError as exc:
        return FollowUp(_("Not compared: {why}").format(why=exc))
    if isinstance(before, int) and before == after:
        return FollowUp(_("Not compared: pick two different results"))
    return compare_reports(a, b, compare_anyway)
