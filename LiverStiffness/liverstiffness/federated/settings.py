"""The recipe every site trains by, as one JSON-able object.

Why: the server sends it with every task (FLModel meta), so a site cannot drift from the
federation's settings and a resumed run can check it is continuing the same run (``fingerprint``).
Site-local things (where its manifest and cache are, its device) are not in it.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace

from ..preprocess import InputSpec
from ..stiffness.network import ModelConfig
from ..stiffness.train import TrainConfig

#: Share of each site's patients held out of training: their residuals calibrate the interval and
#: their numbers are the model's held-out metrics (there is no cross-validation across sites).
HELD_OUT_FRACTION = 0.2
#: The key under which the server sends the recipe (and, in the report task, the ridge) to sites.
META_KEY = "liverstiffness"
RIDGE_KEY = "liverstiffness_ridge"     # the ridge baseline the server sends with the report task


@dataclass
class Recipe:
    rounds: int
    local_epochs: int
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    val_fraction: float = 0.15          # each site's early-stopping (round selection) split, by patient
    held_out_fraction: float = HELD_OUT_FRACTION
    seed: int = 0
    coverage: float = 0.9
    register: bool = True
    n4: bool = False
    amp: str = "auto"
    dense_weight: float = 1.0
    augment: bool = True
    model: dict = field(default_factory=lambda: ModelConfig().to_dict())
    spec: dict = field(default_factory=lambda: InputSpec().to_dict())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = json.loads(json.dumps(self.model))     # tuples → lists: what JSON gives back
        d["spec"] = json.loads(json.dumps(self.spec))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        return cls(**d)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.spec)

    def fingerprint(self) -> str:
        """What a resumed run must share with the run it continues."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def round_lr(self, round_index: int) -> float:
        """Peak learning rate of a round: cosine decay over the rounds to 5 % (as ``train``'s
        schedule over epochs); inside a round ``train_fold``'s own schedule runs from this peak."""
        t = min(1.0, round_index / max(1, self.rounds))
        return self.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    def train_config(self, round_index: int, device: str = "auto") -> TrainConfig:
        """``train_fold``'s settings for one round of local training: ``local_epochs`` epochs, the
        last one kept (round selection, not local early stopping, picks the model), warm-up in
        the first round only."""
        return replace(TrainConfig(), epochs=self.local_epochs, min_epochs=self.local_epochs,
                       patience=self.local_epochs + 1, warmup_epochs=1 if round_index == 0 else 0,
                       batch_size=self.batch_size, lr=self.round_lr(round_index), weight_decay=self.weight_decay,
                       seed=self.seed, coverage=self.coverage, register=self.register, n4=self.n4, amp=self.amp,
                       device=device, dense_weight=self.dense_weight, augment=self.augment,
                       model=self.model_config, spec=self.input_spec)
