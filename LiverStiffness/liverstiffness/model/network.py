"""A multi-channel 3-D vision transformer for liver stiffness, from MONAI building blocks.

Tokens: [CLS] + one token per clinical covariate + a liver-summary token + one per image patch. The patch tokens come
from MONAI's ``PatchEmbeddingBlock`` (a strided 3-D convolution with learnable position
embedding) over the channels T1w, T2w, DWI, ADC and the liver fraction; the layers are MONAI
``TransformerBlock``s with ``save_attn`` so that attention maps can be read out. A covariate token
is ``value · w + type embedding``, or a learned "missing" embedding + type embedding when the
value is unknown. The liver-summary token embeds masked statistics the network pools itself
(per channel: mean and SD inside the liver fraction channel; the liver's share of the crop):
global relaxation/diffusion shifts and texture are then one linear step away, and the patch
tokens add what only a spatial model sees (surface, lobes, spleen, contrasts with neighbours).
The output is a linear skip from the summary and covariates plus the head on the CLS token.
Training starts the skip at the ridge solution on the fold's training exams and the head at
zero (``init_linear_path``), so the transformer learns what the linear model misses rather than
having to rediscover it from ~200 exams.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from torch import nn

from .covariates import COVARIATES


@dataclass(frozen=True)
class ModelConfig:
    in_channels: int = 5
    img_size: tuple[int, int, int] = (24, 40, 64)    # z, y, x (array order of the crop)
    patch_size: tuple[int, int, int] = (6, 8, 8)
    hidden_size: int = 64
    mlp_dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    dropout: float = 0.1
    n_covariates: int = len(COVARIATES)
    mask_channel: int = 4           # index of the liver-fraction channel

    @property
    def n_stats(self) -> int:
        return 4 * (self.in_channels - 1) + 1 + 4

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(i // p for i, p in zip(self.img_size, self.patch_size))

    @property
    def n_prefix(self) -> int:
        """Tokens before the image patches: CLS, covariates, liver summary."""
        return 2 + self.n_covariates

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        for k in ("img_size", "patch_size"):
            d[k] = tuple(d[k])
        return cls(**d)


class StiffnessViT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=cfg.in_channels, img_size=cfg.img_size, patch_size=cfg.patch_size, hidden_size=h,
            num_heads=cfg.num_heads, proj_type="conv", pos_embed_type="learnable", dropout_rate=cfg.dropout,
            spatial_dims=3)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, h))
        self.cov_value = nn.Parameter(torch.randn(cfg.n_covariates, h) * 0.02)
        self.cov_type = nn.Parameter(torch.randn(cfg.n_covariates, h) * 0.02)
        self.cov_missing = nn.Parameter(torch.randn(cfg.n_covariates, h) * 0.02)
        # Standardisation of the summary, set from the training cohort (saved with the weights).
        self.register_buffer("stats_mean", torch.zeros(cfg.n_stats))
        self.register_buffer("stats_std", torch.ones(cfg.n_stats))
        self.stats_embed = nn.Linear(cfg.n_stats, h)
        self.skip = nn.Linear(cfg.n_stats + 2 * cfg.n_covariates, 1)
        self.blocks = nn.ModuleList([
            TransformerBlock(h, cfg.mlp_dim, cfg.num_heads, cfg.dropout, qkv_bias=True, save_attn=True)
            for _ in range(cfg.num_layers)])
        self.norm = nn.LayerNorm(h)
        self.head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))
        nn.init.constant_(self.head[-1].bias, 1.05)  # the cohort's typical ln(kPa) until init_linear_path

    def liver_stats(self, image: torch.Tensor) -> torch.Tensor:
        """[B, n_stats]: mean, SD, 10th and 90th percentile of every image channel inside the
        liver (fraction > 0.5), and the liver's share of the crop."""
        k = self.cfg.mask_channel
        w = image[:, k:k + 1].clamp(0, 1)
        n = w.sum(dim=(2, 3, 4)).clamp_min(1.0)
        x = torch.cat([image[:, :k], image[:, k + 1:]], dim=1)
        mean = (x * w).sum(dim=(2, 3, 4)) / n
        var = (((x - mean[..., None, None, None]) ** 2) * w).sum(dim=(2, 3, 4)) / n
        share = n / w[0, 0].numel()
        inside = w[:, 0] > 0.5
        q = torch.tensor([0.1, 0.9], device=image.device, dtype=image.dtype)
        pct = torch.stack([torch.quantile(x[i][:, inside[i]], q, dim=1).T.reshape(-1) if inside[i].any()
                           else torch.zeros(2 * x.shape[1], device=image.device, dtype=image.dtype)
                           for i in range(x.shape[0])])
        return torch.cat([mean, torch.sqrt(var + 1e-6), pct, share * 10.0, self.shape_stats(w[:, 0], n[:, 0])], dim=1)

    @staticmethod
    def shape_stats(w: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """[B, 4] of the liver fraction: surface roughness (summed gradient magnitude over
        volume^(2/3), which a nodular surface raises) and the three normalised principal extents
        (caudate hypertrophy and right-lobe atrophy change the organ's proportions)."""
        gz, gy, gx = torch.gradient(w, dim=(1, 2, 3))
        rough = torch.sqrt(gz ** 2 + gy ** 2 + gx ** 2).sum(dim=(1, 2, 3)) / n.clamp_min(1) ** (2 / 3)
        coords = torch.stack(torch.meshgrid(*[torch.arange(s, device=w.device, dtype=w.dtype) for s in w.shape[1:]],
                                            indexing="ij"), dim=-1).reshape(-1, 3)
        flat = w.reshape(w.shape[0], -1)
        mu = flat @ coords / n[:, None].clamp_min(1)
        d = coords[None] - mu[:, None]
        cov = torch.einsum("bn,bni,bnj->bij", flat, d, d) / n[:, None, None].clamp_min(1)
        ev = torch.linalg.eigvalsh(cov + 1e-6 * torch.eye(3, device=w.device, dtype=w.dtype))
        return torch.cat([rough[:, None], (ev / ev.sum(dim=1, keepdim=True))], dim=1)

    def norm_stats(self, stats: torch.Tensor) -> torch.Tensor:
        return (stats - self.stats_mean) / self.stats_std

    def linear_inputs(self, stats, cov, kf) -> torch.Tensor:
        return torch.cat([self.norm_stats(stats), cov * kf, kf], dim=1)

    @torch.no_grad()
    def init_linear_path(self, images, cov, known, y_log, alpha: float = 1.0, batch: int = 32) -> None:
        """Fit the summary standardisation and the skip (ridge, closed form) on training exams;
        zero the head, so training starts from the linear model's predictions."""
        dev = self.stats_mean.device
        stats = torch.cat([self.liver_stats(torch.as_tensor(images[s:s + batch], device=dev))
                           for s in range(0, len(images), batch)])
        self.stats_mean.copy_(stats.mean(0))
        self.stats_std.copy_(stats.std(0).clamp_min(1e-4))
        kf = torch.as_tensor(known, device=dev, dtype=stats.dtype)
        X = self.linear_inputs(stats, torch.as_tensor(cov, device=dev, dtype=stats.dtype), kf).double()
        y = torch.as_tensor(y_log, device=dev, dtype=torch.float64)
        xm, ym = X.mean(0), y.mean()
        Xc = X - xm
        w = torch.linalg.solve(Xc.T @ Xc + alpha * torch.eye(X.shape[1], device=dev, dtype=X.dtype), Xc.T @ (y - ym))
        self.skip.weight.copy_(w[None].float())
        self.skip.bias.fill_(float(ym - xm @ w))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def tokens(self, image: torch.Tensor, cov: torch.Tensor, known: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        patches = self.patch_embedding(image)                                   # B, N, H
        cov_tok = torch.where(known[..., None], cov[..., None] * self.cov_value, self.cov_missing) + self.cov_type
        stats_tok = self.stats_embed(self.norm_stats(stats))[:, None]
        return torch.cat([self.cls_token.expand(b, -1, -1), cov_tok.to(patches.dtype), stats_tok.to(patches.dtype), patches], dim=1)

    def forward(self, image: torch.Tensor, cov: torch.Tensor, known: torch.Tensor,
                stats_image: torch.Tensor | None = None) -> torch.Tensor:
        """image [B, C, z, y, x], cov [B, K], known [B, K] bool → ln(kPa) [B].

        ``stats_image``: where the liver summary is taken from when it differs from ``image``
        (training augments the patches, while the summary, robust by construction after
        normalisation, sees the exam as acquired).
        """
        # The liver summary and the linear path carry most of the estimate: they stay in float32
        # under mixed precision (bfloat16 matrix products there move results by up to 0.03 kPa).
        with torch.autocast(image.device.type, enabled=False):
            stats = self.liver_stats((image if stats_image is None else stats_image).float())
            linear = self.skip(self.linear_inputs(stats, cov.float(), known.float()))
        x = self.tokens(image, cov, known, stats)
        for blk in self.blocks:
            x = blk(x)
        return (self.head(self.norm(x[:, 0])).float() + linear).squeeze(-1)

    def attention_matrices(self) -> list[torch.Tensor]:
        """Softmax attention of each layer from the last forward pass: [B, heads, T, T] each."""
        return [blk.attn.att_mat for blk in self.blocks]
