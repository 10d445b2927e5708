"""Where the model looked: attention rollout, per-layer and per-head attention, GradCAM, and
per-sequence input-gradient maps; plus how much each sequence moves the estimate.

All maps are computed on the model's crop, averaged over the fold models, mapped back onto the
T1w grid, restricted to the liver mask and scaled to [0, 1] inside it.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM
from torch import nn

from .model.network import StiffnessViT


def rollout(att_mats: list[torch.Tensor], n_prefix: int) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): heads averaged, the residual identity added,
    rows renormalised, layers multiplied. Returns the CLS token's flow to each patch: [B, N]."""
    result = None
    for a in att_mats:                      # [B, heads, T, T]
        a = a.float().mean(dim=1)
        a = a + torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result[:, 0, n_prefix:]


def layer_maps(att_mats: list[torch.Tensor], n_prefix: int) -> dict[str, torch.Tensor]:
    """CLS→patch attention of each layer (heads averaged) and of each head: name → [B, N]."""
    maps = {}
    for l, a in enumerate(att_mats):
        maps[f"layer{l}"] = a[:, :, 0, n_prefix:].float().mean(dim=1)
        for h in range(a.shape[1]):
            maps[f"layer{l}_head{h}"] = a[:, h, 0, n_prefix:].float()
    return maps


class _AsLogits(nn.Module):
    """MONAI's CAM classes expect [B, classes] logits; our single output is ln(kPa)."""

    def __init__(self, net: StiffnessViT):
        super().__init__()
        self.net = net
        # MONAI's hooks put the wrapper back into the mode they found it in, recursively: a new
        # module starts in training mode, which would leave dropout on for every later forward.
        self.train(net.training)

    def forward(self, image, cov, known):
        return self.net(image, cov, known)[:, None]


def _gradcam(net: StiffnessViT) -> GradCAM:
    """One GradCAM per fold model, made on first use and kept with it. MONAI's CAM classes
    register hooks on the model and keep no handle to remove them: a new one per exam left a set
    of hooks and a retained graph behind each time (a 200-exam batch grew from 0.9 to 4.4 GB).
    Kept in the model's ``__dict__``, not as a submodule (the wrapper holds the model)."""
    cam = net.__dict__.get("_liverstiffness_gradcam")
    if cam is None:
        cam = GradCAM(nn_module=_AsLogits(net), target_layers="net.patch_embedding.patch_embeddings")
        net.__dict__["_liverstiffness_gradcam"] = cam
    return cam


def patch_to_crop(values: torch.Tensor, cfg, size_zyx) -> np.ndarray:
    """[N] patch values → [z, y, x] on the crop (trilinear)."""
    grid = values.reshape(1, 1, *cfg.grid)
    return F.interpolate(grid, size=tuple(size_zyx), mode="trilinear", align_corners=False)[0, 0].cpu().numpy()


def compute_maps(models: list[StiffnessViT], x: torch.Tensor, cov: torch.Tensor, known: torch.Tensor,
                 channels: tuple[str, ...], detail: bool = False, gradient: bool = True) -> dict[str, np.ndarray]:
    """Maps on the crop grid, averaged over the fold models: ``rollout`` always; ``gradcam`` and
    ``saliency_<sequence>`` with ``gradient``; ``layerL`` and ``layerL_headH`` with ``detail``."""
    size = x.shape[2:]
    acc: dict[str, np.ndarray] = {}

    def add(name, arr):
        acc[name] = acc.get(name, 0) + arr / len(models)

    for net in models:
        cfg = net.cfg
        with torch.no_grad():
            net(x, cov, known)
            att = net.attention_matrices()
        add("rollout", patch_to_crop(rollout(att, cfg.n_prefix)[0], cfg, size))
        if detail:
            for name, v in layer_maps(att, cfg.n_prefix).items():
                add(name, patch_to_crop(v[0], cfg, size))
        if gradient:
            with torch.enable_grad(), warnings.catch_warnings():
                # MONAI's CAM hooks trigger a PyTorch notice about full backward hooks: harmless here.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                cam = _gradcam(net)
                x_in = x.clone().requires_grad_(True)
                add("gradcam", cam(x_in, class_idx=0, cov=cov, known=known)[0, 0].detach().cpu().numpy())
            # GradCAM's backward pass has also left d(output)/d(input) in x_in.grad: exactly what
            # MONAI's VanillaGrad computes with a second forward and backward (checked in the tests).
            sal = (x_in.grad[0] * x[0]).abs().detach().cpu().numpy()  # gradient × input, per channel
            for c, name in enumerate(channels):
                if name != "mask":
                    add(f"saliency_{name}", sal[c])
    return acc


@torch.no_grad()
def sequence_contributions(models, x: torch.Tensor, cov, known, channels) -> dict[str, float]:
    """kPa change when each sequence is replaced by its mean inside the liver (texture and
    contrast removed): prediction(all) − prediction(sequence flattened), fold-averaged ln → kPa."""
    inside = x[0, channels.index("mask")] > 0.5
    variants = [x]
    names = [c for c in channels if c != "mask"]
    for name in names:
        v = x.clone()
        k = channels.index(name)
        v[0, k] = x[0, k][inside].mean()
        variants.append(v)
    batch = torch.cat(variants)
    logs = torch.stack([m(batch, cov.expand(len(batch), -1), known.expand(len(batch), -1)) for m in models]).mean(0)
    kpa = torch.exp(logs).cpu().numpy()
    return {name: round(float(kpa[0] - kpa[i + 1]), 4) for i, name in enumerate(names)}


def restrict_and_scale(arr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero outside the mask; min–max scaled to [0, 1] inside it."""
    out = np.zeros(arr.shape, np.float32)
    inside = mask > 0
    if inside.any():
        v = arr[inside]
        lo, hi = float(v.min()), float(v.max())
        out[inside] = (v - lo) / (hi - lo) if hi > lo else 0.0
    return out
