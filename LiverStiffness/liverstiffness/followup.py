"""Follow-up: did the liver stiffness change between two exams of one patient beyond what the
measurement repeats to?

Two thresholds, both as repeatability coefficients (RC: the change that two measurements of an
unchanged liver stay within in 95 % of cases, 2.77 × the within-subject SD, here on ln kPa so
that it is a percentage): MR elastography's own, from published test–retest studies (about
19–22 %; the upper end is used), and this model's own, measured on phantom exams re-acquired with
new noise, positioning, bias field and a re-drawn mask (``experiments/test_retest.py``;
bench/RESULTS.md). A change must exceed the larger of the two to be called a change.

Two reports are compared only when they come from the same model and the same category cut-off
table; anything else is refused unless the caller says so, and then the comparison says it too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .errors import InputError
from .report import Report

MRE_RC_PERCENT = 22.0       # MRE test–retest repeatability coefficient, about 19–22 % (upper end)
# The shipped demo model's own test–retest RC on phantom re-acquisitions at the same site: 18.1 %
# (95 % CI 14.2–22.1) over 40 patients (experiments/test_retest.py, bench/RESULTS.md "Test–retest");
# other models: not measured.
MEASURED_MODEL_RC_PERCENT = {("liverstiffness-transformer-demo", "0.1.0"): 18.1}


class ComparisonRefused(InputError):
    """Two reports that must not be compared silently: ``differs`` is "model" or "cutoffs". The
    message names what differs; each front end says how to compare anyway (the command line's
    --allow-different-*, the panel's and the page's "Compare anyway")."""

    def __init__(self, differs: str, problem: str):
        self.differs = differs
        super().__init__("AFTER", problem)


#: The command line's way past each refusal.
ALLOW_OPTION = {"model": "--allow-different-models", "cutoffs": "--allow-different-cutoffs"}


@dataclass
class Comparison:
    before_kpa: float
    after_kpa: float
    change_kpa: float
    change_percent: float                 # (after / before − 1) × 100
    mre_rc_percent: float
    model_rc_percent: float | None        # None: not measured for this model
    threshold_percent: float              # the larger RC: a change must exceed it
    beyond_repeatability: bool
    direction: str                        # "increase", "decrease" or "no change beyond repeatability"
    before_category: str
    after_category: str
    cutoff_tables: list[str]
    model: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary_line(self) -> str:
        model_rc = f"model {self.model_rc_percent:.0f} %" if self.model_rc_percent is not None else "model not measured"
        verdict = (f"{self.direction} beyond repeatability" if self.beyond_repeatability
                   else "no change beyond repeatability")
        warn = f"; {len(self.warnings)} warning(s)" if self.warnings else ""
        return (f"{self.before_kpa:.2f} → {self.after_kpa:.2f} kPa ({self.change_kpa:+.2f} kPa, "
                f"{self.change_percent:+.0f} %): {verdict} (RC: MRE {self.mre_rc_percent:.0f} %, {model_rc}); "
                f"category {self.before_category} → {self.after_category}{warn}")


def _ratio_rc(percent: float) -> float:
    """An RC in percent as a bound on |ln(after / before)|."""
    return math.log1p(percent / 100.0)


def model_identity(report: Report) -> tuple:
    m = report.model or {}
    return m.get("name"), m.get("version"), tuple(sorted((m.get("sha256") or {}).items()))


def compare(before: Report, after: Report, allow_different_models: bool = False,
            allow_different_cutoffs: bool = False) -> Comparison:
    """The change from ``before`` to ``after`` (see the module notes)."""
    warnings = []
    if model_identity(before) != model_identity(after):
        what = (f"another model ({after.model.get('name')} {after.model.get('version')}) than the first "
                f"({before.model.get('name')} {before.model.get('version')})"
                if model_identity(before)[:2] != model_identity(after)[:2] else "other weights of the same model name")
        if not allow_different_models:
            raise ComparisonRefused("model", f"was estimated by {what}: estimates of two models are not comparable")
        warnings.append(f"the two estimates come from different models ({what}): part of the change may be the model's")
    if before.cutoff_name != after.cutoff_name:
        if not allow_different_cutoffs:
            raise ComparisonRefused("cutoffs", f"uses the cut-off table {after.cutoff_name}, the first "
                                               f"{before.cutoff_name}: their categories are not comparable")
        warnings.append(f"categories from different cut-off tables ({before.cutoff_name}, {after.cutoff_name})")
    pb, pa = before.patient or {}, after.patient or {}
    if pb.get("sex") and pa.get("sex") and pb["sex"] != pa["sex"]:
        warnings.append(f"patient sex differs ({pb['sex']} then {pa['sex']}): are these the same patient?")
    if pb.get("age") is not None and pa.get("age") is not None and pa["age"] < pb["age"]:
        warnings.append(f"patient age went down ({pb['age']} then {pa['age']}): is the first report the earlier exam?")
    if before.automatic_mask != after.automatic_mask:
        warnings.append("one liver mask was automatic and the other given: masks differ more than repeat drawings do")
    model_rc = MEASURED_MODEL_RC_PERCENT.get(model_identity(after)[:2])
    threshold = max(MRE_RC_PERCENT, model_rc or 0.0)
    d = math.log(after.stiffness_kpa / before.stiffness_kpa)
    beyond = abs(d) > _ratio_rc(threshold)
    return Comparison(
        before_kpa=before.stiffness_kpa, after_kpa=after.stiffness_kpa,
        change_kpa=round(after.stiffness_kpa - before.stiffness_kpa, 3), change_percent=round(100 * math.expm1(d), 1),
        mre_rc_percent=MRE_RC_PERCENT, model_rc_percent=model_rc, threshold_percent=threshold,
        beyond_repeatability=beyond,
        direction=("increase" if d > 0 else "decrease") if beyond else "no change beyond repeatability",
        before_category=before.category, after_category=after.category,
        cutoff_tables=[before.cutoff_name, after.cutoff_name],
        model=f"{after.model.get('name')} {after.model.get('version')}", warnings=warnings)
