"""An auxiliary spleen-segmentation loss on the stem: does making the stem find the spleen help?

    python -m experiments.aux_spleen_loss [--n 300] [--weight 0.2] [--seed 0]
    (from the repository root, as a module: it imports ``experiments/common.py``)

The target is the phantom's truth spleen (truth_labels.nii.gz beside each exam) resampled onto the
model's crop (the same liver-centred grid as ``preprocess.prepare``), cached in
build/data_size/spleen/. A 1×1×1 convolution reads spleen logits from the stem's half-resolution
features; training minimises MSE(ln kPa) + weight × BCE(spleen). The target rides as a sixth
channel through the batch augmentation (so the whole-voxel shift moves it too) and is stripped
before the network sees the batch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import nn

import liverstiffness.stiffness.train as T
from experiments.common import WORK, cohorts, train_and_score
from liverstiffness import spatial
from liverstiffness.preprocess import PreprocessOptions
from liverstiffness.stiffness.network import StiffnessTransformer

SPLEEN_LABEL = 2     # phantom.tissues: spleen


def spleen_on_crop(rec, spec) -> np.ndarray:
    cache = WORK / "spleen" / f"{rec.case_id}.npy"
    if cache.is_file():
        return np.load(cache).astype(np.float32)
    t1w = sitk.ReadImage(str(rec.t1w))
    mask = spatial.resample_like(sitk.ReadImage(str(rec.mask)), t1w, interpolation="nearest", pixel=sitk.sitkUInt8)
    crop = spatial.centred_grid(spatial.centroid_mm(mask), spec.spacing_mm, spec.size)
    labels = sitk.ReadImage(str(Path(rec.t1w).parent / "truth_labels.nii.gz"))
    frac = sitk.GetArrayFromImage(spatial.resample_like(sitk.Cast(labels == SPLEEN_LABEL, sitk.sitkFloat32), crop))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, frac.astype(np.float16))
    return frac.astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--weight", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    current: list[nn.Module] = []

    class AuxSpleenNet(StiffnessTransformer):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.aux = nn.Conv3d(cfg.stem_channels[1], 1, 1)
            self.aux_loss, self._stem_out = None, None
            self.stem.register_forward_hook(lambda m, i, o: setattr(self, "_stem_out", o))
            current[:] = [self]

        def liver_stats(self, image):
            return super().liver_stats(image[:, :self.cfg.in_channels])

        def sequences_present(self, image):
            return super().sequences_present(image[:, :self.cfg.in_channels])

        def forward(self, image, *args, **kw):
            target = image[:, self.cfg.in_channels] if image.shape[1] > self.cfg.in_channels else None
            out = super().forward(image[:, :self.cfg.in_channels], *args, **kw)
            if self.training and target is not None:
                logits = self.aux(self._stem_out)[:, 0].float()
                self.aux_loss = F.binary_cross_entropy_with_logits(
                    logits, F.avg_pool3d(target[:, None].float(), 2)[:, 0].clamp(0, 1))
            return out

    mse = F.mse_loss

    def mse_plus_aux(pred, y, *args, **kw):      # train_fold's loss, plus the spleen term while training
        loss = mse(pred, y, *args, **kw)
        net = current[0] if current else None
        if net is not None and net.training and net.aux_loss is not None:
            loss, net.aux_loss = loss + a.weight * net.aux_loss, None
        return loss

    torch.nn.functional.mse_loss = mse_plus_aux
    T.StiffnessTransformer = AuxSpleenNet
    cfg = T.TrainConfig(epochs=40, batch_size=8)
    train, test = cohorts(a.n, cfg.spec, PreprocessOptions(register=cfg.register, n4=cfg.n4))
    spleen = np.stack([spleen_on_crop(r, cfg.spec) for r in train.records])
    train.images = np.concatenate([train.images, spleen[:, None]], axis=1)
    train_and_score(train, test, cfg, a.seed, "aux_spleen_loss", {"weight": a.weight})
    return 0


if __name__ == "__main__":
    sys.exit(main())
