"""Smooth random fields, evaluated at any physical point (mm): texture, patchiness, deformation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FourierField:
    """A smooth random field, a sum of random plane waves: deterministic at any physical point,
    zero mean and unit variance; ``wavelength_mm`` sets the size of its features."""

    k: np.ndarray      # (n, 3) wave vectors, rad/mm
    phase: np.ndarray  # (n,)

    @classmethod
    def random(cls, rng: np.random.Generator, wavelength_mm: tuple[float, float], n: int = 16) -> FourierField:
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength_mm, size=n)
        return cls(direction * (2 * np.pi / lam)[:, None], rng.uniform(0, 2 * np.pi, n))

    def __call__(self, x, y, z) -> np.ndarray:
        out = 0.0
        for (kx, ky, kz), ph in zip(self.k, self.phase):
            out = out + np.cos(kx * x + ky * y + kz * z + ph)
        return out * np.sqrt(2.0 / len(self.phase))


@dataclass
class VectorField:
    """A smooth random displacement (mm): one FourierField per axis times an amplitude."""

    parts: tuple[FourierField, FourierField, FourierField]
    amplitude_mm: float

    @classmethod
    def random(cls, rng: np.random.Generator, wavelength_mm: tuple[float, float], amplitude_mm: float,
               n: int = 6) -> VectorField:
        return cls(tuple(FourierField.random(rng, wavelength_mm, n) for _ in range(3)), amplitude_mm)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
        return self.amplitude_mm * np.stack([f(x, y, z) for f in self.parts], axis=-1)
