"""What a bundle's ``configs/inference.json`` runs: the same code as ``liverstiffness predict`` and
``segment`` (the bundle itself: :mod:`.bundle_export`, :mod:`.bundle_layout`).

::

    python -m monai.bundle run --config_file B/configs/inference.json --meta_file B/configs/metadata.json \\
        --bundle_root B --t1w T1.nii.gz --t2w T2.nii.gz --dwi DWI.nii.gz --dwi_b 0,500 --mask MASK.nii.gz \\
        --age 58 --sex F --output_dir OUT

Each component checks that the config's model entry describes the bundle's ``models/`` folder,
loads it as ``--model B`` / ``--seg-model B`` would, and runs. ``run`` is the command-line entry:
bad input ends it with one line ``error: <input>: <problem>`` and exit code 2, as in
``liverstiffness``; ``predict`` / ``segment`` raise :class:`InputError` for callers in Python.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .bundle_export import check_model_entry
from .bundle_layout import is_bundle
from .errors import EXIT_BAD_INPUT, InputError
from .manifest import ExamRecord, PatientFacts, parse_b_values

MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
MAPS = ("default", "all", "none")


def _root(bundle_root) -> Path:
    root = Path(str(bundle_root))
    if not is_bundle(root):
        raise InputError(f"bundle_root {root}", "is not a MONAI bundle (no configs/metadata.json): "
                                                "give --bundle_root BUNDLE_FOLDER")
    return root


def _one_line_exit(run):
    """``run()``; an InputError ends the process as ``liverstiffness`` would (one line, exit 2)."""
    try:
        return run()
    except InputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


def _number(value, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(what, f"must be a number, got {value!r}") from None


def _b_values(value) -> tuple[float, ...] | None:
    """``--dwi_b``: "0,500", 800, or (0, 500) as the command line's parser gives them."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return parse_b_values(str(value), "dwi_b")


def exam_record(exam: dict, output_dir: Path) -> ExamRecord:
    """The config's exam entry → the record ``predict`` runs (mask "auto": segmented on the T2w)."""
    missing = [k for k in ("t1w", "t2w", "dwi", "mask") if not exam.get(k)]
    if missing:
        raise InputError("bundle", f"missing {', '.join('--' + k for k in missing)} (give them on the command line, "
                                   "e.g. --t1w FILE; --mask auto for an automatic mask)")
    sex = exam.get("sex")
    facts = PatientFacts(_number(exam.get("age"), "age"), None if sex in (None, "") else str(sex),
                         _number(exam.get("bmi"), "bmi"), _number(exam.get("pdff"), "pdff")).validate("patient")
    label = exam.get("mask_label")
    mask = str(exam["mask"])
    return ExamRecord(case_id=output_dir.name, patient_id="", t1w=Path(str(exam["t1w"])), t2w=Path(str(exam["t2w"])),
                      dwi=Path(str(exam["dwi"])), mask=None if mask == "auto" else Path(mask),
                      dwi_b=_b_values(exam.get("dwi_b")), facts=facts,
                      mask_label=None if label in (None, "") else int(_number(label, "mask_label")))


class StiffnessBundle:
    """A stiffness model bundle, run as ``liverstiffness predict --model BUNDLE`` runs it."""

    def __init__(self, bundle_root, model: dict, device: str = "auto"):
        self.bundle_root, self.model, self.device = bundle_root, model, str(device)

    def predict(self, exam: dict, options: dict, output_dir):
        """One exam (the config's ``exam`` and ``options`` entries) → the Report, written to ``output_dir``."""
        from .cutoffs import load_cutoffs
        from .predict import PredictOptions, predict_exam
        from .stiffness.ensemble import Ensemble

        root = _root(self.bundle_root)
        check_model_entry(root, self.model, "stiffness")
        out = Path(str(output_dir))
        if out.exists() and not out.is_dir():
            raise InputError(f"output_dir {out}", "exists and is not a folder")
        maps = options.get("maps", "default")
        if maps not in MAPS:
            raise InputError("maps", f"must be one of {', '.join(MAPS)}, got {maps!r}")
        record = exam_record(exam, out)
        opts = PredictOptions(detail_maps=maps == "all", gradient_maps=maps != "none",
                              montage=bool(options.get("montage", True)), qa=bool(options.get("qa", True)),
                              seg_model=options.get("seg_model"), cutoffs=options.get("cutoffs"))
        load_cutoffs(opts.cutoffs)
        ens = Ensemble.load(root, self.device)
        return predict_exam(record, ens, out, opts)

    def run(self, exam: dict, options: dict, output_dir):
        report = _one_line_exit(lambda: self.predict(exam, options, output_dir))
        print(report.summary_line())
        return report


class SegmentationBundle:
    """A liver segmentation model bundle, run as ``liverstiffness segment --model BUNDLE`` runs it."""

    def __init__(self, bundle_root, model: dict, device: str = "auto"):
        self.bundle_root, self.model, self.device = bundle_root, model, str(device)

    def segment(self, image, output, probability=None, report=None):
        """The liver mask of ``image`` written to ``output`` (and the probability map and JSON report
        where given); returns the SegResult."""
        import SimpleITK as sitk

        from .imageio import read_volume
        from .segmentation.auto_mask import get_segmenter

        root = _root(self.bundle_root)
        check_model_entry(root, self.model, "segmentation")
        if not image:
            raise InputError("bundle", "missing --image (the T2-weighted image to segment)")
        out = Path(str(output))
        if not out.name.endswith(MASK_SUFFIXES):
            raise InputError(f"output {out}", f"needs one of the extensions {', '.join(MASK_SUFFIXES)}")
        if out.is_dir():
            raise InputError(f"output {out}", "is a folder; give a file name")
        img = read_volume(str(image), "image")
        res = get_segmenter("model", str(root), self.device).segment(img, f"image {image}")
        out.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(res.mask, str(out), useCompression=True)
        if probability:
            sitk.WriteImage(res.probability, str(probability), useCompression=True)
        if report:
            Path(str(report)).write_text(json.dumps({"image": str(Path(str(image)).resolve()), "mask": str(out.resolve()),
                                                     **res.report()}, indent=2) + "\n")
        return res

    def run(self, image, output, probability=None, report=None):
        from .segmentation.auto_mask import confidence_text

        res = _one_line_exit(lambda: self.segment(image, output, probability, report))
        warn = " LOW CONFIDENCE: check it" if res.confidence.get("low_confidence") else ""
        print(f"Liver mask {res.volume_ml:.0f} mL ({confidence_text(res.confidence)}){warn} → {output}")
        return res
