"""Opt-in step caching for sampling (first-block cache, as ParaAttention's FBCache and TeaCache do it).

Across the Euler steps the blocks' output changes slowly. Each step runs the first block; when its residual
(output minus input) differs from the previous step's by less than `threshold` in relative L1,
mean|r - r_prev| / mean|r_prev|, the other blocks are skipped and their cached residual from the last
computed step is added instead. Threshold 0 never reuses: the output is the uncached model's, bit for bit.
With sequence or CFG parallelism the two sums are all-reduced over `group` first, so every rank of a sample
takes the same decision. `apply_step_cache` installs it on a model from outside (`MfM.run_blocks`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from model.mfm import MfM


class FirstBlockCache:
    """`MfM.run_blocks` with the rest of the stack reused while the first block's residual stays put."""

    def __init__(self, model: MfM, threshold: float, group: Any = None) -> None:
        if threshold < 0:
            raise ValueError(f"cache threshold must be >= 0; got {threshold}")
        self.model, self.threshold, self.group = model, threshold, group
        self.reset()

    def reset(self) -> None:
        """Forget the cached residuals and zero the counters (call before each sample)."""
        self.first_residual: torch.Tensor | None = None
        self.rest_residual: torch.Tensor | None = None
        self.calls = self.computed = 0

    def _reuse(self, residual: torch.Tensor) -> bool:
        if self.threshold == 0 or self.first_residual is None or self.rest_residual is None:
            return False
        sums = torch.stack([(residual - self.first_residual).abs().sum(), self.first_residual.abs().sum()]).double()
        if self.group is not None:
            dist.all_reduce(sums, group=self.group)
        return bool(sums[0] < self.threshold * sums[1])

    def __call__(self, tokens: torch.Tensor, c, text, text_bias, rope, packing=None) -> torch.Tensor:
        first, *rest = self.model.blocks
        hidden = first(tokens, c, text, text_bias, rope, packing)  # (B, N/sp, D)
        residual = hidden - tokens
        self.calls += 1
        if self._reuse(residual):
            out = hidden + self.rest_residual
        else:
            out = hidden
            for block in rest:
                out = block(out, c, text, text_bias, rope, packing)
            self.rest_residual = out - hidden
            self.computed += 1
        self.first_residual = residual
        return out


def apply_step_cache(model: MfM, threshold: float, group: Any = None) -> FirstBlockCache:
    """Install a `FirstBlockCache` as `model.run_blocks`; returns it (its `calls` and `computed` counters)."""
    cache = FirstBlockCache(model, threshold, group)
    model.run_blocks = cache
    return cache
