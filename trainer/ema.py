"""Optional EMA of the weights under ZeRO-3: each rank averages only its partition of the fp32 master weights,
so the EMA costs 1/world of an fp32 model copy per rank and no communication until it is exported."""

from __future__ import annotations

import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_local_fp32_param
from torch import nn


class ShardedEma:
    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.params = dict(module.named_parameters())
        self.shadow = {name: safe_get_local_fp32_param(p).detach().clone() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.params.items():
            self.shadow[name].lerp_(safe_get_local_fp32_param(p), 1.0 - self.decay)

    def full(self, name: str) -> torch.Tensor:
        """One parameter's EMA, gathered from every rank's partition (a collective: all ranks call it)."""
        shard, p = self.shadow[name], self.params[name]
        gathered = torch.empty(dist.get_world_size() * shard.numel(), dtype=shard.dtype, device=shard.device)
        dist.all_gather_into_tensor(gathered, shard.contiguous())
        return gathered[: p.ds_numel].view(p.ds_shape)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.contiguous() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {missing[:5]} ({len(missing)} in all)")
        for name, t in self.shadow.items():
            t.copy_(state[name])
