"""Elastograms as dense training targets, and the stiffness map's regional read-out.

An exam's elastogram (kPa, on the MRE grid) and its confidence mask are resampled onto the
model's crop (``preprocess.InputSpec``) as two channels: the target, ln kPa, and its weight, 1 on
the voxels a reader would use (confident, in the liver, inside the MRE slab) and 0 elsewhere. The
dense loss is the weighted mean squared error of the predicted ln-kPa map there, beside the
global loss; exams without an elastogram have weight 0 everywhere and train as before.

Where the two live: the crop comes from the liver mask on the reference grid, so the target is
made with the same geometry as the images (``crop_of``) and cached beside them.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from .. import spatial
from ..errors import InputError

# A crop voxel counts where the confidence mask, resampled onto it, covers at least this share
# (a 6 × 6 × 8 mm voxel holds about five MRE voxels).
MIN_CONFIDENCE_SHARE = 0.5
MIN_LIVER_SHARE = 0.5
# Regions of the map by geometry: the right and left lobe split at the liver's median x (LPS: x to
# the patient's left; Cantlie's line lies near the middle of the liver's width), and eight sectors
# (those halves × anterior/posterior at the median y × superior/inferior at the median z).
REGION_NAMES = ("right lobe", "left lobe")


def crop_of(rec, spec, options) -> sitk.Image:
    """The crop grid ``preprocess.prepare`` makes for ``rec`` (centred on its mask's centroid on
    the reference grid), without preprocessing the images."""
    from ..preprocess import mask_on_reference, read_exam

    images = read_exam(rec.t1w, rec.t2w, rec.dwi, rec.mask, rec.dwi_b, options.mask_label)
    return spatial.centred_grid(spatial.centroid_mm(mask_on_reference(images)), spec.spacing_mm, spec.size)


def map_targets(mre_map, mre_confidence, crop: sitk.Image, liver_fraction: np.ndarray) -> np.ndarray:
    """[2, z, y, x] float32 on ``crop``: ln kPa of the elastogram and the weight (0/1) of each voxel."""
    try:
        kpa = sitk.Cast(sitk.ReadImage(str(mre_map)), sitk.sitkFloat32)
        conf = sitk.Cast(sitk.ReadImage(str(mre_confidence)) > 0, sitk.sitkFloat32)
    except RuntimeError as exc:
        raise InputError(mre_map, f"cannot be read as an elastogram ({str(exc).splitlines()[0]})") from None
    if kpa.GetSize() != conf.GetSize():
        raise InputError(mre_confidence, f"grid {conf.GetSize()} differs from the elastogram's {kpa.GetSize()}")
    conf.CopyInformation(kpa)
    # kPa weighted by confidence, then divided by the confidence's share: unreliable values do not
    # leak into a crop voxel; outside the MRE slab the share is 0 (default).
    share = sitk.GetArrayFromImage(spatial.resample_like(conf, crop, default=0.0))
    weighted = sitk.GetArrayFromImage(spatial.resample_like(kpa * conf, crop, default=0.0))
    valid = (share >= MIN_CONFIDENCE_SHARE) & (liver_fraction >= MIN_LIVER_SHARE)
    value = np.where(valid, weighted / np.maximum(share, 1e-6), 1.0)
    valid &= value > 0.1
    return np.stack([np.log(np.clip(value, 0.1, None)), valid.astype(np.float32)]).astype(np.float32)


def dense_loss(map_log: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Weighted MSE of ``map_log`` [B, z, y, x] against ``target`` [B, 2, z, y, x] (ln kPa, weight);
    zero when no voxel of the batch has a weight."""
    w = target[:, 1]
    return (w * (map_log.float() - target[:, 0]) ** 2).sum() / w.sum().clamp_min(1.0)


def regions(liver: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean [z, y, x] masks of the liver's regions by geometry (``REGION_NAMES`` and eight
    sectors "right/left, anterior/posterior, superior/inferior")."""
    idx = np.argwhere(liver)
    if not len(idx):
        return {}
    zc, yc, xc = np.median(idx, axis=0)
    z, y, x = np.indices(liver.shape)
    right, anterior, superior = x <= xc, y <= yc, z >= zc    # array z grows superior (LPS origin below)
    out = {"right lobe": liver & right, "left lobe": liver & ~right}
    for lr, m_lr in (("right", right), ("left", ~right)):
        for ap, m_ap in (("anterior", anterior), ("posterior", ~anterior)):
            for si, m_si in (("superior", superior), ("inferior", ~superior)):
                out[f"{lr} {ap} {si}"] = liver & m_lr & m_ap & m_si
    return {k: v for k, v in out.items() if v.any()}


def regional_means(kpa: np.ndarray, liver: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """Mean kPa of each region (``regions``), over ``weight`` > 0 when given."""
    out = {}
    for name, m in regions(liver).items():
        if weight is not None:
            m = m & (weight > 0)
        if m.any():
            out[name] = float(kpa[m].mean())
    return out


@torch.no_grad()
def predict_map_log(models, images, cov, known, device: torch.device, batch: int = 16) -> np.ndarray:
    """[N, z, y, x] ln-kPa maps of the crops, averaged over ``models`` (each with a map decoder)."""
    out = np.zeros((len(images), *np.asarray(images).shape[2:]), np.float64)
    for s in range(0, len(images), batch):
        x = torch.as_tensor(np.asarray(images[s:s + batch]), dtype=torch.float32, device=device)
        c = torch.as_tensor(np.asarray(cov[s:s + batch]), dtype=torch.float32, device=device)
        k = torch.as_tensor(np.asarray(known[s:s + batch]), dtype=torch.bool, device=device)
        for net in models:
            out[s:s + batch] += net(x, c, k, return_map=True)[1].float().cpu().numpy() / len(models)
    return out


def _pooled_r(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    p = np.concatenate([a for a, _ in pairs])
    t = np.concatenate([b for _, b in pairs])
    return float(np.corrcoef(p, t)[0, 1]) if len(p) > 2 and p.std() > 0 and t.std() > 0 else float("nan")


def _pooled_r_ci(pairs, groups, n_boot: int = 1000, seed: int = 0) -> list[float] | None:
    """Percentile bootstrap CI of the pooled r, resampling patients (all of a patient's exams
    together); None where r is undefined (a constant map)."""
    rng = np.random.default_rng(seed)
    by = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    keys = list(by)
    rs = []
    for _ in range(n_boot):
        pick = [i for g in rng.choice(len(keys), len(keys)) for i in by[keys[g]]]
        rs.append(_pooled_r([pairs[i] for i in pick]))
    if not np.isfinite(rs).any():
        return None
    lo, hi = np.nanpercentile(rs, [2.5, 97.5])
    return [round(float(lo), 3), round(float(hi), 3)]


# MRE's own repeatability: a difference within ±20 % is not a real change (docs/phantom.md).
AGREEMENT_BAND = 0.2


def map_agreement(pred_log: np.ndarray, targets: np.ndarray, liver: np.ndarray, groups=None) -> dict:
    """How a predicted map agrees with measured elastograms on the voxels a reader would use
    (``targets``' weight > 0): pooled voxel-level r (kPa), the median of each exam's own voxel r
    (the regional pattern alone, without the differences between exams), region-level r over
    (exam, region) pairs (``regions``), the bias (kPa) and the share of voxels within ±20 %.
    CIs resample patients (``groups``; default: exams)."""
    groups = list(groups) if groups is not None else list(range(len(pred_log)))
    voxels, region_pairs, own_r, keep = [], [], [], []
    for i in range(len(pred_log)):
        w = targets[i, 1] > 0
        if not w.any():
            continue
        keep.append(i)
        p, t = np.exp(pred_log[i]), np.exp(targets[i, 0])
        voxels.append((p[w], t[w]))
        if w.sum() > 5 and p[w].std() > 0:
            own_r.append(np.corrcoef(p[w], t[w])[0, 1])
        masks = [m & w for m in regions(liver[i] > MIN_LIVER_SHARE).values() if (m & w).sum() >= 3]
        region_pairs.append((np.array([p[m].mean() for m in masks]), np.array([t[m].mean() for m in masks])))
    if not keep:
        return {"n_exams": 0}
    g = [groups[i] for i in keep]
    p_all = np.concatenate([a for a, _ in voxels])
    t_all = np.concatenate([b for _, b in voxels])
    return {"n_exams": len(keep), "n_voxels": int(len(p_all)),
            "voxel_r": round(_pooled_r(voxels), 3), "voxel_r_ci95": _pooled_r_ci(voxels, g),
            "within_exam_voxel_r_median": round(float(np.median(own_r)), 3) if own_r else None,
            "region_r": round(_pooled_r(region_pairs), 3), "region_r_ci95": _pooled_r_ci(region_pairs, g),
            "bias_kpa": round(float(np.mean(p_all - t_all)), 3),
            "within_20_percent": round(float(np.mean(np.abs(p_all / t_all - 1) <= AGREEMENT_BAND)), 3)}
