"""Self-supervised pretraining of the stiffness transformer on exams without an MRE label.

Objective: masked-patch reconstruction across the sequences (SimMIM, Xie et al. 2022, in 3-D as
MONAI's self-supervised tutorials use it). Each training exam is cut into the network's patch grid;
a share of the patches (``mask_ratio``) is blanked in every input channel except the liver
fraction before the stem sees it, so the encoder learns nothing from them but their position;
a linear decoder on the last layer's tokens must give back the stem's view of those patches (log
intensities, ADC, liver-relative contrast) at half resolution. Sequence dropout is the same as in
supervised training, and a dropped sequence is reconstructed at every patch from the sequences
that stayed: the encoder has to learn how T1w, T2w and DWI relate in the liver and its
neighbours, which is what a stiffness estimate from routine sequences reads. Site augmentation is
the same as in training, so intensity and contrast factors of a vendor stay nuisances.

Why reconstruction rather than contrastive views: the model's signal is contrast between
sequences and between organs; a contrastive objective would be taught to ignore exactly the
intensity shifts that carry it, while reconstruction across sequences must keep them.

What is pretrained: the stem, patch embedding, token embeddings and transformer blocks. The
readout (pooling, head, linear term) and the summary token's standardisation are fitted by
``train --init-from DIR`` on the labelled cohort, from scratch. A pretrained folder is
``encoder.pt`` (tensors only) and ``pretrain.json`` (format, architecture, input spec,
preprocessing, SHA-256, the cohort and the loss).

Scale-out: like ``train``, under ``torchrun --nproc_per_node N`` with DistributedDataParallel.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..errors import InputError
from ..manifest import read_manifest
from ..preprocess import InputSpec, PreprocessOptions
from .augment import InputDropout, SiteAugment, available_sequences
from .checkpoint import sha256
from .data import cohort_counts
from .loop import load_cohort_once, setup_device, shard_batches, use_amp, warmup_cosine
from .network import ModelConfig, StiffnessTransformer

FORMAT = "liverstiffness-pretrained-encoder/1"
ENCODER_FILE, META_FILE = "encoder.pt", "pretrain.json"
# Parameters fitted on the labelled cohort, never carried over from pretraining.
READOUT_PREFIXES = ("head.", "pool.", "linear.", "stats_mean", "stats_std")


@dataclass
class PretrainConfig:
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    mask_ratio: float = 0.5           # share of the patch tokens blanked in each exam
    seed: int = 0
    register: bool = True
    n4: bool = False
    workers: int = 0
    device: str = "auto"
    amp: str = "auto"
    dropout: InputDropout = field(default_factory=lambda: InputDropout(sequence=0.25, adc=0.15, image_tokens=0.0))
    augment: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    spec: InputSpec = field(default_factory=InputSpec)


class PatchReconstruction(nn.Module):
    """The encoder (a ``StiffnessTransformer``) with a linear decoder from each patch token to its
    patch of the stem input at half resolution."""

    def __init__(self, net: StiffnessTransformer):
        super().__init__()
        self.net = net
        cfg = net.cfg
        self.channels = cfg.in_channels + (len(cfg.log_channels) if cfg.liver_relative else 0)
        self.patch = cfg.patch_size                              # on the half-resolution grid
        self.decoder = nn.Linear(cfg.hidden_size, self.channels * int(np.prod(self.patch)))
        self.mask_token = nn.Parameter(torch.zeros(cfg.hidden_size))

    def patch_mask(self, b: int, ratio: float, gen: torch.Generator, device) -> torch.Tensor:
        """[B, N] bool, True where a patch is blanked (exactly ``ratio`` of them per exam)."""
        n = int(np.prod(self.net.cfg.grid))
        k = max(1, int(round(ratio * n)))
        order = torch.rand(b, n, generator=gen).argsort(dim=1)
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask.scatter_(1, order[:, :k], True)
        return mask.to(device)

    def voxel_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The patch mask at the crop's full resolution: [B, 1, z, y, x]."""
        gz, gy, gx = self.net.cfg.grid
        m = mask.view(-1, 1, gz, gy, gx).float()
        scale = [2 * p for p in self.patch]                      # the stem halves the grid
        return m.repeat_interleave(scale[0], 2).repeat_interleave(scale[1], 3).repeat_interleave(scale[2], 4)

    def targets(self, stem_in: torch.Tensor) -> torch.Tensor:
        """[B, N, channels · patch voxels]: the stem input at half resolution, cut into the patch grid."""
        t = F.avg_pool3d(stem_in, 2)
        b, c = t.shape[:2]
        (gz, gy, gx), (pz, py, px) = self.net.cfg.grid, self.patch
        t = t[:, :, :gz * pz, :gy * py, :gx * px].reshape(b, c, gz, pz, gy, py, gx, px)
        return t.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, gz * gy * gx, c * pz * py * px)

    def forward(self, image, cov, known, present, available, mask):
        """Loss of one batch: the masked patches of every sequence the exam has, and every patch of
        the sequences dropped from the input (``available`` and not ``present``)."""
        net = self.net
        full_gate = net.channel_gate(available).to(image.dtype)
        target = self.targets(net.stem_input(image * full_gate, full_gate)).float()
        gate = net.channel_gate(present).to(image.dtype)
        seen = image * gate
        with torch.autocast(image.device.type, enabled=False):
            stats = net.liver_stats(seen.float())
        # Blank the masked patches in the stem's view (not in the raw image: the liver-relative
        # channels would then read the blanks as dark liver); the liver's outline stays given.
        stem_in = net.stem_input(seen, gate)
        k = net.cfg.mask_channel
        keep = 1.0 - self.voxel_mask(mask).to(stem_in.dtype)
        blanked = stem_in * keep
        blanked[:, k:k + 1] = stem_in[:, k:k + 1]
        x = net.tokens(blanked, cov, known, present, stats)
        n0 = net.cfg.n_prefix                                     # masked patch tokens are marked as such
        x = torch.cat([x[:, :n0], x[:, n0:] + mask[..., None].to(x.dtype) * self.mask_token.to(x.dtype)], dim=1)
        for blk in net.blocks:
            x = blk(x)
        recon = self.decoder(net.norm(x)[:, net.cfg.n_prefix:]).float()
        # Which target values count: [B, N, C·P] from the patch mask and each channel's role.
        chan_ok = self._channel_weights(available, present)      # [B, C, 2]: (masked patches, all patches)
        p = int(np.prod(self.patch))
        masked_w = chan_ok[..., 0].repeat_interleave(p, dim=1)[:, None] * mask[..., None]
        all_w = chan_ok[..., 1].repeat_interleave(p, dim=1)[:, None].expand_as(masked_w)
        w = torch.maximum(masked_w.float(), all_w.float())
        return ((recon - target) ** 2 * w).sum() / w.sum().clamp_min(1.0)

    def _channel_weights(self, available, present) -> torch.Tensor:
        """Per stem-input channel: reconstruct at masked patches (a sequence the exam has and the
        input kept) or at all patches (a sequence the exam has and the input dropped)."""
        net = self.net
        cfg = net.cfg
        seq_idx = [c for c in range(cfg.in_channels) if c != cfg.mask_channel]
        has = torch.zeros(available.shape[0], cfg.in_channels, dtype=torch.bool, device=available.device)
        kept = has.clone()
        has[:, seq_idx], kept[:, seq_idx] = available, present & available
        if cfg.liver_relative:
            has = torch.cat([has, has[:, list(cfg.log_channels)]], dim=1)
            kept = torch.cat([kept, kept[:, list(cfg.log_channels)]], dim=1)
        return torch.stack([kept, has & ~kept], dim=-1)


def encoder_state(net: StiffnessTransformer) -> dict:
    """The pretrained part of the network's weights (everything but the readout)."""
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items() if not k.startswith(READOUT_PREFIXES)}


def pretrain(manifest: str | Path, out: str | Path, cfg: PretrainConfig, progress: bool = True) -> Path:
    """Pretrain on every exam of ``manifest`` (labels, if any, are ignored) into ``out``."""
    t_start = time.perf_counter()
    if not 0.0 < cfg.mask_ratio < 1.0:
        raise InputError("--mask-ratio", f"must be between 0 and 1, got {cfg.mask_ratio}")
    records = read_manifest(manifest)
    device, info = setup_device(cfg.device)
    out = Path(out)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
    options = PreprocessOptions(register=cfg.register, n4=cfg.n4)
    data = load_cohort_once(records, cfg.spec, options, out / "cache", cfg.workers, progress and info.main, info)
    if len(data.images) < 2:
        raise InputError(f"manifest {manifest}", "needs at least two exams that can be preprocessed")

    torch.manual_seed(cfg.seed)
    net = StiffnessTransformer(cfg.model)
    available_all = available_sequences(net, data.images)
    for name, p in net.named_parameters():       # the readout is fitted later, on labelled exams
        p.requires_grad_(not name.startswith(READOUT_PREFIXES))
    model = PatchReconstruction(net).to(device)
    trainer = model
    if info.world > 1:
        trainer = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = use_amp(cfg.amp, device)
    opt = torch.optim.AdamW([p for p in trainer.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = len(shard_batches(len(data.images), cfg.batch_size, np.random.default_rng(0), info))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.epochs, cfg.warmup_epochs, steps))
    rng = np.random.default_rng(cfg.seed)
    aug = SiteAugment(cfg.spec.channels, seed=cfg.seed * 7919 + info.rank)
    drop_rng = np.random.default_rng(cfg.seed * 7919 + info.rank)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + info.rank)
    history = []
    bar = tqdm(range(cfg.epochs), desc="pretrain", unit="epoch", disable=not (progress and info.main))
    for _ in bar:
        trainer.train()
        losses = []
        for b in shard_batches(len(data.images), cfg.batch_size, rng, info):
            x = torch.from_numpy(data.images[b])
            x = (aug(x) if cfg.augment else x).to(device)
            present, _ = cfg.dropout.sample(available_all[b], drop_rng)
            mask = model.patch_mask(len(b), cfg.mask_ratio, gen, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = trainer(x, torch.from_numpy(data.cov[b]).to(device), torch.from_numpy(data.known[b]).to(device),
                               torch.from_numpy(present).to(device), torch.from_numpy(available_all[b]).to(device), mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in trainer.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.item()))
        history.append(round(float(np.mean(losses)), 5))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    if info.world > 1:
        dist.barrier()
    if not info.main:
        return out
    torch.save(encoder_state(net), out / ENCODER_FILE)
    meta = {"format": FORMAT, "version": __version__, "objective": "masked-patch reconstruction across the sequences",
            "architecture": {"class": "StiffnessTransformer", **cfg.model.to_dict()}, "input_spec": cfg.spec.to_dict(),
            "preprocess": {"register": cfg.register, "n4": cfg.n4}, "sha256": {ENCODER_FILE: sha256(out / ENCODER_FILE)},
            "trained_on": {**cohort_counts(data.records),
                           "labelled": sum(r.stiffness_kpa is not None for r in data.records)}, "failures": len(data.failures),
            "settings": {k: v for k, v in asdict(cfg).items() if k not in ("model", "spec")},
            "loss_per_epoch": history, "training_time_s": round(time.perf_counter() - t_start, 1),
            "device": str(device), "world_size": info.world}
    from ..outputs import atomic_write_text
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2))
    return out


def is_pretrained_folder(folder: str | Path) -> bool:
    return (Path(folder) / META_FILE).is_file() and not (Path(folder) / "model.json").is_file()


def read_pretrained(folder: str | Path) -> tuple[ModelConfig, InputSpec, PreprocessOptions, dict]:
    """A pretrained folder's architecture, inputs, preprocessing and encoder weights, checked
    (format, SHA-256, tensors only)."""
    folder = Path(folder)
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(str(path), f"cannot be read ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(str(path), f"has format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                                    f"not {FORMAT}")
    weights = folder / ENCODER_FILE
    if not weights.is_file() or sha256(weights) != (meta.get("sha256") or {}).get(ENCODER_FILE):
        raise InputError(str(weights), "is missing or does not match the SHA-256 in pretrain.json")
    try:
        arch = {k: v for k, v in meta["architecture"].items() if k != "class"}
        cfg, spec = ModelConfig.from_dict(arch), InputSpec.from_dict(meta["input_spec"])
        options = PreprocessOptions(**meta["preprocess"])
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(str(path), f"is incomplete or malformed ({type(exc).__name__}: {exc})") from None
    return cfg, spec, options, state
