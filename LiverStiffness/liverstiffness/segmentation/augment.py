"""Training samples for the 2.5-D liver network: slice stacks, strongly augmented (MONAI).

A sample is one axial slice of a case on the network grid with ``context`` neighbours on each
side as channels ([2·context + 1, y, x]) and the middle slice's label ([1, y, x]). Two of three
samples are drawn from slices that hold liver, so the network learns the organ's edge rather
than empty slices.

Augmentation is strong on purpose: 15 real cases from one scanner type must stand for many.
Spatial: rotation ±15°, scaling ±15 % per axis (``train-seg --scale-aug``), shifts, and now and
then an elastic deformation (2-D, in-plane). Appearance: bias field, gamma, intensity scale and
shift, lower resolution, blur and noise. No flips: the liver is on the patient's right, and a
mirrored abdomen would teach the network that the spleen may be liver.

Organ-wise intensity: now and then each labelled organ's signal (liver, spleen, kidneys) is
scaled by its own factor before the spatial transforms. Liver T2 signal is not one value:
iron overload makes liver and spleen dark (CHAOS case 15, liver at 0.4× the others' contrast,
spleen at 0.2×, was missed almost entirely by a network trained without this), oedema and
inflammation make it brighter. Whole-image intensity changes cannot teach that, because they
keep the liver's contrast to its neighbours; this makes the network rely on shape and position.
Optionally (``keep_bright``) the organ's bright inner structures keep their signal: iron darkens the
parenchyma, not the blood in its vessels, so an iron-loaded liver on T2w is dark with bright
vessels (CHAOS case 15: parenchyma at 0.16, vessels at 0.5–0.6 of the normalised range; in the
other livers vessels lie at 1.5–2× the parenchyma). Scaling the whole organ, vessels included,
never shows the network that pattern. Off by default: with it (runs M and N, seeds 0 and 1, bench/RESULTS.md)
case 15 rose 0.81 → 0.85 and 0.76 → 0.83, the mean held-out Dice moved −0.007 and +0.002.
"""
from __future__ import annotations

import numpy as np

LIVER_SLICE_FRACTION = 2 / 3
ORGAN_INTENSITY_EDGE_SIGMA = 0.75    # voxels: the factor map's edge, as partial volume blurs the organ's
# keep_bright: an organ voxel at BRIGHT_FROM × the organ's median signal starts to keep its own signal,
# fully from BRIGHT_FROM + BRIGHT_RAMP (vessels in the CHAOS livers: 1.5–2× the parenchyma)
BRIGHT_FROM, BRIGHT_RAMP = 1.25, 0.35


def slice_stack(volume: np.ndarray, k: int, context: int) -> np.ndarray:
    """Slices k − context … k + context of a [z, y, x] volume (edges repeated) → [2·context + 1, y, x]."""
    idx = np.clip(np.arange(k - context, k + context + 1), 0, volume.shape[0] - 1)
    return volume[idx]


def organ_intensity(stack: np.ndarray, organs: np.ndarray, rng: np.random.Generator, prob: float,
                    factor_range: tuple[float, float], keep_bright: bool = False) -> np.ndarray:
    """``stack`` [C, y, x] with each organ of ``organs`` [C, y, x] (0 none, 1, 2, …) scaled, with
    probability ``prob`` per organ, by a factor drawn log-uniformly from ``factor_range``;
    ``keep_bright``: the organ's voxels well above its median (vessels) keep their signal."""
    from scipy.ndimage import gaussian_filter

    present = [o for o in np.unique(organs) if o != 0]
    chosen = [o for o in present if rng.random() < prob]
    if not chosen:
        return stack
    lo, hi = np.log(factor_range)
    factor = np.ones(stack.shape, np.float32)
    kept = np.zeros(stack.shape, np.float32) if keep_bright else None    # per voxel: 1 keeps its own signal
    for o in chosen:
        inside = organs == o
        factor[inside] = np.exp(rng.uniform(lo, hi))
        if kept is not None:
            median = max(float(np.median(stack[inside])), 1e-3)
            kept[inside] = np.clip((stack[inside] / median - BRIGHT_FROM) / BRIGHT_RAMP, 0.0, 1.0)
    factor = gaussian_filter(factor, (0, ORGAN_INTENSITY_EDGE_SIGMA, ORGAN_INTENSITY_EDGE_SIGMA))
    if kept is not None:
        factor = factor * (1.0 - kept) + kept
    return np.clip(stack * factor, 0.0, 1.0)


def training_transforms(patch_yx, seed: int, scale: float):
    """``scale``: each in-plane axis scaled by a factor within 1 ± scale (RandAffine; the default is
    ``SegTrainConfig.scale_aug``, kept there once)."""
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
        RandAffined(keys, prob=0.85, rotate_range=(0.26,), scale_range=(scale, scale), translate_range=(10, 10),
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


def case_weights(cases, synthetic_share: float | None) -> np.ndarray | None:
    """Sampling probability per case so that synthetic exams make ``synthetic_share`` of the
    samples (spread evenly over them, the rest over the real cases); None: uniform over cases."""
    synthetic = np.array([c.source == "synthetic" for c in cases])
    if synthetic_share is None or synthetic.all() or not synthetic.any():
        return None
    return np.where(synthetic, synthetic_share / synthetic.sum(), (1 - synthetic_share) / (~synthetic).sum())


def augmented_batch(cases, transforms, rng: np.random.Generator, batch_size: int, context: int,
                    organ_prob: float = 0.0, organ_range: tuple[float, float] = (1.0, 1.0),
                    weights: np.ndarray | None = None, organ_keep_bright: bool = False, aux_organs: int = 0):
    """``batch_size`` random slice stacks, each augmented once: [B, C, y, x] image, [B, 1 + aux_organs, y, x]
    label (the liver, then each other organ of the case's ``other_organs``) and [B] whether the sample's
    other organs are labelled (a synthetic exam has only its liver). ``weights``: sampling probability per
    case (``case_weights``); None: uniform."""
    import torch

    xs, ys, known = [], [], []
    picks = rng.integers(0, len(cases), batch_size) if weights is None else rng.choice(len(cases), batch_size, p=weights)
    for i in picks:
        c = cases[int(i)]
        liver = np.flatnonzero(c.label.reshape(c.label.shape[0], -1).any(axis=1))
        pick_liver = len(liver) and rng.random() < LIVER_SLICE_FRACTION
        k = int(rng.choice(liver)) if pick_liver else int(rng.integers(0, c.image.shape[0]))
        stack = slice_stack(c.image, k, context)
        if organ_prob > 0:
            organs = c.organs if c.organs is not None else c.label
            stack = organ_intensity(stack, slice_stack(organs, k, context), rng, organ_prob, organ_range,
                                    organ_keep_bright)
        label = c.label[k][None].astype(np.float32)
        has = aux_organs > 0 and c.organs is not None and len(c.other_organs) >= aux_organs
        if aux_organs:
            others = np.zeros((aux_organs, *label.shape[1:]), np.float32)
            for j, o in enumerate(c.other_organs[:aux_organs] if has else ()):
                others[j] = c.organs[k] == o
            label = np.concatenate([label, others])
        known.append(has)
        # one call for all label channels: the same spatial draw moves liver and neighbours alike
        out = transforms({"image": stack, "label": label})
        xs.append(torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32))
        ys.append((torch.as_tensor(np.asarray(out["label"])) > 0.5).float())
    return torch.stack(xs), torch.stack(ys), torch.as_tensor(known)
