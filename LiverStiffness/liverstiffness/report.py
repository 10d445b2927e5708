"""The result of one estimate: one typed record that ``predict`` builds and every writer and
front end reads (report.json, the HTML page, the DICOM SR, the batch table, the Slicer panel,
the web page).

Units are in the field names (``_kpa``, ``_s``, ``_ml``) or said beside the field. The nested
parts (attention summaries, preprocessing details, QA measurements) stay plain dicts: they are
written as they are and read only for display. ``report.json`` is :meth:`Report.to_json`;
readers use :meth:`Report.read`, which refuses a file of an unknown schema instead of guessing.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import InputError
from .outputs import REPORT

_LABEL = {"t1w": "T1w", "t2w": "T2w", "dwi": "DWI"}   # as preprocess.SEQUENCE_LABELS (the report imports no pipeline)

SCHEMA_VERSION = 3
READABLE_SCHEMAS = (1, 2, 3)    # 2 added the sequences used and missing (1: all three, always); 3 the stiffness map
# Extras a workflow or a model adds; left out of report.json when absent, as before the type existed.
_OPTIONAL = ("study", "patient_facts_source", "dicom_outputs", "stiffness_map")


@dataclass
class Report:
    stiffness_kpa: float                          # the estimate (MRE-equivalent shear stiffness, kPa)
    interval_kpa: list[float]                     # [low, high] of the prediction interval, kPa
    interval_coverage: float                      # nominal coverage of that interval (e.g. 0.9)
    category: str                                 # the band of the cut-off table the estimate falls in
    category_band_kpa: list                       # [low, high] of that band, kPa (None: unbounded)
    mre_bands: list[dict]                         # the table's bands: label, low_kpa, high_kpa
    cutoff_table: dict                            # name, reference and bands of the table used
    fold_predictions_kpa: list[float]             # each fold network's estimate, kPa
    ensemble_sd_log: float                        # spread of the fold estimates, SD of ln(kPa)
    sequence_contributions_kpa: dict              # change of the estimate with each sequence left out, kPa
    attention: dict                               # map unit and per-map summaries (share of attention in the liver)
    model: dict                                   # name, version, folder, training data of the model used
    device: str                                   # torch device the model ran on
    patient: dict                                 # the covariates used: age (years), sex, BMI (kg/m²), PDFF (%)
    inputs: dict                                  # per sequence: source path and grid geometry (mm)
    dwi_b_values: list[float]                     # s/mm²
    adc_available: bool
    preprocessing: dict                           # registration to the T1w, liver and body medians, crop
    mask: dict                                    # how the mask was made: given (path) or automatic (model, confidence)
    mask_qa: dict | None                          # the QA summary (None: QA skipped)
    input_range: dict                             # the inputs against the training cohort's ranges
    warnings: list[str]
    outputs: dict = field(default_factory=dict)   # file names in the result folder
    software: dict = field(default_factory=dict)  # versions
    stiffness_label: str = "MRE-equivalent liver stiffness"
    timings_s: dict = field(default_factory=dict)  # seconds per stage and in total
    study: dict | None = None                     # DICOM study: the series chosen and why
    patient_facts_source: dict | None = None      # DICOM study: where each patient fact came from
    dicom_outputs: dict | None = None             # --dicom-out: SEG, Parametric Map, SR written
    sequences_used: list[str] = field(default_factory=lambda: ["t1w", "t2w", "dwi"])
    sequences_missing: dict = field(default_factory=dict)  # sequence → why: "not given", or the user's reason
    interval_basis: str = "t1w+t2w+dwi"           # the subset whose out-of-fold residuals made the interval
    # A model trained on elastograms: the map's file, unit, note and regional means (kPa) by geometry.
    stiffness_map: dict | None = None
    schema_version: int = SCHEMA_VERSION

    # -- derived, for every front end alike ------------------------------------------------------
    @property
    def automatic_mask(self) -> bool:
        return (self.mask or {}).get("source") == "automatic"

    @property
    def synthetic_model(self) -> bool:
        return bool((self.model or {}).get("synthetic_training_data"))

    @property
    def qa_flags(self) -> list[dict]:
        return list((self.mask_qa or {}).get("flags", []))

    @property
    def cutoff_name(self) -> str:
        return (self.cutoff_table or {}).get("name", "mayo-60hz")

    @property
    def sequences_text(self) -> str:
        """"T1w, T2w, DWI", or "T2w only (no T1w: not given; no DWI: motion)"."""
        used = ", ".join(_LABEL[s] for s in self.sequences_used)
        if not self.sequences_missing:
            return used
        why = "; ".join(f"no {_LABEL.get(s, s)}: {reason}" for s, reason in self.sequences_missing.items())
        return f"{used} only ({why})"

    def summary_line(self) -> str:
        """The one line the command line prints."""
        lo, hi = self.interval_kpa
        note = " [model trained on synthetic data: not for clinical use]" if self.synthetic_model else ""
        warn = f"; {len(self.warnings)} warning(s)" if self.warnings else ""
        auto = " [automatic liver mask]" if self.automatic_mask else ""
        if (self.input_range or {}).get("in_range") is False:
            warn += "; inputs outside the model's training range"
        seqs = f" from {self.sequences_text}" if self.sequences_missing else ""
        return (f"{self.stiffness_label} {self.stiffness_kpa:.2f} kPa ({self.interval_coverage:.0%} interval "
                f"{lo:.2f}–{hi:.2f} kPa): {self.category} [cut-offs {self.cutoff_name}]{seqs}{warn}{auto}{note}")

    # -- files -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if not (k in _OPTIONAL and v is None)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict, where: str = "report") -> Report:
        if not isinstance(data, dict) or "stiffness_kpa" not in data:
            raise InputError(where, "is not a LiverStiffness report (no stiffness_kpa)")
        version = data.get("schema_version", 1)   # reports before the type: the fields of schema 1
        if version not in READABLE_SCHEMAS:
            raise InputError(where, f"has report schema {version}; this version reads schemas "
                                    f"{', '.join(map(str, READABLE_SCHEMAS))}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(where, f"has fields this version does not know: {', '.join(unknown[:5])}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise InputError(where, f"is incomplete ({exc})") from None

    @classmethod
    def read(cls, path: str | Path) -> Report:
        """report.json (or a folder holding it) → Report; a damaged file is an InputError naming it."""
        path = Path(path)
        if path.is_dir():
            path = path / REPORT
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(str(path), f"cannot be read as a report ({type(exc).__name__})") from None
        return cls.from_dict(data, str(path))
