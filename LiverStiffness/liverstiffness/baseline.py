"""The comparison model: ridge regression of ln(kPa) on liver-mask statistics of each sequence
plus the clinical covariates. It sees the same preprocessed crop as the transformer, but only as
summary numbers inside the mask, which is what a radiomics-light approach would do.

Stored as plain JSON (feature names, standardisation, coefficients): no pickle.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

STAT_CHANNELS = ("t1w", "t2w", "dwi", "adc")
STATS = ("mean", "sd", "p10", "p90")


def features(images: np.ndarray, cov: np.ndarray, known: np.ndarray, channels, voxel_ml: float) -> tuple[np.ndarray, list[str]]:
    """[N, F] features and their names from crops [N, C, z, y, x] and covariates."""
    mask_idx = channels.index("mask")
    rows, names = [], []
    for c in STAT_CHANNELS:
        for s in STATS:
            names.append(f"{c}_{s}")
    names += ["liver_volume_ml"]
    names += [f"cov{i}" for i in range(cov.shape[1])] + [f"cov{i}_known" for i in range(cov.shape[1])]
    for x, cv, kn in zip(images, cov, known):
        inside = x[mask_idx] > 0.5
        f = []
        for c in STAT_CHANNELS:
            v = x[channels.index(c)][inside]
            f += [v.mean(), v.std(), np.percentile(v, 10), np.percentile(v, 90)]
        f.append(x[mask_idx].sum() * voxel_ml)
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
    def fit(cls, X: np.ndarray, y_log: np.ndarray, names: list[str]) -> "RidgeBaseline":
        mean, scale = X.mean(0), X.std(0) + 1e-8
        model = RidgeCV(alphas=np.logspace(-2, 3, 21)).fit((X - mean) / scale, y_log)
        return cls(names, mean, scale, model.coef_, float(model.intercept_), float(model.alpha_))

    def predict_log(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({
            "model": "ridge regression of ln(kPa) on liver-mask statistics + covariates",
            "names": self.names, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "coef": self.coef.tolist(), "intercept": self.intercept, "alpha": self.alpha}, indent=1))

    @classmethod
    def load(cls, path: Path) -> "RidgeBaseline":
        d = json.loads(Path(path).read_text())
        return cls(d["names"], np.array(d["mean"]), np.array(d["scale"]), np.array(d["coef"]), d["intercept"], d["alpha"])
