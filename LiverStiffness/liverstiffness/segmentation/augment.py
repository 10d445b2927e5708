"""Training samples for the 2.5-D liver network: slice stacks, strongly augmented (MONAI).

A sample is one axial slice of a case on the network grid with ``context`` neighbours on each
side as channels ([2·context + 1, y, x]) and the middle slice's label ([1, y, x]). Two of three
samples are drawn from slices that hold liver, so the network learns the organ's edge rather
than empty slices.

Augmentation is strong on purpose: 15 real cases from one scanner type must stand for many.
Spatial: rotation ±15°, scaling ±15 %, shifts, and now and then an elastic deformation (2-D,
in-plane). Appearance: bias field, gamma, intensity scale and shift, lower resolution, blur and
noise. No flips: the liver is on the patient's right, and a mirrored abdomen would teach the
network that the spleen may be liver.
"""
from __future__ import annotations

import numpy as np

LIVER_SLICE_FRACTION = 2 / 3


def slice_stack(volume: np.ndarray, k: int, context: int) -> np.ndarray:
    """Slices k − context … k + context of a [z, y, x] volume (edges repeated) → [2·context + 1, y, x]."""
    idx = np.clip(np.arange(k - context, k + context + 1), 0, volume.shape[0] - 1)
    return volume[idx]


def training_transforms(patch_yx, seed: int):
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        RandAdjustContrastd,
        RandAffined,
        RandBiasFieldd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSimulateLowResolutiond,
        RandSpatialCropd,
        SpatialPadd,
    )

    patch = tuple(int(p) for p in patch_yx)
    keys = ("image", "label")
    t = Compose([
        SpatialPadd(keys, patch),
        RandSpatialCropd(keys, patch, random_size=False),
        RandAffined(keys, prob=0.85, rotate_range=(0.26,), scale_range=(0.15, 0.15), translate_range=(10, 10),
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        Rand2DElasticd(keys, spacing=(24, 24), magnitude_range=(0.5, 2.0), prob=0.2, mode=("bilinear", "nearest"),
                       padding_mode="zeros"),
        RandSimulateLowResolutiond("image", prob=0.2, zoom_range=(0.5, 1.0), upsample_mode="bilinear"),
        RandBiasFieldd("image", prob=0.4, degree=3, coeff_range=(0.0, 0.25)),
        RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
        RandScaleIntensityd("image", factors=0.15, prob=0.3),
        RandShiftIntensityd("image", offsets=0.08, prob=0.3),
        RandGaussianSmoothd("image", prob=0.15, sigma_x=(0.4, 1.0), sigma_y=(0.4, 1.0)),
        RandGaussianNoised("image", prob=0.2, std=0.03),
    ])
    t.set_random_state(seed=seed)
    return t


def augmented_batch(cases, transforms, rng: np.random.Generator, batch_size: int, context: int):
    """``batch_size`` random slice stacks, each augmented once: ([B, C, y, x] image, [B, 1, y, x] label)."""
    import torch

    xs, ys = [], []
    for i in rng.integers(0, len(cases), batch_size):
        c = cases[int(i)]
        liver = np.flatnonzero(c.label.reshape(c.label.shape[0], -1).any(axis=1))
        pick_liver = len(liver) and rng.random() < LIVER_SLICE_FRACTION
        k = int(rng.choice(liver)) if pick_liver else int(rng.integers(0, c.image.shape[0]))
        out = transforms({"image": slice_stack(c.image, k, context),
                          "label": c.label[k][None].astype(np.float32)})
        xs.append(torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32))
        ys.append((torch.as_tensor(np.asarray(out["label"])) > 0.5).float())
    return torch.stack(xs), torch.stack(ys)
