"""A model folder: the K fold networks of a cross-validation ensemble plus what describes them.

::

    model.json         architecture, input spec, preprocessing, calibration, cohort summary,
                       intended use, and the SHA-256 of every weight file
    fold0.pt ...       state_dicts (tensors only; loaded with torch.load(weights_only=True))
    baseline.json      the ridge baseline (coefficients, no pickle)
    MODEL_CARD.md      the human-readable card
    feature_distribution.npz   the held-out training exams' head features, per fold and subset
                       (out-of-distribution check, embedding_ood.py; its SHA-256 in model.json)
    oof_predictions.csv, train_log.jsonl

Model folders are untrusted input: ``model.json`` must name a format this version reads
(:data:`READABLE_FORMATS`) and an architecture it knows (:data:`ARCHITECTURES`); every weight
file must be a plain name inside the folder, match its SHA-256 in ``model.json`` before it is
opened, and load as tensors only (``torch.load(weights_only=True)``, no code runs). Anything else
is one :class:`InputError` naming the folder and the problem.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError
from ..preprocess import InputSpec, PreprocessOptions
from .interval import Calibration
from .network import ARCHITECTURES, ModelConfig, StiffnessTransformer

# /2: StiffnessTransformer, body-median inputs, CV+ intervals; /3: ModelConfig.readout and
# liver_relative (a /2 folder is read with the mean readout and the plain stem it was trained with).
FORMAT = "liverstiffness-ensemble/3"
#: Formats this version reads (a newer one is refused by name: update liverstiffness).
READABLE_FORMATS = (FORMAT, "liverstiffness-ensemble/2")
#: The demo model that ships with the package (trained on synthetic phantoms only).
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "shipped_models" / "demo"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class EnsembleMeta:
    name: str
    version: str
    config: ModelConfig
    spec: InputSpec
    preprocess: PreprocessOptions
    calibration: Calibration | None
    folds: list[dict]
    trained_on: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    intended_use: str = ""
    synthetic: bool = False
    input_statistics: dict | None = None   # training-cohort ranges for out-of-range flagging (ood.py)
    architecture: str = "StiffnessTransformer"     # a key of ARCHITECTURES
    feature_distribution: dict | None = None  # file and SHA-256 of the head-feature distribution (embedding_ood.py)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "name": self.name, "version": self.version,
            "architecture": {"class": self.architecture, **self.config.to_dict()},
            "input_spec": self.spec.to_dict(),
            "preprocess": {"register": self.preprocess.register, "n4": self.preprocess.n4},
            "target": "ln(stiffness in kPa), MRE at 60 Hz",
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "folds": self.folds, "trained_on": self.trained_on, "metrics": self.metrics,
            "intended_use": self.intended_use, "synthetic_training_data": self.synthetic,
            "input_statistics": self.input_statistics,
            **({"feature_distribution": self.feature_distribution} if self.feature_distribution else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> EnsembleMeta:
        arch = {k: v for k, v in d["architecture"].items() if k != "class"}
        return cls(
            name=d["name"], version=d["version"], config=ModelConfig.from_dict(arch),
            spec=InputSpec.from_dict(d["input_spec"]), preprocess=PreprocessOptions(**d["preprocess"]),
            calibration=Calibration.from_dict(d["calibration"]) if d.get("calibration") else None,
            folds=d["folds"], trained_on=d.get("trained_on", {}), metrics=d.get("metrics", {}),
            intended_use=d.get("intended_use", ""), synthetic=d.get("synthetic_training_data", False),
            input_statistics=d.get("input_statistics"), architecture=d["architecture"].get("class", "StiffnessTransformer"),
            feature_distribution=d.get("feature_distribution"))

    def summary(self, model_dir: Path) -> dict:
        """What a prediction report says about the model."""
        return {"name": self.name, "version": self.version, "path": str(model_dir),
                "sha256": {f["file"]: f["sha256"] for f in self.folds}, "trained_on": self.trained_on,
                "intended_use": self.intended_use, "synthetic_training_data": self.synthetic}


def save_fold(model: StiffnessTransformer, path: Path) -> str:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return sha256(path)


def write_meta(model_dir: Path, meta: EnsembleMeta) -> None:
    from ..outputs import atomic_write_text  # never a half-written model.json

    atomic_write_text(model_dir / "model.json", json.dumps(meta.to_dict(), indent=2))


def read_meta(model_dir: str | Path) -> EnsembleMeta:
    """``model.json`` of a model folder, checked: a readable format, a known architecture, and
    fold entries that name plain files with a SHA-256 each."""
    model_dir = Path(model_dir)
    path = model_dir / "model.json"
    if not path.is_file():
        raise InputError(f"model {model_dir}", "is not a model folder (no model.json)")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(d, dict):
        raise InputError(path, "is not a model description (a JSON object is expected)")
    fmt = d.get("format")
    if fmt not in READABLE_FORMATS:
        family, _, version = str(fmt).rpartition("/")
        newer = family == FORMAT.rpartition("/")[0] and version.isdigit() and int(version) > int(FORMAT.rpartition("/")[2])
        raise InputError(path, f"has format {fmt!r}, " + ("newer than this version of liverstiffness reads "
                                                          f"({', '.join(READABLE_FORMATS)}); update liverstiffness"
                                                          if newer
                                                          else f"which is not a liverstiffness model ({FORMAT} expected)"))
    arch = (d.get("architecture") or {}).get("class") if isinstance(d.get("architecture"), dict) else None
    if arch not in ARCHITECTURES:
        raise InputError(path, f"asks for architecture {arch!r}, which this version does not know "
                               f"(known: {', '.join(ARCHITECTURES)}); update liverstiffness")
    folds = d.get("folds")
    if not isinstance(folds, list) or not folds:
        raise InputError(path, "lists no fold weight files")
    for fold in folds:
        name = fold.get("file") if isinstance(fold, dict) else None
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", "..") or "\\" in name:
            raise InputError(path, f"names a weight file {name!r} that is not a plain file name in the model folder")
        if not isinstance(fold.get("sha256"), str) or len(fold["sha256"]) != 64:
            raise InputError(path, f"gives no SHA-256 for weight file {name}")
    try:
        return EnsembleMeta.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"is incomplete or malformed ({type(exc).__name__}: {exc})") from None


def load_models(model_dir: str | Path, meta: EnsembleMeta, device: str | torch.device = "cpu") -> list[StiffnessTransformer]:
    """Load every fold after checking its SHA-256 (tensors only, no arbitrary pickle)."""
    model_dir = Path(model_dir)
    models = []
    for fold in meta.folds:
        path = model_dir / fold["file"]
        if not path.is_file():
            raise InputError(f"model {model_dir}", f"weight file {fold['file']} is missing")
        if sha256(path) != fold["sha256"]:
            raise InputError(path, "SHA-256 does not match model.json (file changed or corrupt)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - an unpickling refusal or a damaged archive: one line
            raise InputError(path, f"is not a tensors-only checkpoint ({type(exc).__name__}); "
                                   "refused without running it") from None
        net = ARCHITECTURES[meta.architecture](meta.config)
        try:
            net.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise InputError(path, f"does not fit the architecture in model.json ({first})") from None
        models.append(net.to(device).eval())
    return models
