"""Choose the T1w, T2w and DWI series of a study by the rules, and say why.

Every series is judged for every role: rejected (with the first reason), or a candidate with
its points and the preferences it met. The best candidate of each role is chosen. A role with no
candidate is missing (``StudySelection.missing`` says why; the exam runs on the others, as any
non-empty subset of T1w, T2w and DWI does); a tie at the top, or a study with none of the three,
stops with :class:`SelectionError` (exit 2 on the command line) whose message holds the table,
unless the user named the series (``--t1w-series UID`` or a series number). The first chosen of
T1w, T2w, DWI is the reference: the mask, the attention maps and the DICOM SEG and Parametric
Map are on its grid. The liver mask may come from a DICOM SEG in the study.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .index import Instance, Series, StudyIndex, index_study
from .rules import ROLES, Rules, load_rules

ROLE_NAMES = {"t1w": "T1w", "t2w": "T2w", "dwi": "DWI"}


def no_match_reason(role: str) -> str:
    """Why a role is missing from a study (report.json's ``sequences_missing`` carries it)."""
    return f"no series in the study matched the {ROLE_NAMES[role]} rules"


class SelectionError(InputError):
    """A role is missing or ambiguous; the message ends with the table of series considered."""


@dataclass
class Verdict:
    """How one series fares for one role."""

    candidate: bool
    points: float = 0.0
    reasons: list[str] = field(default_factory=list)   # why rejected, or the preferences met

    def short(self) -> str:
        if not self.candidate:
            return "no: " + (self.reasons[0] if self.reasons else "")
        return f"{self.points:+g}" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


@dataclass
class RoleChoice:
    role: str
    series: Series
    instances: list[Instance]          # the instances read (the in-phase echo only, for a dual-echo T1w)
    how: str                           # "rules" or the option that named it
    why: str

    def as_dict(self) -> dict:
        s = self.series
        return {"series_uid": s.uid, "series_number": s.number, "description": s.description, "how": self.how,
                "why": self.why, "instances": len(self.instances),
                "echo_time_ms": sorted({i.echo_time_ms for i in self.instances if i.echo_time_ms is not None}),
                "b_values": list(s.b_values) if self.role == "dwi" else []}


@dataclass
class StudySelection:
    index: StudyIndex
    rules: Rules
    verdicts: dict                     # series uid -> {role: Verdict}
    chosen: dict                       # role -> RoleChoice, for the roles found (in ROLES order)
    mask_series: Series | None = None  # a DICOM SEG with a liver segment, when the study has one
    missing: dict = field(default_factory=dict)   # role -> why it has no series (no candidate, or left out)

    @property
    def reference_role(self) -> str:
        """The first chosen of T1w, T2w and DWI: the grid of the mask, the maps, the SEG and the map."""
        return next(role for role in ROLES if role in self.chosen)

    def leave_out(self, role: str, reason: str) -> None:
        """Do not use ``role`` (``--leave-out``): it becomes missing with ``reason``; leaving out the
        last role is an InputError."""
        if role not in self.chosen:
            return
        if len(self.chosen) == 1:
            raise InputError(f"--leave-out {role}", f"leaves the study {self.index.folder} with no T1w, T2w or DWI series")
        del self.chosen[role]
        self.missing[role] = reason

    def table_rows(self) -> list[dict]:
        rows = []
        for s in self.index.series:
            picked = [ROLE_NAMES[r] for r, c in self.chosen.items() if c.series.uid == s.uid]
            if self.mask_series is not None and s.uid == self.mask_series.uid:
                picked.append("mask")
            rows.append({"number": s.number, "description": s.description, "uid": s.uid, "modality": s.modality,
                         "images": len(s.instances), "orientation": s.orientation,
                         "echo_time_ms": list(s.echo_times_ms), "repetition_time_ms": s.repetition_time_ms,
                         "flip_angle_deg": s.flip_angle_deg, "b_values": list(s.b_values),
                         "image_type": "\\".join(s.image_type), "chosen_as": picked,
                         **{role: self.verdicts[s.uid][role].short() for role in ROLES if s.uid in self.verdicts}})
        return rows

    def format_table(self) -> str:
        return format_table(self.index, self.verdicts, self.chosen, self.mask_series, self.missing)

    def report(self) -> dict:
        """The "study" entry of report.json."""
        return {"folder": str(self.index.folder), "study_uid": self.index.study_uid, "rules": self.rules.name,
                "rules_file": self.rules.source, "chosen": {r: c.as_dict() for r, c in self.chosen.items()},
                "missing": dict(self.missing), "reference": self.reference_role,
                "mask_series_uid": self.mask_series.uid if self.mask_series is not None else None,
                "series": self.table_rows(), "skipped_files": self.index.skipped_files}


def judge(series: Series, rules: Rules, role: str) -> Verdict:
    """Whether ``series`` may be the ``role`` series under ``rules``, and its points."""
    rule = rules.roles[role]
    if series.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.66") or series.modality in ("SEG", "SR", "PR", "KO"):
        return Verdict(False, reasons=[f"not an image series ({series.modality})"])
    if series.multiframe:
        return Verdict(False, reasons=["enhanced multi-frame images are not read yet"])
    for clause in rules.exclude_always:
        hit, seen = clause.check(series)
        if hit:
            return Verdict(False, reasons=[f"{clause.why}: {seen[0]}"])
    ok, seen = rule.require.check(series)
    if not ok:
        return Verdict(False, reasons=seen)
    for clause in rule.exclude:
        hit, seen = clause.check(series)
        if hit:
            return Verdict(False, reasons=[f"{clause.why}: {seen[0]}"])
    if rule.echo == "in_phase" and not _in_phase_instances(series):
        return Verdict(False, reasons=["no in-phase echo"])
    points, met = 0.0, []
    for clause in rule.prefer:
        hit, _ = clause.check(series)
        if hit:
            points += clause.points
            met.append(f"{clause.why} {clause.points:+g}")
    return Verdict(True, points, met)


def _in_phase_instances(series: Series) -> list[Instance]:
    """The instances of the first (shortest) in-phase echo time."""
    in_phase = [t for t in series.echo_times_ms if series.echo_phase(t) == "in"]
    if not in_phase:
        return []
    return [i for i in series.instances if i.echo_time_ms is not None and round(i.echo_time_ms, 3) == in_phase[0]]


def _instances_for(role: str, series: Series, rules: Rules) -> list[Instance]:
    if role == "dwi":
        return [i for i in series.instances if i.b_value is not None]
    if rules.roles[role].echo == "in_phase" and len(series.echo_times_ms) > 1:
        return _in_phase_instances(series) or series.instances
    return series.instances


def select_series(index: StudyIndex, rules: Rules | None = None, overrides: dict | None = None,
                  need_mask: bool = False, mask_override: str | None = None, find_mask: bool = False) -> StudySelection:
    """Apply ``rules`` to every series of ``index``; ``overrides`` maps a role to a series UID or
    number chosen by the user. A role with no candidate is left out (``missing``); raises
    :class:`SelectionError` with the table when a role has a tie or no role has a series.
    ``need_mask``: the liver mask must come from a SEG in the study; ``find_mask``: use one when
    there is one."""
    rules = rules or load_rules()
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    verdicts = {s.uid: {role: judge(s, rules, role) for role in ROLES} for s in index.series}
    chosen, problems, missing = {}, [], {}
    for role in ROLES:
        option = f"--{role}-series"
        if role in overrides:
            s = index.find(str(overrides[role]))
            if s is None:
                raise InputError(f"{option} {overrides[role]}", f"no such series in the study (series: "
                                 f"{', '.join(x.label() for x in index.series)})")
            chosen[role] = RoleChoice(role, s, _instances_for(role, s, rules), option, f"named by {option}")
            continue
        cands = sorted(((verdicts[s.uid][role], s) for s in index.series if verdicts[s.uid][role].candidate),
                       key=lambda vs: -vs[0].points)
        if not cands:
            missing[role] = no_match_reason(role)
            continue
        best = [vs for vs in cands if vs[0].points == cands[0][0].points]
        if len(best) > 1:
            problems.append(f"{ROLE_NAMES[role]} is ambiguous: {', '.join(s.label() for _, s in best)} score "
                            f"{best[0][0].points:+g} each (choose one with {option} UID or number)")
            continue
        verdict, s = cands[0]
        runner = f"; next best {cands[1][1].label()} {cands[1][0].points:+g}" if len(cands) > 1 else "; the only candidate"
        chosen[role] = RoleChoice(role, s, _instances_for(role, s, rules), "rules",
                                  f"{verdict.points:+g} points ({'; '.join(verdict.reasons) or 'no preference met'}){runner}")
    mask_series = (_liver_seg(index, mask_override, problems if need_mask else [])
                   if (need_mask or find_mask or mask_override) else None)
    if len(missing) == len(ROLES):
        problems.insert(0, "no T1w, T2w or DWI series: no series matched the rules for any of them (name one "
                           "with --t1w-series, --t2w-series or --dwi-series UID, or edit the rules)")
    if problems:
        table = format_table(index, verdicts, chosen, mask_series, missing)
        raise SelectionError(f"study {index.folder}", "; ".join(problems) + f"\n{table}")
    return StudySelection(index, rules, verdicts, chosen, mask_series, missing)


def _liver_seg(index: StudyIndex, override: str | None, problems: list) -> Series | None:
    from .seg import liver_segment_number

    if override:
        s = index.find(override)
        if s is None or s not in index.seg_series:
            raise InputError(f"--mask-series {override}", "is not a DICOM SEG series of the study")
        return s
    found = [s for s in index.seg_series if liver_segment_number(s.files[0]) is not None]
    if not found:
        problems.append("no DICOM SEG with a liver segment in the study (give --mask FILE or --mask auto)")
        return None
    if len(found) > 1:
        problems.append(f"{len(found)} liver SEG series ({', '.join(s.label() for s in found)}); choose one with --mask-series")
        return None
    return found[0]


def format_table(index: StudyIndex, verdicts: dict, chosen: dict, mask_series: Series | None = None,
                 missing: dict | None = None) -> str:
    """The series considered, one line each, with the verdict for each role, what was chosen and
    which roles are missing (and why)."""
    lines = [f"Series of study {index.study_uid} in {index.folder} ({len(index.series)} series"
             + (f", {index.skipped_files} non-DICOM file(s) skipped" if index.skipped_files else "") + "):"]
    for s in index.series:
        mark = [ROLE_NAMES[r] for r, c in chosen.items() if c.series.uid == s.uid]
        if mask_series is not None and s.uid == mask_series.uid:
            mark.append("mask")
        te = "/".join(f"{t:g}" for t in s.echo_times_ms) or "-"
        b = "/".join(f"{v:g}" for v in s.b_values) or "-"
        lines.append(f"  {'→ ' + ','.join(mark) if mark else '':<12}{s.label()[:44]:<45} {s.modality:<4} n={len(s.instances):<4}"
                     f"{s.orientation:<9} TE {te} ms, TR {s.repetition_time_ms if s.repetition_time_ms is not None else '-'} ms, "
                     f"b {b}  uid {s.uid}")
        for role in ROLES:
            v = verdicts.get(s.uid, {}).get(role)
            if v is not None:
                lines.append(f"  {'':<14}{ROLE_NAMES[role]:<4} {v.short()}")
    for role in ROLES:
        if role in chosen:
            lines.append(f"  {ROLE_NAMES[role]}: {chosen[role].series.label()} — {chosen[role].why}")
        elif role in (missing or {}):
            lines.append(f"  {ROLE_NAMES[role]}: none — {missing[role]} (runs without it; name a "
                         f"series with --{role}-series UID)")
    return "\n".join(lines)


def select_study(folder: str | Path, rules_path=None, overrides: dict | None = None, need_mask: bool = False,
                 mask_override: str | None = None, study_uid: str | None = None, find_mask: bool = False) -> StudySelection:
    """Index ``folder`` and choose its series (the one call the command line makes)."""
    return select_series(index_study(folder, study_uid), load_rules(rules_path), overrides, need_mask, mask_override,
                         find_mask)
