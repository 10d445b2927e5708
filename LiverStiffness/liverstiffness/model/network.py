"""A multi-channel 3-D vision transformer for liver stiffness, from MONAI building blocks.

Tokens: [CLS] + one token per clinical covariate + one per image patch. The patch tokens come
from MONAI's ``PatchEmbeddingBlock`` (a strided 3-D convolution with learnable position
embedding) over the channels T1w, T2w, DWI, ADC and the liver fraction; the layers are MONAI
``TransformerBlock``s with ``save_attn`` so that attention maps can be read out. A covariate token
is ``value · w + type embedding``, or a learned "missing" embedding + type embedding when the
value is unknown. The head reads the CLS token and predicts ln(kPa).
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
    img_size: tuple[int, int, int] = (24, 40, 48)    # z, y, x (array order of the crop)
    patch_size: tuple[int, int, int] = (6, 8, 8)
    hidden_size: int = 64
    mlp_dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    dropout: float = 0.1
    n_covariates: int = len(COVARIATES)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(i // p for i, p in zip(self.img_size, self.patch_size))

    @property
    def n_prefix(self) -> int:
        """Tokens before the image patches: CLS and covariates."""
        return 1 + self.n_covariates

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
        self.blocks = nn.ModuleList([
            TransformerBlock(h, cfg.mlp_dim, cfg.num_heads, cfg.dropout, qkv_bias=True, save_attn=True)
            for _ in range(cfg.num_layers)])
        self.norm = nn.LayerNorm(h)
        self.head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))
        # Start at the cohort's typical ln(kPa) so early training is not spent on the offset.
        nn.init.constant_(self.head[-1].bias, 1.05)

    def tokens(self, image: torch.Tensor, cov: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        patches = self.patch_embedding(image)                                   # B, N, H
        cov_tok = torch.where(known[..., None], cov[..., None] * self.cov_value, self.cov_missing) + self.cov_type
        return torch.cat([self.cls_token.expand(b, -1, -1), cov_tok.to(patches.dtype), patches], dim=1)

    def forward(self, image: torch.Tensor, cov: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """image [B, C, z, y, x], cov [B, K], known [B, K] bool → ln(kPa) [B]."""
        x = self.tokens(image, cov, known)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, 0])).squeeze(-1)

    def attention_matrices(self) -> list[torch.Tensor]:
        """Softmax attention of each layer from the last forward pass: [B, heads, T, T] each."""
        return [blk.attn.att_mat for blk in self.blocks]
