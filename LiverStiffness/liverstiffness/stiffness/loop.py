"""Pieces of the training loop that supervised training (``train``) and pretraining
(``pretrain``) share: the distributed set-up under torchrun, batches sharded over ranks, the
learning-rate schedule and when mixed precision pays."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def setup_device(name: str) -> tuple[torch.device, DistInfo]:
    """The device and this process's rank; under torchrun on GPUs each rank takes its own GPU."""
    from ..devices import resolve_device

    device = resolve_device(name)
    info = init_distributed(device)
    if device.type == "cuda" and info.world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device, info


def load_cohort_once(records, spec, options, cache: Path, workers: int, progress: bool, info: DistInfo,
                     with_maps: bool = False):
    """Preprocess once: rank 0 fills the cache (in ``workers`` processes), the others then read it.
    ``with_maps``: the elastogram targets too (``data.load_cohort``)."""
    from .data import load_cohort

    if info.main:
        data = load_cohort(records, spec, options, cache, workers, progress, with_maps=with_maps)
    if info.world > 1:
        dist.barrier()
    if not info.main:
        data = load_cohort(records, spec, options, cache, 1, False, with_maps=with_maps)
    return data


def use_amp(setting: str, device: torch.device) -> bool:
    """bfloat16 autocast for training: on CUDA, and on CPUs with native bf16 (AMX or AVX512-BF16,
    about twice as fast there); elsewhere it would be emulated and slower."""
    if setting in ("on", "off"):
        return setting == "on"
    if device.type == "cuda":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def shard_batches(n: int, batch: int, rng: np.random.Generator, info: DistInfo):
    """Shuffled indices, sharded evenly over ranks (equal step counts keep DDP in lockstep)."""
    idx = rng.permutation(n)
    usable = n - n % info.world
    mine = idx[:usable][info.rank::info.world]
    per_rank = max(1, batch // info.world)
    return [mine[s:s + per_rank] for s in range(0, len(mine), per_rank)]


def warmup_cosine(epochs: int, warmup: int, steps_per_epoch: int):
    """Learning-rate factor per optimiser step: linear warm-up, then cosine decay to 5 %."""
    total, warm = max(1, epochs * steps_per_epoch), max(1, warmup * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))
    return factor
