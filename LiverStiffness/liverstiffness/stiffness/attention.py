"""Where the model looked: attention rollout, per-layer and per-head attention, GradCAM, and
per-sequence input-gradient maps; plus how much each sequence moves the estimate.

Unit of every map: **times the uniform share** over the model's crop. A map is a distribution of
"looking" over the crop's voxels; the value at a voxel is its share divided by the share it would
have if the map were uniform (1 / number of voxels). 1.0 = uniform, 3.0 = three times as much as
its fair share, 0 = ignored. For attention the distribution is the CLS token's attention to the
image patches (renormalised over the patches: how much it looks at the images at all is
``image_token_share``); for GradCAM its positive part; for saliency |gradient × input|. No
display stretch is applied: the viewer chooses the window (the Slicer panel and montage do).

``map_summary`` says how far each map is from uniform; a map whose top tenth of the crop holds
less than ``INFORMATIVE_TOP10_SHARE`` of its mass is reported as carrying no spatial information.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM
from torch import nn

from .augment import SEQUENCE_GROUPS, ablation_inputs
from .network import SEQUENCE_CHANNELS, StiffnessTransformer

# A uniform map puts 10 % of its mass in any tenth of the crop. Below 1.5 times that, a map is
# too flat to say where the model looked (the first model's rollout: 0.11).
INFORMATIVE_TOP10_SHARE = 0.15


def rollout(att_mats: list[torch.Tensor], readout: torch.Tensor | None = None) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): heads averaged, the residual identity added,
    rows renormalised, layers multiplied. Returns the readout's flow to every token: [B, T]. The
    network reads its estimate from its tokens with the weights ``readout`` [B, T] (attention
    pooling, ``StiffnessTransformer.readout_weights``) or, when None, from their plain mean; the
    flow is that weighting of the tokens' rows."""
    result = None
    for a in att_mats:                      # [B, heads, T, T]
        a = a.float().mean(dim=1)
        a = a + torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    if readout is None:
        return result.mean(dim=1)
    return (readout.float()[:, None, :] @ result)[:, 0]


def layer_maps(att_mats: list[torch.Tensor], n_prefix: int) -> dict[str, torch.Tensor]:
    """CLS→patch attention of each layer (heads averaged) and of each head: name → [B, N]."""
    maps = {}
    for i, a in enumerate(att_mats):
        maps[f"layer{i}"] = a[:, :, 0, n_prefix:].float().mean(dim=1)
        for h in range(a.shape[1]):
            maps[f"layer{i}_head{h}"] = a[:, h, 0, n_prefix:].float()
    return maps


class _AsLogits(nn.Module):
    """MONAI's CAM classes expect [B, classes] logits; our single output is ln(kPa)."""

    def __init__(self, net: StiffnessTransformer):
        super().__init__()
        self.net = net
        # MONAI's hooks put the wrapper back into the mode they found it in, recursively: a new
        # module starts in training mode, which would leave dropout on for every later forward.
        self.train(net.training)

    def forward(self, image, cov, known):
        return self.net(image, cov, known)[:, None]


def times_uniform(arr: np.ndarray) -> np.ndarray:
    """A non-negative map → its values as multiples of the uniform share (mean 1 over the array)."""
    arr = np.clip(np.asarray(arr, np.float64), 0, None)
    mean = arr.mean()
    return (arr / mean if mean > 0 else np.zeros_like(arr)).astype(np.float32)


def _gradcam(net: StiffnessTransformer) -> GradCAM:
    """One GradCAM per fold model, made on first use and kept with it. MONAI's CAM classes
    register hooks on the model and keep no handle to remove them: a new one per exam left a set
    of hooks and a retained graph behind each time (a 200-exam batch grew from 0.9 to 4.4 GB).
    Kept in the model's ``__dict__``, not as a submodule (the wrapper holds the model)."""
    cam = net.__dict__.get("_liverstiffness_gradcam")
    if cam is None:
        # Raw CAM on the conv stem's output (its second, half-resolution layer, which the network
        # calls on its own: the map decoder also reads the first), without min-max postprocessing:
        # its positive part is the map.
        cam = GradCAM(nn_module=_AsLogits(net), target_layers="net.stem.1", postprocessing=lambda m: m)
        net.__dict__["_liverstiffness_gradcam"] = cam
    return cam


def patch_to_crop(values: torch.Tensor, cfg, size_zyx) -> np.ndarray:
    """[N] patch values → [z, y, x] on the crop, each patch's value over its voxels (nearest:
    a token covers its patch, no more)."""
    grid = values.reshape(1, 1, *cfg.grid).float()
    return F.interpolate(grid, size=tuple(size_zyx), mode="nearest")[0, 0].cpu().numpy()


@contextmanager
def _no_weight_gradients(net: nn.Module):
    """The maps need gradients with respect to the input and the stem's output only: without
    the weights' the backward pass takes half the time, and the maps are the same."""
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags):
            p.requires_grad_(flag)


def _gradient_maps(net: StiffnessTransformer, x, cov, known) -> tuple[np.ndarray, np.ndarray]:
    """GradCAM [z, y, x] and |gradient × input| per channel [C, z, y, x] from one forward and
    backward pass."""
    with torch.enable_grad(), _no_weight_gradients(net), warnings.catch_warnings():
        # MONAI's CAM hooks trigger a PyTorch notice about full backward hooks: harmless here.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        x_in = x.clone().requires_grad_(True)
        cam = _gradcam(net)(x_in, class_idx=0, cov=cov, known=known)[0, 0].detach().cpu().numpy()
    # GradCAM's backward pass has also left d(output)/d(input) in x_in.grad: exactly what
    # MONAI's VanillaGrad computes with a second forward and backward (checked in the tests).
    return cam, (x_in.grad[0] * x[0]).abs().detach().cpu().numpy()


def compute_maps(models: list[StiffnessTransformer], x: torch.Tensor, cov: torch.Tensor, known: torch.Tensor,
                 channels: tuple[str, ...], detail: bool = False, gradient: bool = True) -> tuple[dict, dict]:
    """Maps on the crop grid in times-uniform units, averaged over the fold models: ``rollout``
    always; ``gradcam`` and ``saliency_<sequence>`` with ``gradient``; ``layerL`` and
    ``layerL_headH`` with ``detail``. Also returns ``{"image_token_share": ...}``: the share of
    the CLS token's rollout that reaches image patches at all (the rest stays on the covariate,
    sequence and summary tokens)."""
    size = x.shape[2:]
    acc: dict[str, np.ndarray] = {}
    share = 0.0

    def add(name, arr):
        acc[name] = acc.get(name, 0) + times_uniform(arr) / len(models)

    for net in models:
        cfg = net.cfg
        # GradCAM's forward pass records the attention (and the readout's weights) as well: the
        # rollout reads them from there rather than from a second forward pass.
        grads = _gradient_maps(net, x, cov, known) if gradient else None
        if grads is None:
            with torch.no_grad():
                net(x, cov, known)
        att = net.attention_matrices()
        flow = rollout(att, net.readout_weights())[0]
        share += float(flow[cfg.n_prefix:].sum()) / len(models)
        add("rollout", patch_to_crop(flow[cfg.n_prefix:], cfg, size))
        if detail:
            for name, v in layer_maps(att, cfg.n_prefix).items():
                add(name, patch_to_crop(v[0], cfg, size))
        if grads is not None:
            cam, sal = grads
            add("gradcam", cam)
            for c, name in enumerate(channels):
                if name != "mask":
                    add(f"saliency_{name}", sal[c])
    return acc, {"image_token_share": round(share, 4)}


def map_summary(arr: np.ndarray, liver: np.ndarray | None = None) -> dict:
    """How far a times-uniform map is from uniform: its maximum, the share of its mass in its top
    tenth of voxels (0.10 when uniform), its normalised entropy (1.0 when uniform), the mean
    inside the liver (times uniform), and whether it carries spatial information at all."""
    v = np.clip(np.asarray(arr, np.float64).ravel(), 0, None)
    total = v.sum()
    if total <= 0:
        return {"max_times_uniform": 0.0, "top10_share": None, "normalised_entropy": None,
                "liver_mean_times_uniform": None, "informative": False}
    p = v / total
    top = np.sort(p)[::-1][:max(1, len(p) // 10)].sum()
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum() / np.log(len(p)))
    out = {"max_times_uniform": round(float(v.max()), 3), "top10_share": round(float(top), 4),
           "normalised_entropy": round(entropy, 4), "informative": bool(top >= INFORMATIVE_TOP10_SHARE)}
    if liver is not None and np.any(liver):
        out["liver_mean_times_uniform"] = round(float(np.asarray(arr)[np.asarray(liver) > 0.5].mean()), 3)
    return out


@torch.no_grad()
def sequence_contributions(models, x: torch.Tensor, cov, known, full_log) -> dict[str, float]:
    """kPa the estimate moves by when each sequence (T1w, T2w, DWI with its ADC) is left out,
    fold-averaged: prediction(all) − prediction(without it). The models were trained with
    sequence dropout, so an exam without one sequence is one they have seen (unlike replacing a
    sequence by a flat image, which is outside anything they were trained on).

    ``full_log``: the folds' ln(kPa) of the exam with every sequence [M, 1], from the estimate's
    own forward passes. The exam without each sequence goes through each fold as one batch."""
    available = models[0].sequences_present(x).cpu().numpy()
    groups = [g for g in SEQUENCE_GROUPS if available[0, SEQUENCE_CHANNELS.index(g)]]
    if not groups:
        return {}
    inputs = [ablation_inputs(available, f"without_{g}") for g in groups]
    present = torch.as_tensor(np.concatenate([p for p, _ in inputs]), device=x.device)
    tokens = torch.as_tensor([t for _, t in inputs], device=x.device)
    n = len(groups)
    logs = torch.stack([m(x.expand(n, *x.shape[1:]), cov.expand(n, -1), known.expand(n, -1), present, tokens)
                        for m in models])
    without = torch.exp(logs.mean(0)).tolist()
    full = float(torch.exp(torch.as_tensor(full_log, dtype=torch.float32).mean(0))[0])
    return {g: round(full - w, 4) for g, w in zip(groups, without)}
