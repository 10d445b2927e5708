"""The panel's and the web page's view of an exam and a result as MRML nodes: plain types that
the logic and the DICOM loader both use (kept apart from ``logic`` so neither imports the other)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from liverstiffness.manifest import PatientFacts
from liverstiffness.report import Report

LIVER_SEGMENT_NAME = "liver"
LIVER_COLOR = (221 / 255, 130 / 255, 101 / 255)   # Slicer's terminology colour for the liver


@dataclass
class ExamNodes:
    """What the panel selected. The liver is a segmentation + segment, or a labelmap (+ label)."""

    t1w: object = None
    t2w: object = None
    dwi: object = None                   # scalar/multi-component volume node, or a sequence node
    dwi_b_values: tuple = ()             # s/mm², one per DWI volume/component
    mask_segmentation: object = None
    mask_segment_id: str = ""
    mask_labelmap: object = None
    mask_label: int | None = None
    facts: PatientFacts = field(default_factory=PatientFacts)


@dataclass
class AutoMaskResult:
    """What "Segment liver" made: a new segmentation node to check and edit, and how sure it was."""

    segmentation: object
    segment_id: str
    info: dict                           # volume, confidence, model (as in a report's "mask" entry)


@dataclass
class ResultNodes:
    report: Report
    attention: dict                      # kind → volume node (on the T1w geometry), whole model crop
    table: object
    row: int
    output_dir: Path
    liver_only: dict = field(default_factory=dict)   # kind → the same map zeroed outside the liver (made on demand)
