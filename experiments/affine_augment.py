"""Random-affine augmentation of each training batch: does moving the anatomy help site E?

    python -m experiments.affine_augment [--n 300] [--rotate 10] [--scale 0.1] [--shift 2] [--p 0.8] [--seed 0]
    (from the repository root, as a module: it imports ``experiments/common.py``)

On top of ``augment.SiteAugment`` (which shifts by a voxel at most), each exam of a batch is, with
probability p, rotated in-plane by up to ±rotate degrees, scaled per axis by up to ±scale and
moved by up to ±shift voxels (torch ``affine_grid``/``grid_sample`` on the whole batch, edges
repeated). The rotation is physical: the crop's voxels are not cubic (6 × 6 × 8 mm).
"""
from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F

import liverstiffness.stiffness.augment as A
import liverstiffness.stiffness.train as T
from experiments.common import cohorts, train_and_score
from liverstiffness.preprocess import PreprocessOptions


def random_affine(x: torch.Tensor, gen: torch.Generator, spacing_xyz, rotate: float, scale: float, shift: float,
                  p: float) -> torch.Tensor:
    b, _, d, h, w = x.shape
    half = torch.tensor(spacing_xyz, dtype=torch.float32) * torch.tensor([w, h, d], dtype=torch.float32) / 2
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotate)
    factor = 1 + (torch.rand(b, 3, generator=gen) * 2 - 1) * scale
    move = (torch.rand(b, 3, generator=gen) * 2 - 1) * shift * 2 / torch.tensor([w, h, d], dtype=torch.float32)
    theta = torch.zeros(b, 3, 4)
    for i in range(b):
        c, s = math.cos(angle[i]), math.sin(angle[i])
        rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ torch.diag(1 / factor[i])
        theta[i, :, :3] = torch.diag(1 / half) @ rot @ torch.diag(half)   # physical rotation, normalised grid
        theta[i, :, 3] = move[i]
    theta[torch.rand(b, generator=gen) >= p] = torch.eye(3, 4)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).to(x.dtype)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rotate", type=float, default=10.0, help="largest in-plane rotation, degrees")
    ap.add_argument("--scale", type=float, default=0.1, help="largest scale change per axis")
    ap.add_argument("--shift", type=float, default=2.0, help="largest translation, voxels")
    ap.add_argument("--p", type=float, default=0.8, help="share of exams moved")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = T.TrainConfig(epochs=40, batch_size=8)
    site_augment = A.SiteAugment.__call__

    def site_then_affine(self, x):
        return random_affine(site_augment(self, x), self.gen, cfg.spec.spacing_mm, a.rotate, a.scale, a.shift, a.p)

    A.SiteAugment.__call__ = site_then_affine
    train, test = cohorts(a.n, cfg.spec, PreprocessOptions(register=cfg.register, n4=cfg.n4))
    train_and_score(train, test, cfg, a.seed, "affine_augment",
                    {"rotate": a.rotate, "scale": a.scale, "shift": a.shift, "p": a.p})
    return 0


if __name__ == "__main__":
    sys.exit(main())
