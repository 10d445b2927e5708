"""Series selection rules: which series of a study is the T1w, the T2w and the DWI.

A rules file is JSON (``default_rules.json`` beside this module is the shipped one)::

    {"name": "...",
     "exclude_always": [{"if": {CONDITIONS}, "why": "localiser"}, ...],
     "roles": {
        "t1w": {"require": {CONDITIONS},
                "exclude": [{"if": {CONDITIONS}, "why": "..."}],
                "prefer":  [{"if": {CONDITIONS}, "points": 2, "why": "..."}],
                "echo": "in_phase"},
        "t2w": {...}, "dwi": {...}}}

A series is a candidate for a role when it meets every ``require`` condition and no ``exclude``
entry (nor an ``exclude_always`` one) applies; candidates are ranked by the points of the
``prefer`` entries they meet. A tie at the top is ambiguous (the user chooses). ``"echo":
"in_phase"`` reads only the in-phase echo of a dual-echo (in/opposed-phase) series.

Conditions (all given must hold; a missing header value fails a condition):

=========================  ==================================================================
``modality``               "MR" (case-insensitive)
``description``            regular expression searched in SeriesDescription (case-insensitive)
``protocol``               regular expression searched in ProtocolName
``image_type_any``         list: ImageType holds at least one of these values
``image_type_all``         list: ImageType holds all of these values
``scanning_sequence_any``  list: ScanningSequence holds one of these (SE, GR, IR, EP, RM)
``sequence_variant_any``   list: SequenceVariant holds one of these (SK, SS, SP, MP, OSP, ...)
``scan_options_any``       list: ScanOptions holds one of these (FS, SAT1, ...)
``echo_time_ms``           [low, high]: every echo time of the series in range (null: open)
``repetition_time_ms``     [low, high]
``flip_angle_deg``         [low, high]
``n_echoes``               [low, high]: number of distinct echo times
``n_b_values``             [low, high]: number of distinct b-values (s/mm²; 0 when none)
``max_b_value``            [low, high]: the highest b-value (s/mm²)
``contrast_agent``         true/false: ContrastBolusAgent is filled in
``orientation``            "axial", "coronal", "sagittal" or "oblique" (normal within 30°)
``in_opposed_phase``       true/false: the series has both an in-phase and an opposed-phase echo
``has_in_phase_echo``      true/false: at least one echo is in phase (from TE and field strength)
``min_slices``             the series covers at least this many slice positions
=========================  ==================================================================
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .index import Series

DEFAULT_RULES = Path(__file__).with_name("default_rules.json")
ROLES = ("t1w", "t2w", "dwi")
ECHO_CHOICES = (None, "in_phase")


def _in_range(value, bounds) -> bool:
    low, high = bounds
    return value is not None and (low is None or value >= low) and (high is None or value <= high)


def _fmt_range(bounds, unit: str = "") -> str:
    low, high = bounds
    if low is None:
        return f"≤ {high:g}{unit}"
    if high is None:
        return f"≥ {low:g}{unit}"
    return f"{low:g}–{high:g}{unit}"


def _fmt_values(values, unit: str = "") -> str:
    return "/".join(f"{v:g}" for v in values) + unit if values else "none"


def _joined(values, empty: str = "?") -> str:
    return "\\".join(values) or empty


def _has_any(have: tuple[str, ...], wanted) -> bool:
    return any(str(w).upper() in have for w in wanted)


# Each condition: (test(series, value) -> bool, text(series, value) -> str saying what was seen).
CONDITIONS = {
    "modality": (lambda s, v: s.modality == str(v).upper(), lambda s, v: f"modality {s.modality or '?'}"),
    "description": (lambda s, v: re.search(v, s.description, re.IGNORECASE) is not None,
                    lambda s, v: f"description {s.description!r}"),
    "protocol": (lambda s, v: re.search(v, s.protocol, re.IGNORECASE) is not None,
                 lambda s, v: f"protocol {s.protocol!r}"),
    "image_type_any": (lambda s, v: _has_any(s.image_type, v), lambda s, v: f"ImageType {_joined(s.image_type)}"),
    "image_type_all": (lambda s, v: all(str(w).upper() in s.image_type for w in v),
                       lambda s, v: f"ImageType {_joined(s.image_type)}"),
    "scanning_sequence_any": (lambda s, v: _has_any(s.scanning_sequence, v),
                              lambda s, v: f"ScanningSequence {_joined(s.scanning_sequence)}"),
    "sequence_variant_any": (lambda s, v: _has_any(s.sequence_variant, v),
                             lambda s, v: f"SequenceVariant {_joined(s.sequence_variant)}"),
    "scan_options_any": (lambda s, v: _has_any(s.scan_options, v),
                         lambda s, v: f"ScanOptions {_joined(s.scan_options, 'none')}"),
    "echo_time_ms": (lambda s, v: bool(s.echo_times_ms) and all(_in_range(t, v) for t in s.echo_times_ms),
                     lambda s, v: f"TE {_fmt_values(s.echo_times_ms, ' ms')} (wanted {_fmt_range(v, ' ms')})"),
    "repetition_time_ms": (lambda s, v: _in_range(s.repetition_time_ms, v),
                           lambda s, v: f"TR {s.repetition_time_ms if s.repetition_time_ms is not None else '?'} ms "
                                        f"(wanted {_fmt_range(v, ' ms')})"),
    "flip_angle_deg": (lambda s, v: _in_range(s.flip_angle_deg, v),
                       lambda s, v: f"flip {s.flip_angle_deg if s.flip_angle_deg is not None else '?'}° "
                                    f"(wanted {_fmt_range(v, '°')})"),
    "n_echoes": (lambda s, v: _in_range(len(s.echo_times_ms), v),
                 lambda s, v: f"{len(s.echo_times_ms)} echo time(s) (wanted {_fmt_range(v)})"),
    "n_b_values": (lambda s, v: _in_range(len(s.b_values), v),
                   lambda s, v: f"b-values {_fmt_values(s.b_values)} (wanted {_fmt_range(v)} of them)"),
    "max_b_value": (lambda s, v: bool(s.b_values) and _in_range(max(s.b_values), v),
                    lambda s, v: f"highest b {max(s.b_values) if s.b_values else 'none'} (wanted {_fmt_range(v, ' s/mm²')})"),
    "contrast_agent": (lambda s, v: bool(s.contrast_agent) == bool(v),
                       lambda s, v: f"contrast agent {s.contrast_agent!r}" if s.contrast_agent else "no contrast agent"),
    "orientation": (lambda s, v: s.orientation == str(v).lower(), lambda s, v: f"{s.orientation} slices"),
    "in_opposed_phase": (lambda s, v: _in_opposed(s) == bool(v), lambda s, v: _phase_text(s)),
    "has_in_phase_echo": (lambda s, v: any(s.echo_phase(t) == "in" for t in s.echo_times_ms) == bool(v),
                          lambda s, v: _phase_text(s)),
    "min_slices": (lambda s, v: s.n_positions >= int(v), lambda s, v: f"{s.n_positions} slice position(s)"),
}


def _in_opposed(s: Series) -> bool:
    phases = {s.echo_phase(t) for t in s.echo_times_ms}
    return {"in", "opposed"} <= phases


def _phase_text(s: Series) -> str:
    if not s.echo_times_ms:
        return "no echo time"
    at = f" at {s.field_strength_t:g} T" if s.field_strength_t else " (field strength unknown)"
    return "TE " + ", ".join(f"{t:g} ms {s.echo_phase(t)}" for t in s.echo_times_ms) + at


@dataclass(frozen=True)
class Clause:
    """Conditions that hold together, and what it means when they do."""

    conditions: dict
    why: str = ""
    points: float = 0.0

    def check(self, series: Series) -> tuple[bool, list[str]]:
        """Whether every condition holds, and what was seen for the ones that did not (or, when
        all hold, for all of them)."""
        failed, seen = [], []
        for key, value in self.conditions.items():
            test, text = CONDITIONS[key]
            ok = test(series, value)
            said = text(series, value)
            if not ok and key in ("description", "protocol"):
                said += f" does not match /{value}/"
            (seen if ok else failed).append(said)
        return not failed, (failed or seen)


@dataclass(frozen=True)
class RoleRule:
    role: str
    require: Clause
    exclude: tuple[Clause, ...] = ()
    prefer: tuple[Clause, ...] = ()
    echo: str | None = None


@dataclass(frozen=True)
class Rules:
    name: str
    roles: dict
    exclude_always: tuple[Clause, ...] = ()
    source: str = ""
    raw: dict = field(default_factory=dict, compare=False)


def _clause(d: dict, where: str, points: bool = False) -> Clause:
    if not isinstance(d, dict) or "if" not in d or not isinstance(d["if"], dict):
        raise InputError(where, 'each entry must be {"if": {conditions}, "why": "...", ...}')
    _check_conditions(d["if"], where)
    if points and not isinstance(d.get("points", 1), (int, float)):
        raise InputError(where, f"points must be a number, got {d.get('points')!r}")
    return Clause(dict(d["if"]), str(d.get("why", "")), float(d.get("points", 1)) if points else 0.0)


def _check_conditions(conditions: dict, where: str) -> None:
    for key, value in conditions.items():
        if key not in CONDITIONS:
            raise InputError(where, f"unknown condition {key!r} (known: {', '.join(CONDITIONS)})")
        if key in ("echo_time_ms", "repetition_time_ms", "flip_angle_deg", "n_echoes", "n_b_values", "max_b_value"):
            if not (isinstance(value, list) and len(value) == 2
                    and all(v is None or isinstance(v, (int, float)) for v in value)):
                raise InputError(where, f"{key} must be [low, high] (numbers or null), got {value!r}")
        if key in ("description", "protocol"):
            try:
                re.compile(value)
            except (re.error, TypeError) as exc:
                raise InputError(where, f"{key} /{value}/ is not a regular expression ({exc})") from None


def parse_rules(data: dict, source: str = "rules") -> Rules:
    """Rules from their JSON form; every mistake is an InputError naming where it is."""
    if not isinstance(data, dict) or not isinstance(data.get("roles"), dict):
        raise InputError(source, 'must be a JSON object with "roles"')
    missing = [r for r in ROLES if r not in data["roles"]]
    if missing:
        raise InputError(source, f"has no rule for {', '.join(missing)}")
    roles = {}
    for role in ROLES:
        r = data["roles"][role]
        where = f"{source} roles.{role}"
        require = r.get("require", {})
        if not isinstance(require, dict):
            raise InputError(where, "require must be an object of conditions")
        _check_conditions(require, f"{where}.require")
        if r.get("echo") not in ECHO_CHOICES:
            raise InputError(where, f"echo must be null or 'in_phase', got {r.get('echo')!r}")
        roles[role] = RoleRule(
            role, Clause(dict(require)),
            tuple(_clause(c, f"{where}.exclude[{i}]") for i, c in enumerate(r.get("exclude", []))),
            tuple(_clause(c, f"{where}.prefer[{i}]", points=True) for i, c in enumerate(r.get("prefer", []))),
            r.get("echo"))
    always = tuple(_clause(c, f"{source} exclude_always[{i}]") for i, c in enumerate(data.get("exclude_always", [])))
    return Rules(str(data.get("name", source)), roles, always, source, data)


def load_rules(path: str | Path | None = None) -> Rules:
    """The rules in ``path`` (JSON), or the shipped default rules."""
    path = Path(path) if path else DEFAULT_RULES
    if not path.is_file():
        raise InputError(f"--rules {path}", "file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--rules {path}", f"is not valid JSON ({exc})") from None
    return parse_rules(data, f"rules {path.name}")
