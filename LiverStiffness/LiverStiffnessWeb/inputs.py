"""The "Sequences and patient" card's choices as the logic's inputs: ``ExamNodes`` from the chosen
series, ``PatientFacts`` from the typed numbers, why typed b-values cannot be used, and what is
still missing (or why a series was refused).
"""
from __future__ import annotations

from liverstiffness.errors import InputError
from liverstiffness.manifest import PatientFacts, parse_b_values
from LiverStiffnessLib.logic import missing_inputs
from LiverStiffnessLib.nodes import SEQUENCES, ExamNodes

from . import exams
from .series import AUTO_MASK, LoadedSeries, dwi_node, label_node

# Everything an estimate is computed from: a result is shown only beside these as they were.
INPUT_KEYS = ("t1w", "t2w", "dwi", "mask", "dwi_b", "age", "sex", "bmi", "pdff", "ast", "alt", "platelets")
# The typed numbers (page state key, the name an error gives it); sex is a chooser. The blood tests
# go to ``liverstiffness predict`` as --ast, --alt, --platelets, as on the command line.
NUMBER_FACTS = {"age": "age", "bmi": "BMI", "pdff": "PDFF", "ast": "AST", "alt": "ALT", "platelets": "platelets"}
ROLE_LABELS = {"t1w": "T1w", "t2w": "T2w", "dwi": "DWI", "mask": "liver mask"}


def chosen_exam_nodes(scene, state, series: dict[str, LoadedSeries], auto_mask) -> ExamNodes:
    """The series picked in the choosers as ``ExamNodes``; b-values that do not parse are left out
    here (``b_value_problem`` says why)."""
    pick = {r: series.get(state[r]) if state[r] else None for r in exams.ROLES}
    try:
        b = parse_b_values(state.dwi_b, "DWI b-values") if (state.dwi_b or "").strip() else ()
    except InputError:
        b = ()
    nodes = ExamNodes(t1w=pick["t1w"] and pick["t1w"].node, t2w=pick["t2w"] and pick["t2w"].node,
                      dwi=pick["dwi"] and dwi_node(scene, pick["dwi"]), dwi_b_values=b)
    if state.mask == AUTO_MASK and auto_mask is not None:
        nodes.mask_segmentation, nodes.mask_segment_id = auto_mask.segmentation, auto_mask.segment_id
    elif pick["mask"] is not None:
        nodes.mask_labelmap = label_node(scene, pick["mask"])
    return nodes


def b_value_problem(text: str | None, dwi: LoadedSeries | None, b_values: tuple) -> str | None:
    """Why the typed b-values (``text``; ``b_values``: as parsed) do not fit the chosen DWI; None if they do."""
    if (text or "").strip():
        try:
            parse_b_values(text, "DWI b-values")
        except InputError as exc:
            return str(exc)
    if dwi and b_values and len(b_values) != len(dwi.images):
        return f"The DWI has {len(dwi.images)} volume(s): give {len(dwi.images)} b-value(s)."
    return None


def patient_facts(state) -> PatientFacts:
    """The typed patient facts, validated: InputError names, in one line, the one that is not a
    number or is outside its plausible range (``PatientFacts.validate``)."""
    def num(v, what):
        if v in (None, ""):
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            raise InputError(what, f"{v!r} is not a number") from None

    values = {key: num(state[key], f"patient {what}") for key, what in NUMBER_FACTS.items()}
    return PatientFacts(sex=state.sex or None, **values).validate("patient")


def missing_hint(nodes: ExamNodes, refused: dict[str, str]) -> str | None:
    """What "Estimate stiffness" still needs (``missing_inputs``); where the missing input was in
    the exam but could not be read (``refused``: role → why), why it was refused. Any one of T1w,
    T2w and DWI is enough: a refused one is said by ``sequences_note`` then, not here."""
    reason = missing_inputs(nodes)
    if reason is None:
        return None
    if not nodes.sequences:
        for role in SEQUENCES:
            if role in refused:
                return f"No {ROLE_LABELS[role]}: {refused[role]}. Upload a readable one, or pick another series."
    elif nodes.mask_labelmap is None and nodes.mask_segmentation is None and "mask" in refused:
        return f"No {ROLE_LABELS['mask']}: {refused['mask']}. Upload a readable one, or pick another series."
    return reason


def sequences_note(nodes: ExamNodes, refused: dict[str, str]) -> str:
    """Which sequences the estimate will use, and why each other one will not be (not assigned,
    or its series was refused); empty when no sequence is chosen."""
    if not nodes.sequences:
        return ""
    used = ", ".join(ROLE_LABELS[r] for r in nodes.sequences)
    missing = [f"no {ROLE_LABELS[r]}: {refused.get(r, 'not assigned')}" for r in SEQUENCES if r not in nodes.sequences]
    if not missing:
        return f"The estimate uses {used}."
    return f"The estimate uses {used} only ({'; '.join(missing)})."
