"""Training augmentations that mimic site and vendor variation (MONAI transforms).

Per sequence channel (T1w, T2w, DWI): a smooth multiplicative bias field, a small intensity
scale error, Gaussian noise and blur (lower resolution). ADC: a vendor bias of a few percent, and
sometimes no ADC at all (single-b DWI). All channels together: a small shift (breath-hold and
mask placement). The liver-fraction channel moves with the images but is never altered otherwise.
"""
from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (RandAffine, RandBiasField, RandGaussianNoise, RandGaussianSmooth,
                              RandScaleIntensity)


class SiteAugment:
    def __init__(self, channels: tuple[str, ...], seed: int = 0, adc_dropout: float = 0.15):
        self.seq_idx = [channels.index(c) for c in ("t1w", "t2w", "dwi") if c in channels]
        self.adc_idx = channels.index("adc") if "adc" in channels else None
        self.rng = np.random.default_rng(seed)
        self.adc_dropout = adc_dropout
        # Strengths are what remains of site variation after median normalisation inside the
        # liver: a few percent. Stronger perturbations erase the texture the model must read.
        self.bias = RandBiasField(degree=3, coeff_range=(0.0, 0.04), prob=0.4)
        self.scale = RandScaleIntensity(factors=0.03, prob=0.5)
        self.noise = RandGaussianNoise(prob=0.3, std=0.01)
        self.blur = RandGaussianSmooth(sigma_x=(0.0, 0.4), sigma_y=(0.0, 0.4), sigma_z=(0.0, 0.3), prob=0.15)
        self.shift = RandAffine(prob=0.5, translate_range=(0.7, 1.0, 1.0), padding_mode="border", mode="bilinear")
        for i, t in enumerate((self.bias, self.scale, self.noise, self.blur, self.shift)):
            t.set_random_state(seed + i)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [C, z, y, x] → augmented copy."""
        x = x.clone()
        for i in self.seq_idx:
            ch = x[i:i + 1]
            for t in (self.bias, self.scale, self.noise, self.blur):
                ch = t(ch)
            x[i] = torch.as_tensor(ch)[0].clamp_min(0)
        if self.adc_idx is not None:
            if self.rng.random() < self.adc_dropout:
                x[self.adc_idx] = 0
            else:
                x[self.adc_idx] = x[self.adc_idx] * float(1 + self.rng.normal(0, 0.04))
        return torch.as_tensor(self.shift(x)).float()
