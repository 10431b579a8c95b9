"""Process groups for sampling on many ranks (`torchrun --nproc_per_node N -m mfm.cli generate ...`).

world = dp x cfg x sp. One sample is made by cfg·sp consecutive ranks, its sample group: sp ranks split its
tokens (Ulysses, `model.parallelize.apply_ulysses`) and, with CFG parallelism (cfg = 2), the conditional and
the unconditional branch run at once on two such SP groups. The dp sample groups work on different samples.
A sample group's first rank, its leader, runs the frozen models (T5, depth, VAE) and writes the output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class GenerationGroups:
    """Where this rank sits."""

    rank: int
    world: int
    sp: int
    cfg: int  # 1, or 2 with the CFG branches on two ranks
    sample_group: Any  # the cfg·sp ranks of this rank's sample (None when 1)
    sp_group: Any  # this rank's sequence-parallel group (None when sp == 1)
    cfg_group: Any  # the two ranks holding the two branches of this rank's tokens (None when cfg == 1)

    @property
    def sample_size(self) -> int:
        return self.cfg * self.sp

    @property
    def dp(self) -> int:
        return self.world // self.sample_size

    @property
    def replica(self) -> int:
        """Which sample group (0 .. dp-1) this rank is in."""
        return self.rank // self.sample_size

    @property
    def leader(self) -> int:
        return self.replica * self.sample_size

    @property
    def is_leader(self) -> bool:
        return self.rank == self.leader

    @property
    def cfg_branch(self) -> int:
        """0: the conditional branch, 1: the unconditional one (cfg == 2)."""
        return (self.rank - self.leader) // self.sp

    def describe(self) -> str:
        return f"{self.world} ranks: dp={self.dp} x cfg={self.cfg} x sp={self.sp}"


def launched_world() -> int:
    """The launcher's WORLD_SIZE (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_generation_groups(sp: int | None = None, cfg_parallel: bool = False) -> GenerationGroups:
    """Join the launcher's process group (nccl with CUDA, else gloo) and build the groups. `sp` defaults to
    every rank not taken by CFG parallelism (one sample at a time over all ranks)."""
    world = launched_world()
    cfg = 2 if cfg_parallel else 1
    sp = sp or max(1, world // cfg)
    if world % (cfg * sp):
        raise ValueError(f"{world} ranks do not split into groups of cfg {cfg} x sp {sp}")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    if sp > 1:  # DeepSpeed's DistributedAttention talks through DeepSpeed's comm layer: point it at this group
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    size = cfg * sp
    mine: dict[str, Any] = {"sample": None, "sp": None, "cfg": None}
    for base in range(0, world, size):  # every rank creates every group, in the same order
        groups = {"sample": [list(range(base, base + size))] if size > 1 else [],
                  "sp": [list(range(base + b * sp, base + (b + 1) * sp)) for b in range(cfg)] if sp > 1 else [],
                  "cfg": [[base + j, base + sp + j] for j in range(sp)] if cfg > 1 else []}
        for kind, members in groups.items():
            for ranks in members:
                group = dist.new_group(ranks)
                if rank in ranks:
                    mine[kind] = group
    return GenerationGroups(rank, world, sp, cfg, mine["sample"], mine["sp"], mine["cfg"])
