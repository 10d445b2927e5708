"""A segmentation model folder: the fold networks of one or more k-fold runs plus what describes them.

::

    seg_model.json       format, architecture, input spec (grid, orientation, normalisation),
                         inference settings, the cases each fold held out, metrics, training
                         data and licence, and the SHA-256 of every weight file
    fold0.pt ...         state_dicts, float16 tensors only (loaded with torch.load(weights_only=True));
                         run0_fold0.pt ... when the folder holds several runs (seeds), each its own folds
    MODEL_CARD.md        the human-readable card
    LICENSE-WEIGHTS.md   the weights' own terms (they derive from CC BY-SA 4.0 data)
    cv_cases.csv, train_log.jsonl

Weights are checked against their hash before use, so a truncated or swapped file is refused.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import InputError
from ..stiffness.checkpoint import sha256
from .config import SegInputSpec, SegNetConfig
from .metrics import json_ready
from .network import build_network

FORMAT = "liverstiffness-liverseg/1"
#: The liver segmentation model shipped with the package (trained on CHAOS T2-SPIR, CC BY-SA 4.0).
DEFAULT_SEG_MODEL_DIR = Path(__file__).resolve().parent.parent / "shipped_models" / "liver_seg"


@dataclass
class SegInference:
    """How the fold networks are run: every slice of the network grid (with its neighbours), the
    slice padded to a multiple of the network's divisor, ``batch`` slices at a time.

    ``tta_scales``: test-time augmentation by in-plane scale. The image is also put on network grids
    whose in-plane spacing is the model's times each factor (a liver a little larger or smaller
    than the network saw it), and the probabilities, each back on the input grid, are averaged.
    The agreement between the scales' masks is part of the confidence (it falls on images unlike
    the training data). A folder without the entry was written before it: (1.0,), none.
    """

    batch: int = 16
    threshold: float = 0.5           # on the mean probability
    tta_scales: tuple[float, ...] = (0.9, 1.0, 1.1)

    @classmethod
    def from_dict(cls, d: dict) -> SegInference:
        return cls(int(d["batch"]), float(d["threshold"]), tuple(float(s) for s in d.get("tta_scales", (1.0,))))

    def validate(self, where) -> SegInference:
        if not self.tta_scales or not all(0.5 <= s <= 2.0 for s in self.tta_scales):
            raise InputError(where, f"inference.tta_scales {list(self.tta_scales)} must be factors within 0.5–2")
        return self


@dataclass
class SegModelMeta:
    name: str
    version: str
    net: SegNetConfig
    spec: SegInputSpec
    inference: SegInference
    folds: list[dict]                # file, sha256, held_out (case ids), steps, run, seed (older folders: no run/seed)
    trained_on: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    licence: str = ""
    intended_use: str = ""

    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name, "version": self.version,
                "architecture": {"class": "monai.networks.nets.UNet", "spatial_dims": 2,
                                 "in_channels": self.net.in_channels, "out_channels": self.net.out_channels,
                                 "input": "axial slice with its neighbours (2.5-D), on the network grid",
                                 "output": "liver logit of the middle slice (sigmoid → probability)"
                                           + (" in channel 0; then one logit per other organ, a training aid that "
                                              "inference does not read" if self.net.aux_organs else ""),
                                 **asdict(self.net)},
                "input_spec": asdict(self.spec), "inference": asdict(self.inference), "folds": self.folds,
                "trained_on": self.trained_on, "metrics": self.metrics, "licence": self.licence,
                "intended_use": self.intended_use}

    @classmethod
    def from_dict(cls, d: dict) -> SegModelMeta:
        arch = d["architecture"]
        return cls(name=d["name"], version=d["version"], net=SegNetConfig.from_dict(arch),
                   spec=SegInputSpec.from_dict(d["input_spec"]), inference=SegInference.from_dict(d["inference"]),
                   folds=d["folds"], trained_on=d.get("trained_on", {}), metrics=d.get("metrics", {}),
                   licence=d.get("licence", ""), intended_use=d.get("intended_use", ""))

    def networks_holding_out(self, case_id: str) -> list[int]:
        """Indices of the networks that never saw ``case_id`` in training, one per run (its held-out
        scores come from their ensemble)."""
        return [i for i, f in enumerate(self.folds) if case_id in f["held_out"]]

    @property
    def runs(self) -> int:
        """Independent k-fold runs (seeds) in the folder; every case is held out once per run."""
        return len({f.get("run", 0) for f in self.folds})

    def summary(self, model_dir: Path) -> dict:
        """What a report says about the segmentation model."""
        return {"name": self.name, "version": self.version, "path": str(model_dir),
                "sha256": {f["file"]: f["sha256"] for f in self.folds}, "licence": self.licence}


def save_weights(net: torch.nn.Module, path: Path) -> str:
    """float16 tensors (half the size; the outputs agree with float32 to ~1e-3 in probability)."""
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in net.state_dict().items()}
    torch.save(state, path)
    return sha256(path)


def write_meta(model_dir: Path, meta: SegModelMeta) -> None:
    (Path(model_dir) / "seg_model.json").write_text(json.dumps(json_ready(meta.to_dict()), indent=2, allow_nan=False) + "\n")


def read_meta(model_dir: str | Path) -> SegModelMeta:
    model_dir = Path(model_dir)
    path = model_dir / "seg_model.json"
    if not path.is_file():
        raise InputError(f"segmentation model {model_dir}", "is not a segmentation model folder (no seg_model.json)")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"is not valid JSON ({exc.msg})") from None
    if d.get("format") != FORMAT:
        raise InputError(path, f"has format {d.get('format')!r}; expected {FORMAT}")
    try:
        meta = SegModelMeta.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"is missing or has a malformed entry ({type(exc).__name__}: {exc})") from None
    meta.inference.validate(path)
    return meta


def load_networks(model_dir: str | Path, meta: SegModelMeta, device: torch.device | str = "cpu",
                  folds: list[int] | None = None) -> list[torch.nn.Module]:
    """Fold networks in eval mode, each after its SHA-256 is checked (tensors only, no pickle)."""
    model_dir = Path(model_dir)
    nets = []
    for i, fold in enumerate(meta.folds):
        if folds is not None and i not in folds:
            continue
        path = model_dir / fold["file"]
        if not path.is_file():
            raise InputError(f"segmentation model {model_dir}", f"weight file {fold['file']} is missing")
        if sha256(path) != fold["sha256"]:
            raise InputError(path, "SHA-256 does not match seg_model.json (file changed or corrupt)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = build_network(meta.net)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        nets.append(net.to(device).eval())
    return nets
