"""The segmentation network: a 2.5-D MONAI UNet (neighbouring slices in, one liver logit out)."""
from __future__ import annotations

import torch

from .config import SegNetConfig


def build_network(cfg: SegNetConfig) -> torch.nn.Module:
    """MONAI ``UNet`` for [B, 2·context + 1, y, x] slice stacks → [B, 1 + aux_organs, y, x] logits of the
    middle slice (channel 0 the liver)."""
    from monai.networks.nets import UNet

    cfg.validate()
    return UNet(spatial_dims=2, in_channels=cfg.in_channels, out_channels=cfg.out_channels, channels=cfg.channels,
                strides=cfg.strides, num_res_units=cfg.num_res_units, norm=cfg.norm,
                dropout=cfg.dropout)
