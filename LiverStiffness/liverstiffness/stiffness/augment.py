"""Training augmentations: site and vendor variation, and which inputs the model sees
(sequence dropout, image-token dropout).

Per sequence channel (T1w, T2w, DWI), after the body-median normalisation: a smooth
multiplicative bias field (strong at 3 T: ±30 %), an intensity scale error (the body median
depends on body composition), a gamma change of contrast (sites differ in TR/TE/flip angle,
which changes the contrast between tissues, not only the scale), Gaussian noise and a light blur
(lower resolution). ADC: a vendor bias of a few percent. All channels together: a shift of up to
a voxel (breath-hold and mask placement). The liver-fraction channel moves with the images but is
never altered otherwise.

Why not MONAI's array transforms (RandBiasField, RandAffine, ...): they work one exam at a time
and cost ~0.4 s per exam on a 2-core CPU, more than the network's own forward and backward pass;
the same operations on the whole batch in torch take milliseconds and run on the GPU as well.

Dropout of inputs makes the ablations in-distribution: a model that has seen exams without its
T2w, or without any image token, can be asked for an estimate without them and give a fair one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .network import SEQUENCE_CHANNELS

# A sequence dropped by sequence dropout takes its derived channels with it (no ADC without DWI).
SEQUENCE_GROUPS = {"t1w": ("t1w",), "t2w": ("t2w",), "dwi": ("dwi", "adc")}


@dataclass
class SiteAugment:
    """Batched site/vendor augmentation of crops [B, C, z, y, x] (see the module docstring)."""

    channels: tuple[str, ...]
    seed: int = 0
    bias_sd: float = 0.12         # SD of each quadratic bias-field coefficient (log scale)
    scale_sd: float = 0.08        # SD of the log intensity scale per sequence
    gamma_sd: float = 0.1         # SD of log gamma per sequence
    noise_max: float = 0.03       # noise SD, uniform up to this, in body-median units
    adc_bias_sd: float = 0.04

    def __post_init__(self):
        self.gen = torch.Generator().manual_seed(self.seed)
        self.seq_idx = [self.channels.index(c) for c in ("t1w", "t2w", "dwi") if c in self.channels]
        self.adc_idx = self.channels.index("adc") if "adc" in self.channels else None

    def _rand(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen)

    def _uniform(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen)

    def _bias_fields(self, b: int, n: int, shape) -> torch.Tensor:
        """[b, n, z, y, x] smooth multiplicative fields: exp of a random quadratic in x, y, z."""
        z, y, x = (torch.linspace(-1, 1, s) for s in shape)
        z, y, x = torch.meshgrid(z, y, x, indexing="ij")
        basis = torch.stack([x, y, z, x * y, x * z, y * z, x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3])  # [9, ...]
        coef = self._rand(b, n, 9) * self.bias_sd * (self._uniform(b, n, 1) < 0.6)
        return torch.exp(torch.einsum("bnk,kzyx->bnzyx", coef, basis))

    def _some(self, b: int, n: int, prob: float) -> torch.Tensor:
        """Flat indices of the (exam, sequence) pairs an augmentation with probability ``prob`` hits."""
        return torch.nonzero(self._uniform(b * n) < prob).flatten()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, z, y, x] on any device → augmented copy (same device)."""
        dev, b = x.device, x.shape[0]
        x = x.detach().cpu().float()
        n = len(self.seq_idx)
        seq = x[:, self.seq_idx] * self._bias_fields(b, n, x.shape[2:])     # a new tensor: x is not touched
        seq = seq * torch.exp(self._rand(b, n, 1, 1, 1) * self.scale_sd)
        flat = seq.view(b * n, *seq.shape[2:])
        # Each of the rarer augmentations only on the (exam, sequence) pairs it hits: cheaper.
        hit = self._some(b, n, 0.5)
        flat[hit] = flat[hit].clamp_min(0) ** torch.exp(self._rand(len(hit), 1, 1, 1) * self.gamma_sd)
        hit = self._some(b, n, 0.15)
        if len(hit):
            w = self._uniform(len(hit), 1, 1, 1)
            flat[hit] = (1 - w) * flat[hit] + w * F.avg_pool3d(flat[hit][:, None], 3, stride=1, padding=1,
                                                               count_include_pad=False)[:, 0]
        hit = self._some(b, n, 0.3)
        flat[hit] = (flat[hit] + self._uniform(len(hit), 1, 1, 1) * self.noise_max
                     * self._rand(len(hit), *flat.shape[1:])).clamp_min(0)
        out = x.clone()
        out[:, self.seq_idx] = seq.clamp_min(0)
        if self.adc_idx is not None:
            out[:, self.adc_idx] *= (1 + self._rand(b, 1, 1, 1) * self.adc_bias_sd)
        # A whole-voxel shift of the whole exam (edge values repeated): where the anatomy sits in
        # the crop varies with the mask's centroid; whole voxels need no interpolation.
        for i in torch.nonzero(self._uniform(b) < 0.5).flatten().tolist():
            shifts = [int(v) for v in torch.randint(-1, 2, (3,), generator=self.gen)]
            out[i] = _shift(out[i], shifts)
        return out.to(dev)


def _shift(vol: torch.Tensor, shifts: list[int]) -> torch.Tensor:
    """[C, z, y, x] moved by whole voxels along z, y, x, repeating the edge."""
    padded = F.pad(vol[None], [1, 1, 1, 1, 1, 1], mode="replicate")[0]
    z, y, x = (1 - s for s in shifts)
    return padded[:, z:z + vol.shape[1], y:y + vol.shape[2], x:x + vol.shape[3]]


def available_sequences(net, images) -> np.ndarray:
    """[N, n_sequences] bool: the sequences each exam has (``sequences_present`` of the network)."""
    with torch.no_grad():
        return net.sequences_present(torch.as_tensor(np.asarray(images))).numpy()


@dataclass
class InputDropout:
    """Per training exam: drop each of T1w, T2w and DWI (with its ADC) with probability
    ``sequence``, ADC alone with ``adc`` (a single-b DWI), and every image token with
    ``image_tokens``. At least one sequence always stays."""

    sequence: float = 0.1
    adc: float = 0.15
    image_tokens: float = 0.1

    def sample(self, available: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """available [B, n_sequences] → (present [B, n_sequences] bool, use_image_tokens [B] bool)."""
        present = available.copy()
        idx = {name: SEQUENCE_CHANNELS.index(name) for name in SEQUENCE_CHANNELS}
        for b in range(len(present)):
            groups = [g for g in SEQUENCE_GROUPS if present[b, idx[g]]]
            dropped = [g for g in groups if rng.random() < self.sequence]
            if len(dropped) == len(groups):
                dropped = dropped[:-1]
            for g in dropped:
                for name in SEQUENCE_GROUPS[g]:
                    present[b, idx[name]] = False
            if rng.random() < self.adc:
                present[b, idx["adc"]] = False
        return present, rng.random(len(present)) >= self.image_tokens


def ablation_inputs(available: np.ndarray, variant: str) -> tuple[np.ndarray, bool]:
    """What the model sees in each ablation: (present, use_image_tokens)."""
    present = available.copy()
    if variant == "full":
        return present, True
    if variant == "without_image_tokens":
        return present, False
    if variant.startswith("without_") and variant[8:] in SEQUENCE_GROUPS:
        for name in SEQUENCE_GROUPS[variant[8:]]:
            present[:, SEQUENCE_CHANNELS.index(name)] = False
        return present, True
    if variant.startswith("only_") and variant[5:] in SEQUENCE_GROUPS:
        for group, names in SEQUENCE_GROUPS.items():
            if group != variant[5:]:
                for name in names:
                    present[:, SEQUENCE_CHANNELS.index(name)] = False
        return present, True
    raise ValueError(f"unknown ablation {variant!r}")


ABLATIONS = ("full", "without_image_tokens", "without_t1w", "without_t2w", "without_dwi", "only_t1w", "only_t2w",
             "only_dwi")
# The ablation that shows the model each subset of the sequences (interval.subset_key → variant).
SUBSET_VARIANTS = {"t1w+t2w+dwi": "full", "t2w+dwi": "without_t1w", "t1w+dwi": "without_t2w",
                   "t1w+t2w": "without_dwi", "t1w": "only_t1w", "t2w": "only_t2w", "dwi": "only_dwi"}
