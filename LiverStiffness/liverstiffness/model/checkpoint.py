"""A model folder: the K fold networks of a cross-validation ensemble plus what describes them.

::

    model.json         architecture, input spec, preprocessing, calibration, cohort summary,
                       intended use, and the SHA-256 of every weight file
    fold0.pt ...       state_dicts (tensors only; loaded with torch.load(weights_only=True))
    baseline.json      the ridge baseline (coefficients, no pickle)
    MODEL_CARD.md      the human-readable card
    oof_predictions.csv, train_log.jsonl

Weights are checked against their hash before use, so a truncated or swapped file is refused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError
from ..preprocess import InputSpec, PreprocessOptions
from ..uncertainty import Calibration
from .network import ARCHITECTURES, ModelConfig, StiffnessTransformer

FORMAT = "liverstiffness-ensemble/2"     # /2: StiffnessTransformer, body-median inputs, CV+ intervals
#: The demo model that ships with the package (trained on synthetic phantoms only).
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "demo"


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

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "name": self.name, "version": self.version,
            "architecture": {"class": "StiffnessTransformer", **self.config.to_dict()},
            "input_spec": self.spec.to_dict(),
            "preprocess": {"register": self.preprocess.register, "n4": self.preprocess.n4},
            "target": "ln(stiffness in kPa), MRE at 60 Hz",
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "folds": self.folds, "trained_on": self.trained_on, "metrics": self.metrics,
            "intended_use": self.intended_use, "synthetic_training_data": self.synthetic,
        }

    @classmethod
    def from_dict(cls, d: dict) -> EnsembleMeta:
        arch = {k: v for k, v in d["architecture"].items() if k != "class"}
        return cls(
            name=d["name"], version=d["version"], config=ModelConfig.from_dict(arch),
            spec=InputSpec.from_dict(d["input_spec"]), preprocess=PreprocessOptions(**d["preprocess"]),
            calibration=Calibration.from_dict(d["calibration"]) if d.get("calibration") else None,
            folds=d["folds"], trained_on=d.get("trained_on", {}), metrics=d.get("metrics", {}),
            intended_use=d.get("intended_use", ""), synthetic=d.get("synthetic_training_data", False))

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
    (model_dir / "model.json").write_text(json.dumps(meta.to_dict(), indent=2))


def read_meta(model_dir: str | Path) -> EnsembleMeta:
    model_dir = Path(model_dir)
    path = model_dir / "model.json"
    if not path.is_file():
        raise InputError(f"model {model_dir}", "is not a model folder (no model.json)")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"is not valid JSON ({exc.msg})") from None
    if d.get("format") != FORMAT:
        raise InputError(path, f"has format {d.get('format')!r}; expected {FORMAT}")
    return EnsembleMeta.from_dict(d)


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
        net = ARCHITECTURES["StiffnessTransformer"](meta.config)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        models.append(net.to(device).eval())
    return models
