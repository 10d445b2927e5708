"""What defines a liver segmentation model: its input grid, normalisation, network and training.

Everything here is written into the model folder's ``seg_model.json``, so a folder describes
itself: a model is always run on the grid and with the normalisation it was trained with.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

# weight of the other organs' loss (SegNetConfig.aux_organs; mean over them) beside the liver's: a training
# aid, the liver leads
AUX_WEIGHT = 0.5
# with SegTrainConfig.swa: the weights are added to the average every this many steps
SWA_EVERY = 20


@dataclass(frozen=True)
class SegInputSpec:
    """How an image becomes the network's input.

    The image is resampled (linear, anti-aliased) onto an axis-aligned LPS grid that covers it,
    at ``spacing_mm``: 2.5 mm in-plane holds the liver's outline to 0.4 % Dice (the CHAOS labels taken
    there and back), and 2.0 mm trained worse (``train-seg --spacing``, run Q in bench/RESULTS.md: held-out
    Dice 0.891 against 0.897, the errors along the outline unchanged); the slice spacing is the
    training data's own (CHAOS T2-SPIR, 7.7 mm), so the network always sees one orientation and one
    voxel size whatever the scanner wrote.
    Intensities are scaled per image by percentiles (MONAI ``ScaleIntensityRangePercentiles``):
    MR signal has no absolute unit.
    """

    spacing_mm: tuple[float, float, float] = (2.5, 2.5, 7.7)    # x, y, z (LPS)
    orientation: str = "LPS axis-aligned (identity direction), covering the image's physical extent"
    percentiles: tuple[float, float] = (0.5, 99.5)             # mapped to 0 and 1, clipped
    sequence: str = "T2-weighted (fat-suppressed, e.g. T2-SPIR), axial"

    @classmethod
    def from_dict(cls, d: dict) -> SegInputSpec:
        return cls(tuple(d["spacing_mm"]), d.get("orientation", cls.orientation), tuple(d["percentiles"]),
                   d.get("sequence", cls.sequence))


@dataclass(frozen=True)
class SegNetConfig:
    """A 2.5-D MONAI ``UNet``: each axial slice with ``context`` neighbours on either side as input
    channels, one output (the slice's liver logit).

    Why 2.5-D and not 3-D: slices are thick (7.7 mm, 4 to 8 in clinical T2w) and the project's
    CPU is two shared cores. A training step of 16 slices of 128 × 128 costs 0.24 s of one core
    here, against 1.2 s for a 3-D SegResNet (8 filters) on two 16 × 112 × 112 patches, so the
    2.5-D network sees ~5× more anatomy for the same time; the neighbours give it the
    through-plane context (liver dome, tip of the right lobe) that a plain 2-D network lacks.
    Two neighbours each side (±15 mm at 7.7 mm slices) and 3000 steps: held-out CHAOS Dice 0.877,
    against 0.858 with one neighbour and 1200 steps (both on CHAOS alone; bench/RESULTS.md). The
    shipped model trains 6000 steps, two runs (``make seg-model``): one run scored 0.897 against 0.882
    with 3000 (seed 1: 0.889, 0.886), the two runs together 0.900, and 0.904 after 3000 more steps with
    their weights averaged (``swa``).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 1
    context: int = 2                 # neighbouring slices on each side (input channels: 2·context + 1)
    norm: str = "instance"
    # extra outputs, one per other labelled organ (kidneys, spleen), trained beside the liver so the
    # network learns what its neighbours look like; inference reads the liver's output (channel 0) only.
    # Off in the shipped recipe: on two seeds it lowered the held-out CHAOS Dice (0.897 → 0.891,
    # 0.886 → 0.875; runs O and P in bench/RESULTS.md), the dark liver of case 15 most.
    aux_organs: int = 0
    # dropout after each convolution in training (MONAI UNet ``dropout``; no weights, so a folder's networks
    # load with any value). Off: 0.2 in the shipped recipe's second stage (run X in bench/RESULTS.md) scored
    # held-out CHAOS Dice 0.895 against 0.901 and 0.883 against 0.894 (runs X, X1), the dark livers up, most others down
    dropout: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> SegNetConfig:
        return cls(tuple(d["channels"]), tuple(d["strides"]), int(d["num_res_units"]), int(d["context"]),
                   d.get("norm", "instance"), int(d.get("aux_organs", 0)), float(d.get("dropout", 0.0)))

    def validate(self) -> SegNetConfig:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("strides needs one entry fewer than channels")
        if self.context < 0:
            raise ValueError(f"context must be 0 or more, got {self.context}")
        if self.aux_organs < 0:
            raise ValueError(f"aux_organs must be 0 or more, got {self.aux_organs}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be at least 0 and below 1, got {self.dropout}")
        return self

    @property
    def in_channels(self) -> int:
        return 2 * self.context + 1

    @property
    def out_channels(self) -> int:
        return 1 + self.aux_organs

    @property
    def divisor(self) -> int:
        """In-plane sizes must be multiples of this (the product of the strides)."""
        return math.prod(self.strides)


@dataclass
class SegTrainConfig:
    """Training protocol: k folds over cases (every case gets a score from the model that never
    saw it), and the k fold models together are the shipped ensemble.

    ``runs``: independent k-fold runs, run r with seed ``seed + r`` (its own fold split, sampling
    and augmentation), so run r is exactly the single run ``--seed seed+r``. All runs' networks are
    the ensemble, and each case is scored by the mean of the ``runs`` networks that never saw it.
    """

    folds: int = 3
    runs: int = 1
    steps: int = 3000                       # optimiser steps per fold
    batch_size: int = 16                    # slices per step
    patch_yx: tuple[int, int] = (128, 128)  # in-plane voxels (y, x): 320 × 320 mm, a whole abdomen
    lr: float = 2e-3
    weight_decay: float = 1e-5
    seed: int = 0
    net: SegNetConfig = field(default_factory=SegNetConfig)
    spec: SegInputSpec = field(default_factory=SegInputSpec)
    threads: int = 0                        # torch CPU threads; 0: torch's default
    # in-plane scaling augmentation: each axis by 1 ± this at most; ±30 % trained no better (run T in
    # bench/RESULTS.md: held-out CHAOS Dice 0.881 against 0.882, 3000 steps)
    scale_aug: float = 0.15
    # organ-wise intensity augmentation (augment.organ_intensity): probability per organ, factor range
    organ_intensity_prob: float = 0.35
    organ_intensity_range: tuple[float, float] = (0.25, 1.5)
    organ_intensity_keep_bright: bool = False    # an organ's vessels keep their signal (augment.py)
    # share of training samples drawn from synthetic exams; None: as many as their count says.
    # The real scans are what the model is scored on, the synthetic ones add contrasts they lack.
    synthetic_share: float | None = None
    # a model folder whose networks the fold networks start from (``train.starting_networks`` picks, per
    # fold, one that never saw the fold's held-out cases); None: random initialisation
    init_from: str | None = None
    # stochastic weight averaging: the last this share of the steps at the learning rate the schedule
    # had reached there, the network's weights averaged over them (every SWA_EVERY steps); 0: off
    # (the shipped recipe's second stage: 0.8 over 3000 steps continuing the 6000-step networks, runs U and U1
    # in bench/RESULTS.md: held-out CHAOS Dice +0.004 and +0.005 on two seeds)
    swa: float = 0.0
    # the Dice term over the whole batch of slices instead of per slice (MONAI DiceLoss(batch=True)): a
    # slice with a sliver of liver, or none, no longer weighs as much as one through the liver's middle.
    # Off: runs V and V1 (3000 steps, seeds 0 and 1) scored held-out CHAOS Dice 0.886 and 0.889 against 0.882
    # and 0.886, within seed noise each; in the shipped recipe's second stage (runs W and W1) 0.904 and 0.894
    # against 0.901 and 0.894, the pair 0.905 against 0.904: nothing measurable
    batch_dice: bool = False

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("net", "spec")}
        d["net"], d["spec"] = asdict(self.net), asdict(self.spec)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SegTrainConfig:
        """The settings of a ``config.json`` (``to_dict``); what it adds beside them (init_recipe) is left out,
        and a setting it lacks (a folder older than the option) takes its default."""
        known = {f.name for f in fields(cls)} - {"net", "spec"}
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**settings, net=SegNetConfig.from_dict(d["net"]), spec=SegInputSpec.from_dict(d["spec"]))
