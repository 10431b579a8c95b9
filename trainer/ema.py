"""Optional EMA of the weights under ZeRO-3: each rank averages only its partition of the fp32 master weights,
so the EMA costs 1/world of an fp32 model copy per rank and no communication until it is exported."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

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

    @contextlib.contextmanager
    def applied(self, zero: Any) -> Iterator[None]:
        """The EMA in place of the trained weights inside the block (every rank enters, e.g. to validate), the
        trained ones back after it. `zero`: the engine's ZeRO-3 optimizer. The forward gathers the bit16
        partitions (`ds_tensor`); the small persistent parameters, kept gathered, are released and re-gathered
        around the swap, as DeepSpeed does around a checkpoint load."""
        kept = {}
        zero.checkpoint_event_prologue()
        for name, p in self.params.items():
            kept[name] = p.ds_tensor.data.clone()
            p.ds_tensor.data.copy_(self.shadow[name].view_as(p.ds_tensor))
        zero.checkpoint_event_epilogue()
        try:
            yield
        finally:
            zero.checkpoint_event_prologue()
            for name, p in self.params.items():
                p.ds_tensor.data.copy_(kept[name])
            zero.checkpoint_event_epilogue()

    def full(self, name: str) -> torch.Tensor:
        """One parameter's EMA, gathered from every rank's partition (a collective: all ranks call it)."""
        shard, p = self.shadow[name], self.params[name]
        gathered = torch.empty(dist.get_world_size() * shard.numel(), dtype=shard.dtype, device=shard.device)
        dist.all_gather_into_tensor(gathered, shard.contiguous())
        return gathered[: p.ds_numel].view(p.ds_shape)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.contiguous() for name, t in self.shadow.items()}

    def load_full(self, state: dict[str, torch.Tensor]) -> None:
        """Reshard a consolidated EMA (the `model.ema.safetensors` export, any world size): this rank keeps the
        slice ZeRO-3 gives it, rank r of world W holding elements [r·n, (r+1)·n) of the flat parameter."""
        rank = dist.get_rank()
        for name, shard in self.shadow.items():
            flat = state[name].flatten().to(shard)
            part = flat[rank * shard.numel() : (rank + 1) * shard.numel()]
            shard.zero_()  # the padding past the end of the parameter
            shard[: part.numel()].copy_(part)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {missing[:5]} ({len(missing)} in all)")
        for name, t in self.shadow.items():
            t.copy_(state[name])
