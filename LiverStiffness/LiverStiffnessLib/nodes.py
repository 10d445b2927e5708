"""The panel's and the web page's view of an exam and a result as MRML nodes: plain types that
the logic and the DICOM loader both use (kept apart from ``logic`` so neither imports the other)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from liverstiffness.manifest import PatientFacts
from liverstiffness.report import Report

SEQUENCES = ("t1w", "t2w", "dwi")   # as the core's preprocess.SEQUENCES: the first used is the reference
SEQUENCE_LABELS = {"t1w": "T1w", "t2w": "T2w", "dwi": "DWI"}
LIVER_SEGMENT_NAME = "liver"
LIVER_COLOR = (221 / 255, 130 / 255, 101 / 255)   # Slicer's terminology colour for the liver


@dataclass
class ExamNodes:
    """What the panel selected. The liver is a segmentation + segment, or a labelmap (+ label).

    Any non-empty subset of T1w, T2w and DWI is an exam: a sequence None is not given.
    ``left_out`` (sequence → why) leaves out a sequence that was selected but is unusable (its
    node is then not read), or gives the reason a sequence is missing; the report names it."""

    t1w: object = None
    t2w: object = None
    dwi: object = None                   # scalar/multi-component volume node, or a sequence node
    dwi_b_values: tuple = ()             # s/mm², one per DWI volume/component
    mask_segmentation: object = None
    mask_segment_id: str = ""
    mask_labelmap: object = None
    mask_label: int | None = None
    facts: PatientFacts = field(default_factory=PatientFacts)
    left_out: dict = field(default_factory=dict)   # sequence → why it is not used (a non-empty reason)

    @property
    def sequences(self) -> tuple[str, ...]:
        """The sequences the estimate uses: selected and not left out, in SEQUENCES order."""
        return tuple(n for n in SEQUENCES if getattr(self, n) is not None and not self.left_out.get(n))

    @property
    def reference_name(self) -> str | None:
        """The sequence whose grid the results go on: the first used of T1w, T2w, DWI."""
        return self.sequences[0] if self.sequences else None

    def volume_node(self, name: str | None):
        """The scalar or vector volume node of sequence ``name`` (a DWI sequence node: its first
        volume, whose geometry the DWI's images share); None when it is not selected."""
        node = getattr(self, name) if name else None
        if node is not None and node.IsA("vtkMRMLSequenceNode"):
            node = node.GetNthDataNode(0) if node.GetNumberOfDataNodes() else None
        return node

    @property
    def reference_node(self):
        """The volume node the results are placed like (T1w when used, else T2w, else the DWI)."""
        return self.volume_node(self.reference_name)


@dataclass
class AutoMaskResult:
    """What "Segment liver" made: a new segmentation node to check and edit, and how sure it was."""

    segmentation: object
    segment_id: str
    info: dict                           # volume, confidence, model (as in a report's "mask" entry)


@dataclass
class ResultNodes:
    report: Report
    attention: dict                      # kind → volume node (on the reference's geometry), whole model crop
    table: object
    row: int
    output_dir: Path
    liver_only: dict = field(default_factory=dict)   # kind → the same map zeroed outside the liver (made on demand)
    # A model trained on elastograms (both None without a map decoder):
    stiffness_map: object = None         # volume node, kPa over the liver on the reference's geometry, 0 outside
    stiffness_regions: object = None     # table node: region, mean kPa (the report's regional means)
