"""Follow-up on the page: the shown result against an earlier report of the same patient, in the
one line of the Slicer panel (``LiverStiffnessLib.followup_nodes``, over the core's ``compare``).

The earlier report is another exam's result in this session (each estimate's report is kept,
in memory, after its exam is closed: only its numbers, no image or file) or a report.json the
user uploads. Reports of another model or cut-off table are refused in one line unless
"Compare anyway" is ticked; the comparison then carries the warning.

``FollowUpComparison`` is a part of ``LiverStiffnessWebApp`` (app.py), kept here for the size of
that file: its methods use the app's state and result.
"""
from __future__ import annotations

import json
import time

from liverstiffness.errors import InputError
from liverstiffness.report import Report
from LiverStiffnessLib.followup_nodes import compare_reports

from .exams import safe_upload_name
from .messages import public

MAX_REPORT_BYTES = 2_000_000     # a report.json is a few kB


class FollowUpComparison:
    """The follow-up actions of ``LiverStiffnessWebApp``: earlier reports, upload, compare."""

    def _init_followup(self) -> None:
        self.session_reports: list[tuple[str, Report]] = []   # (label, report): this session's results and uploads
        self.shown_report: int | None = None                 # the index of the shown result's report
        s = self.state
        s.followup_items = []        # the earlier reports offered: every one but the shown result's
        s.followup_before = None     # the chosen one (an index into session_reports)
        s.followup_anyway = False
        s.followup = None            # FollowUp.to_dict(): text, warnings, refused
        s.change("followup_before", "followup_anyway")(self._on_followup_change)

    def _remember_result(self, report: Report, exam_label: str) -> None:
        """A new result is shown: keep its report for later comparisons, offer the others."""
        self.session_reports.append((f"{exam_label}: {report.stiffness_kpa:.2f} kPa ({time.strftime('%H:%M:%S')})", report))
        self.shown_report = len(self.session_reports) - 1
        with self.state:
            self.state.followup_before, self.state.followup = None, None
            self._offer_reports()

    def _forget_shown_result(self) -> None:
        """The shown result goes (its report stays in the list for the next exam)."""
        self.shown_report = None
        with self.state:
            self.state.followup_before, self.state.followup = None, None
            self._offer_reports()

    def _offer_reports(self) -> None:
        self.state.followup_items = [{"title": label, "value": i} for i, (label, _) in enumerate(self.session_reports)
                                     if i != self.shown_report]

    def upload_earlier_report(self, files) -> None:
        """A report.json from the browser: offered, chosen and compared (never written to disk)."""
        files = files or []
        if not files:
            return
        f = files[0]
        name = safe_upload_name(f.get("name", "report.json"))
        content = f.get("content") or b""
        content = b"".join(content) if isinstance(content, list) else content
        try:
            if len(content) > MAX_REPORT_BYTES:
                raise InputError(name, f"is {len(content) / 1e6:.1f} MB: not a report.json (a few kB)")
            try:
                data = json.loads(content)
            except ValueError:
                raise InputError(name, "is not a report.json (not JSON)") from None
            report = Report.from_dict(data, name)
        except InputError as exc:
            with self.state:
                self.state.followup = {"text": public(f"Not compared: {exc}"), "warnings": [], "refused": False,
                                       "compared": False, "beyond": False}
            return
        self.session_reports.append((f"{name} (uploaded): {report.stiffness_kpa:.2f} kPa", report))
        with self.state:
            self._offer_reports()
            self.state.followup_before = len(self.session_reports) - 1
        self._on_followup_change()

    def _on_followup_change(self, **_) -> None:
        """Compare the chosen earlier report with the shown result (nothing chosen: no line)."""
        i = self.state.followup_before
        after = self.session_reports[self.shown_report][1] if self.shown_report is not None else None
        if i is None or after is None or not (0 <= int(i) < len(self.session_reports)) or int(i) == self.shown_report:
            with self.state:
                self.state.followup = None
            return
        result = compare_reports(self.session_reports[int(i)][1], after, bool(self.state.followup_anyway))
        shown = result.to_dict()
        shown["text"] = public(shown["text"], self.data)
        shown["warnings"] = [public(w, self.data) for w in shown["warnings"]]
        with self.state:
            self.state.followup = shown
