"""A multi-channel 3-D transformer for liver stiffness, from MONAI building blocks.

Input: the liver-centred crop [C, z, y, x] with channels T1w, T2w, high-b DWI, ADC and the liver
fraction (``preprocess.InputSpec``). The stem reads the logarithm of the three intensity channels:
MR contrasts are ratios (liver-to-spleen, liver-to-muscle), bias fields and scale errors are
factors, and a log turns all of them into sums that a convolution weighs directly. (Without it the
network could not learn a stiffness planted in the spleen's brightness from 144 exams in 200
steps, test r −0.15; with it, 0.96.) With ``liver_relative`` the stem also reads each log
intensity minus the liver's mean log intensity: the liver-to-spleen and liver-to-muscle ratios
that the literature reads (and that the phantom's strongest markers are) become voxel values.
A small convolutional stem (MONAI ``Convolution`` blocks) turns the voxels into local features at
half resolution — contrasts between sequences, edges, regional texture — and MONAI's
``PatchEmbeddingBlock`` cuts those into patch tokens with a learned position embedding. Pre-norm
transformer blocks (MONAI ``SABlock`` and ``MLPBlock`` with LayerScale) then attend over

    [CLS] + one token per clinical covariate + one token per sequence (present or missing)
          + a liver-summary token + one token per image patch,

and the estimate, ln(kPa), is read from the tokens the model was given, after the last layer,
through a small MLP (``readout``): their mean (global average pooling), attention pooling (a
learned query, ``AttentionPool``), or attention pooling beside each feature's maximum over the
tokens ("attention_max"). Optionally (``linear_readout``) a linear term on the standardised
summary and covariates is added, trained with the rest from zero.

Why LayerScale: with ~500 training exams, a plain ViT read from its CLS token could not even fit
16 exams whose stiffness was planted in the spleen (60 full-batch steps: loss 0.225 → 0.220);
every residual branch starting at a tenth of its size (LayerScale, Touvron et al. 2021, "Going
deeper with image transformers") and a readout that sees every token fit them (→ 0.037). Why
attention and max pooling: a signal in a small region (the spleen is a few of 160 patches) is
diluted twenty-fold by a mean. With the mean readout, a model trained with the product's recipe
did not learn a stiffness planted in the spleen at all; with attention_max on liver-relative
input it learns it and its maps point there (``test_learning.py``). On the phantom's held-out
site the readouts are level within the spread between seeds (``experiments/readout_ablation.py``;
docs/model.md).

Covariate token: ``value · w + type embedding``, or a learned "missing" embedding when unknown.
A model's covariates are the first ``n_covariates`` of ``covariates.ALL_COVARIATES`` (the original
four for folders written before the blood tests, all eight since); given more columns, the network
reads its own and ignores the rest, so one encoding serves old and new models alike (given fewer,
the missing ones count as unknown).
Sequence token: a learned "present" or "missing" embedding per sequence; a missing sequence's
channel is zeroed inside the network, so dropping it at training time (sequence dropout) and at
prediction time (a single-b DWI has no ADC; the ablations) is the same operation. The summary
token embeds masked liver statistics the network pools itself (per channel: mean, SD, 10th/90th
percentile; the liver's share of the crop; surface roughness and principal proportions),
standardised by statistics of the training cohort that training stores in buffers.
``use_image_tokens=False`` hides every patch token from attention (the "without image tokens"
ablation, also seen in training).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, MLPBlock, PatchEmbeddingBlock, SABlock, UnetOutBlock, UnetrUpBlock
from torch import nn

from .covariates import ALL_COVARIATES, model_covariates

# Input channels that are sequences (may be missing); the liver fraction is always there.
SEQUENCE_CHANNELS = ("t1w", "t2w", "dwi", "adc")
# ModelConfig.readout: each choice, in the words the model card uses.
READOUTS = {"mean": "the mean of all visible tokens",
            "attention": "the visible tokens by attention pooling (a learned query)",
            "attention_max": "the visible tokens by attention pooling and each feature's maximum"}
# Below this (in body-median units) is air or noise: the log is floored there, at about −3.
LOG_FLOOR = 0.05


@dataclass(frozen=True)
class ModelConfig:
    in_channels: int = 5
    img_size: tuple[int, int, int] = (24, 40, 64)    # z, y, x (array order of the crop)
    stem_channels: tuple[int, int] = (8, 16)         # conv stem: full resolution, then half
    patch_size: tuple[int, int, int] = (3, 4, 4)     # on the stem's half-resolution grid
    hidden_size: int = 64
    mlp_dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    dropout: float = 0.1
    layer_scale: float = 0.1        # initial gain of every residual branch
    log_channels: tuple[int, ...] = (0, 1, 2)   # intensity channels the stem reads as log(max(x, LOG_FLOOR))
    n_covariates: int = len(ALL_COVARIATES)   # the first n of covariates.ALL_COVARIATES (``covariates``)
    mask_channel: int = 4           # index of the liver-fraction channel
    # A linear term on the standardised liver summary and covariates, added to the transformer's
    # output and trained with it from zero (not fitted beforehand and frozen): weak, global
    # markers are what a linear model reads best from a few hundred exams.
    linear_readout: bool = True
    # How the estimate is read from the last layer's tokens: "mean" (every visible token alike),
    # "attention" (a learned query attends over them: attention pooling; ``AttentionPool``), or
    # "attention_max" (that, and each feature's maximum over the tokens).
    readout: str = "attention_max"
    # The stem also reads each log intensity relative to the liver's mean log intensity: the
    # liver-to-spleen and liver-to-muscle ratios the literature reads become voxel values.
    liver_relative: bool = True
    # A stiffness map beside the number: a UNETR-style decoder from the last layer's patch tokens
    # and the stem's features (``MapDecoder``), trained on elastograms (``dense.py``).
    map_decoder: bool = False

    def __post_init__(self):
        if self.readout not in READOUTS:   # a model.json is untrusted: refused when read
            raise ValueError(f"unknown readout {self.readout!r} (known: {', '.join(READOUTS)})")
        model_covariates(self.n_covariates)     # a count this version has names for

    @property
    def covariates(self) -> tuple[str, ...]:
        """The names of the covariate tokens, in order (recorded in model.json by ``to_dict``)."""
        return model_covariates(self.n_covariates)

    @property
    def n_sequences(self) -> int:
        return self.in_channels - 1

    @property
    def n_stats(self) -> int:
        return 4 * self.n_sequences + 1 + 4

    @property
    def stem_size(self) -> tuple[int, int, int]:
        return tuple(s // 2 for s in self.img_size)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Patch tokens along z, y, x."""
        return tuple(i // p for i, p in zip(self.stem_size, self.patch_size))

    @property
    def n_prefix(self) -> int:
        """Tokens before the image patches: CLS, covariates, sequences, liver summary."""
        return 2 + self.n_covariates + self.n_sequences

    def to_dict(self) -> dict:
        return {**asdict(self), "covariates": list(self.covariates)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        names = d.pop("covariates", None)       # absent in folders written before the blood tests
        if names is not None and tuple(names) != model_covariates(int(d.get("n_covariates", -1))):
            raise ValueError(f"covariates {names} are not the first {d.get('n_covariates')} of those this version "
                             f"knows ({', '.join(ALL_COVARIATES)}); update liverstiffness")
        d.setdefault("linear_readout", False)     # model.json files written before the option
        d.setdefault("readout", "mean")
        d.setdefault("liver_relative", False)
        d.setdefault("map_decoder", False)        # folders written before stiffness maps
        for k in ("img_size", "patch_size", "stem_channels", "log_channels"):
            d[k] = tuple(d[k])
        return cls(**d)


class LayerScaleBlock(nn.Module):
    """Pre-norm transformer block from MONAI's ``SABlock`` and ``MLPBlock``, each residual branch
    multiplied by a learned per-feature gain that starts at ``init_scale`` (LayerScale)."""

    def __init__(self, hidden: int, mlp_dim: int, heads: int, dropout: float, init_scale: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = SABlock(hidden, heads, dropout, qkv_bias=True, save_attn=True)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = MLPBlock(hidden, mlp_dim, dropout)
        self.gamma1 = nn.Parameter(torch.full((hidden,), init_scale))
        self.gamma2 = nn.Parameter(torch.full((hidden,), init_scale))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.gamma1 * self.attn(self.norm1(x), attn_mask=attn_mask)
        return x + self.gamma2 * self.mlp(self.norm2(x))


class AttentionPool(nn.Module):
    """The readout as attention pooling: one learned query attends over the last layer's tokens
    (torch's ``MultiheadAttention``; as in Touvron et al. 2021's class-attention and the
    attention-MIL pooling of Ilse et al. 2018). The query starts at zero, so the pooling starts as
    the plain mean and learns where to look; its weights (``weights``, [B, T], heads averaged)
    are where the estimate was read from, which the maps follow."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, hidden))
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        q = self.query.expand(x.shape[0], -1, -1).to(x.dtype)
        out, w = self.attn(q, x, x, key_padding_mask=~visible, need_weights=True, average_attn_weights=True)
        self.weights = w[:, 0].detach()
        return out[:, 0]


class MapDecoder(nn.Module):
    """ln-kPa deviations at the crop's resolution from the last layer's patch tokens and the
    stem's two feature maps, as UNETR decodes (MONAI ``UnetrUpBlock``: a transposed convolution up
    to the skip's grid, then a residual block on both): tokens → the stem's half resolution (one
    patch back to its voxels) → full resolution → one channel (``UnetOutBlock``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c1, c2 = cfg.stem_channels
        self.up_half = UnetrUpBlock(3, cfg.hidden_size, c2, kernel_size=3, upsample_kernel_size=cfg.patch_size,
                                    norm_name="instance", res_block=True)
        self.up_full = UnetrUpBlock(3, c2, c1, kernel_size=3, upsample_kernel_size=2, norm_name="instance",
                                    res_block=True)
        self.out = UnetOutBlock(3, c1, 1)
        self.grid = cfg.grid

    def forward(self, patches: torch.Tensor, half: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """patches [B, N, H] → [B, z, y, x]."""
        b, _, h = patches.shape
        x = patches.transpose(1, 2).reshape(b, h, *self.grid)
        x = self.up_half(x, half.to(x.dtype))
        return self.out(self.up_full(x, full.to(x.dtype)))[:, 0]


class StiffnessTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        c1, c2 = cfg.stem_channels
        self.stem = nn.Sequential(
            Convolution(3, cfg.in_channels + (len(cfg.log_channels) if cfg.liver_relative else 0), c1,
                        kernel_size=3, act="GELU", norm=None),
            Convolution(3, c1, c2, strides=2, kernel_size=3, act="GELU", norm=None))
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=c2, img_size=cfg.stem_size, patch_size=cfg.patch_size, hidden_size=h,
            num_heads=cfg.num_heads, proj_type="conv", pos_embed_type="learnable", dropout_rate=cfg.dropout,
            spatial_dims=3)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, h))
        self.cov_value = nn.Parameter(torch.randn(cfg.n_covariates, h) * 0.02)
        self.cov_type = nn.Parameter(torch.randn(cfg.n_covariates, h) * 0.02)
        self.cov_missing = nn.Parameter(torch.randn(cfg.n_covariates, h) * 0.02)
        self.seq_present = nn.Parameter(torch.randn(cfg.n_sequences, h) * 0.02)
        self.seq_missing = nn.Parameter(torch.randn(cfg.n_sequences, h) * 0.02)
        # Standardisation of the summary, set by training from its cohort (saved with the weights).
        self.register_buffer("stats_mean", torch.zeros(cfg.n_stats))
        self.register_buffer("stats_std", torch.ones(cfg.n_stats))
        self.stats_embed = nn.Linear(cfg.n_stats, h)
        self.blocks = nn.ModuleList([LayerScaleBlock(h, cfg.mlp_dim, cfg.num_heads, cfg.dropout, cfg.layer_scale)
                                     for _ in range(cfg.num_layers)])
        self.norm = nn.LayerNorm(h)
        self.pool = AttentionPool(h, cfg.num_heads, cfg.dropout) if cfg.readout != "mean" else None
        pooled = 2 * h if cfg.readout == "attention_max" else h
        self._max_share: torch.Tensor | None = None
        self.head = nn.Sequential(nn.Linear(pooled, h), nn.GELU(), nn.Linear(h, 1))
        self.linear = nn.Linear(cfg.n_stats + 2 * cfg.n_covariates, 1) if cfg.linear_readout else None
        if self.linear is not None:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        self.decoder = MapDecoder(cfg) if cfg.map_decoder else None
        self._stem_features: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- the liver summary -------------------------------------------------------------------

    def liver_stats(self, image: torch.Tensor) -> torch.Tensor:
        """[B, n_stats]: mean, SD, 10th and 90th percentile of every sequence channel inside the
        liver (fraction > 0.5), the liver's share of the crop, and its shape (``shape_stats``)."""
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

    def stats_present(self, present: torch.Tensor) -> torch.Tensor:
        """[B, n_stats] 1 where a statistic's sequence is present (the shape stats always are)."""
        p = present.float()
        ones = torch.ones(p.shape[0], 5, device=p.device)      # liver share and shape
        # liver_stats' order: means, SDs, then (p10, p90) pairs per sequence.
        return torch.cat([p, p, p.repeat_interleave(2, dim=1), ones], dim=1)

    # --- forward -----------------------------------------------------------------------------

    def sequences_present(self, image: torch.Tensor) -> torch.Tensor:
        """[B, n_sequences] bool: a sequence counts as present when its channel has signal inside
        the liver (preprocessing leaves the ADC of a single-b DWI at zero)."""
        k = self.cfg.mask_channel
        inside = (image[:, k] > 0.5)[:, None]
        seq = torch.cat([image[:, :k], image[:, k + 1:]], dim=1)
        return ((seq != 0) & inside).flatten(2).any(dim=2)

    def channel_gate(self, present: torch.Tensor) -> torch.Tensor:
        """[B, C, 1, 1, 1]: 1 for present sequences and the liver fraction, 0 for missing ones."""
        gate = torch.ones(present.shape[0], self.cfg.in_channels, device=present.device)
        seq_idx = [c for c in range(self.cfg.in_channels) if c != self.cfg.mask_channel]
        gate[:, seq_idx] = present.float()
        return gate[:, :, None, None, None]

    def stem_input(self, image: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """The stem's view of the (gated) crop: log intensities, ADC and liver fraction as they are;
        a missing sequence stays at zero."""
        x = image.clone()
        idx = list(self.cfg.log_channels)
        logs = torch.log(image[:, idx].clamp_min(LOG_FLOOR))
        x[:, idx] = logs
        x = x * gate
        if self.cfg.liver_relative:
            k = self.cfg.mask_channel
            w = (image[:, k:k + 1] > 0.5).to(image.dtype)
            liver = (logs * w).sum(dim=(2, 3, 4), keepdim=True) / w.sum(dim=(2, 3, 4), keepdim=True).clamp_min(1)
            x = torch.cat([x, (logs - liver) * gate[:, idx]], dim=1)
        return x

    def own_covariates(self, cov: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The columns of ``cov`` and ``known`` [B, K] this model reads: its first ``n_covariates``
        (an encoding of every covariate this version knows serves a model trained with fewer); when
        fewer are given (a caller that knows only the original four), the rest count as unknown."""
        n = self.cfg.n_covariates
        if cov.shape[1] < n:
            pad = n - cov.shape[1]
            cov = torch.cat([cov, cov.new_zeros(cov.shape[0], pad)], dim=1)
            known = torch.cat([known.bool(), known.new_zeros(known.shape[0], pad, dtype=torch.bool)], dim=1)
        return cov[:, :n], known[:, :n]

    def tokens(self, image, cov, known, present, stats) -> torch.Tensor:
        """``image``: the stem input (``stem_input``)."""
        b = image.shape[0]
        cov, known = self.own_covariates(cov, known)
        full = self.stem[0](image)
        half = self.stem[1](full)
        if self.decoder is not None:
            self._stem_features = (half, full)
        patches = self.patch_embedding(half)                                    # B, N, H
        cov_tok = torch.where(known[..., None], cov[..., None] * self.cov_value, self.cov_missing) + self.cov_type
        seq_tok = torch.where(present[..., None], self.seq_present, self.seq_missing)
        z = self.norm_stats(stats) * self.stats_present(present)
        stats_tok = self.stats_embed(z)[:, None]
        dt = patches.dtype
        return torch.cat([self.cls_token.expand(b, -1, -1).to(dt), cov_tok.to(dt), seq_tok.to(dt),
                          stats_tok.to(dt), patches], dim=1)

    def norm_stats(self, stats: torch.Tensor) -> torch.Tensor:
        return (stats - self.stats_mean) / self.stats_std

    def forward(self, image: torch.Tensor, cov: torch.Tensor, known: torch.Tensor,
                present: torch.Tensor | None = None, use_image_tokens: bool | torch.Tensor = True,
                return_map: bool = False):
        """image [B, C, z, y, x], cov [B, K], known [B, K] bool, present [B, n_sequences] bool
        (default: those with signal, ``sequences_present``) → ln(kPa) [B]. ``use_image_tokens``: bool, or [B] bool per exam.
        ``return_map`` (a model with ``map_decoder``): also the ln-kPa map [B, z, y, x] (``stiffness_map``)."""
        present = self.sequences_present(image) if present is None else present.bool()
        cov, known = self.own_covariates(cov, known)
        gate = self.channel_gate(present).to(image.dtype)
        image = image * gate
        # The summary's quantiles and eigenvalues need float32 (also under mixed precision).
        with torch.autocast(image.device.type, enabled=False):
            stats = self.liver_stats(image.float())
        x = self.tokens(self.stem_input(image, gate), cov, known, present, stats)
        linear = 0.0
        if self.linear is not None:
            z = self.norm_stats(stats) * self.stats_present(present)
            linear = self.linear(torch.cat([z, cov * known, known.float()], dim=1)).float().squeeze(-1)
        visible = torch.ones(x.shape[:2], dtype=torch.bool, device=image.device)
        visible[:, self.cfg.n_prefix:] = torch.as_tensor(use_image_tokens, device=image.device).expand(x.shape[0])[:, None]
        mask = None if bool(visible.all()) else visible
        for blk in self.blocks:
            x = blk(x, attn_mask=mask)
        if self.pool is not None:
            x = self.norm(x)
            pooled = self.pool(x, visible)
            if self.cfg.readout == "attention_max":
                top, arg = x.masked_fill(~visible[..., None], float("-inf")).max(dim=1)
                pooled = torch.cat([pooled, top], dim=1)
                # Where the max half reads from: each token's share of the features it is the maximum of.
                self._max_share = F.one_hot(arg, x.shape[1]).float().mean(dim=1).detach()
        else:
            w = visible[..., None].to(x.dtype)
            pooled = (self.norm(x) * w).sum(dim=1) / w.sum(dim=1)
        estimate = self.head(pooled).float().squeeze(-1) + linear
        if not return_map:
            self._stem_features = None      # not kept (with their graph) until the next call
            return estimate
        if self.decoder is None:
            raise ValueError("this model has no map decoder (ModelConfig.map_decoder)")
        deviation = self.decoder(x[:, self.cfg.n_prefix:], *self._stem_features).float()
        self._stem_features = None
        return estimate, self.stiffness_map(estimate, deviation, image[:, self.cfg.mask_channel])

    @staticmethod
    def stiffness_map(estimate: torch.Tensor, deviation: torch.Tensor, liver: torch.Tensor) -> torch.Tensor:
        """The ln-kPa map: the estimate plus the decoder's deviation, centred on the liver so that
        the map's mean ln kPa over the liver *is* the estimate (the number and the map never
        disagree about the liver as a whole; the map says only where it is stiffer or softer)."""
        w = (liver > 0.5).to(deviation.dtype)
        centre = (deviation * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1.0)
        return estimate[:, None, None, None] + deviation - centre[:, None, None, None]

    def readout_weights(self) -> torch.Tensor | None:
        """[B, T] the readout's weights over the tokens from the last forward pass (attention
        pooling; with "attention_max" averaged with each token's share of the feature maxima),
        or None for the mean readout (equal weights over the visible tokens)."""
        if self.pool is None or self.pool.weights is None:    # mean readout, or no forward pass yet
            return None
        if self.cfg.readout == "attention_max":     # half the head's input from each pooling
            return 0.5 * (self.pool.weights.float() + self._max_share)
        return self.pool.weights

    def attention_matrices(self) -> list[torch.Tensor]:
        """Softmax attention of each layer from the last forward pass: [B, heads, T, T] each."""
        return [blk.attn.att_mat for blk in self.blocks]


#: Architectures a model folder may name (``model.json`` → "architecture" → "class").
ARCHITECTURES = {"StiffnessTransformer": StiffnessTransformer}
