"""Parallelism applied to an `MfM` from outside, shared by training (`trainer.parallel.parallelize_mfm`) and
sampling (`model.pipeline.MfMPipeline.parallelize`): Ulysses sequence parallelism and torch.compile per block.

Ulysses (DeepSpeed's `DistributedAttention`): every rank of a sequence-parallel (SP) group holds the same
sample and N/sp of its tokens. Before each self-attention an all-to-all trades the token split for a head
split (sp must divide the heads), attention runs over all N tokens on H/sp heads, and a second all-to-all
trades back. QK-norm (over all heads of a token) and RoPE run before the all-to-all on each rank's own
tokens; cross-attention needs no all-to-all (every rank holds all text tokens); everything else is per
token. See `trainer/parallel.py` for the gradients under ZeRO-3.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from model.mfm import CoreAttention, MfM, TokenSharding


class _GatherSequence(torch.autograd.Function):
    """All-gather the SP ranks' token slices along `dim`; backward: reduce-scatter (sum) of the gradient,
    done as an all-reduce and a slice (gloo has no reduce-scatter; the gathered output is small)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, group: Any) -> torch.Tensor:
        ctx.dim, ctx.group, ctx.rank, ctx.size = dim, group, dist.get_rank(group), x.shape[dim]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad.narrow(ctx.dim, ctx.rank * ctx.size, ctx.size), None, None


class SequenceSharding(TokenSharding):
    """Contiguous token slices over an SP group: rank r keeps tokens [r·N/sp, (r+1)·N/sp)."""

    def __init__(self, group: Any):
        super().__init__()
        self.group = group
        self.size, self.rank = dist.get_world_size(group), dist.get_rank(group)

    def shard(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        if n % self.size:
            raise ValueError(f"{n} tokens do not split over sequence-parallel size {self.size}: {tuple(x.shape)}")
        return x.narrow(dim, self.rank * (n // self.size), n // self.size)

    def gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return _GatherSequence.apply(x, dim, self.group)


class UlyssesAttention(nn.Module):
    """`CoreAttention`'s call signature around DeepSpeed's `DistributedAttention` for (B, N, H, Dh) tensors:
    all-to-all to full sequence / H/sp heads, the local attention (with bias and packing spans), back."""

    def __init__(self, local: CoreAttention, group: Any):
        super().__init__()
        from deepspeed.sequence.layer import DistributedAttention

        # (B, N/sp, H, Dh): scatter heads (dim 2), gather tokens (dim 1)
        self.dist_attn = DistributedAttention(local, group, scatter_idx=2, gather_idx=1)

    def forward(self, q, k, v, bias: torch.Tensor | None = None, seq_lens: tuple[int, ...] | None = None):
        return self.dist_attn(q, k, v, 0, None, bias, seq_lens)  # batch_dim_idx 0, no rotary inside


def apply_ulysses(model: MfM, group: Any) -> None:
    """Split tokens over `group` and wrap every self-attention core (cross-attention stays local)."""
    model.token_sharding = SequenceSharding(group)
    for block in model.blocks:
        block.self_attn.core_attention = UlyssesAttention(block.self_attn.core_attention, group)


def apply_compile(model: MfM) -> None:
    """torch.compile every block's forward in place, so each block, with its checkpointing, is one graph;
    module hooks (ZeRO-3's gathers) run eagerly around it, parameter names stay, and the embedders and the
    final layer stay eager."""
    for block in model.blocks:
        block.forward = torch.compile(block.forward)
