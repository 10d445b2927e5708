"""The comparison model: ridge regression of ln(kPa) on liver-mask statistics of each sequence,
the liver's size and shape, and the clinical covariates. It sees the same preprocessed crop as
the transformer, but only as summary numbers inside the mask — what a radiomics-light approach
would do. With the body-median normalisation the liver means are liver-to-body signal ratios.

Stored as plain JSON (feature names, standardisation, coefficients): no pickle.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from .network import StiffnessTransformer

STAT_CHANNELS = ("t1w", "t2w", "dwi", "adc")
STATS = ("mean", "sd", "cv", "p10", "p90")
SHAPE = ("surface_roughness", "principal_1", "principal_2", "principal_3")


def features(images: np.ndarray, cov: np.ndarray, known: np.ndarray, channels, voxel_ml: float) -> tuple[np.ndarray, list[str]]:
    """[N, F] features and their names from crops [N, C, z, y, x] and covariates. A channel
    without signal (no ADC from a single-b DWI) gives zeros and an ``available`` flag of 0."""
    mask_idx = channels.index("mask")
    names = [f"{c}_{s}" for c in STAT_CHANNELS for s in STATS] + [f"{c}_available" for c in STAT_CHANNELS]
    names += ["liver_volume_ml", *SHAPE]
    names += [f"cov{i}" for i in range(cov.shape[1])] + [f"cov{i}_known" for i in range(cov.shape[1])]
    frac = torch.as_tensor(np.asarray(images)[:, mask_idx]).clamp(0, 1)
    shape = StiffnessTransformer.shape_stats(frac, frac.sum(dim=(1, 2, 3))).numpy()
    rows = []
    for x, cv, kn, sh in zip(images, cov, known, shape):
        inside = x[mask_idx] > 0.5
        f, avail = [], []
        for c in STAT_CHANNELS:
            v = x[channels.index(c)][inside]
            ok = bool(np.any(v != 0))
            m = float(v.mean()) if ok else 0.0
            f += [m, v.std(), v.std() / m if m > 0 else 0.0, np.percentile(v, 10), np.percentile(v, 90)] if ok else [0.0] * 5
            avail.append(float(ok))
        f += avail + [x[mask_idx].sum() * voxel_ml, *sh.tolist()]
        f += list(np.where(kn, cv, 0.0)) + list(kn.astype(float))
        rows.append(f)
    return np.asarray(rows, float), names


@dataclass
class RidgeBaseline:
    names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float

    @classmethod
    def fit(cls, X: np.ndarray, y_log: np.ndarray, names: list[str]) -> RidgeBaseline:
        mean, scale = X.mean(0), X.std(0) + 1e-8
        model = RidgeCV(alphas=np.logspace(-2, 3, 21)).fit((X - mean) / scale, y_log)
        return cls(names, mean, scale, model.coef_, float(model.intercept_), float(model.alpha_))

    @property
    def n_covariates(self) -> int:
        """How many covariate columns (the first of ``covariates.ALL_COVARIATES``) it was fitted with."""
        return sum(1 for n in self.names if n.startswith("cov") and n[3:].isdigit())

    def predict_log(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({
            "model": "ridge regression of ln(kPa) on liver-mask statistics + covariates",
            "names": self.names, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "coef": self.coef.tolist(), "intercept": self.intercept, "alpha": self.alpha}, indent=1))

    @classmethod
    def load(cls, path: Path) -> RidgeBaseline:
        d = json.loads(Path(path).read_text())
        return cls(d["names"], np.array(d["mean"]), np.array(d["scale"]), np.array(d["coef"]), d["intercept"], d["alpha"])
