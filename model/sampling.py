"""Euler sampling of the flow ODE from noise (t = 1) to data (t = 0), with classifier-free guidance.

The schedule is diffusers' `FlowMatchEulerDiscreteScheduler` (what the release ships in `scheduler/`);
this module only builds the model inputs and combines the guided velocities.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from diffusers import FlowMatchEulerDiscreteScheduler
from tqdm.auto import tqdm

from model.math import at_least_fp32
from model.mfm import MfM

DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 9.0


@dataclass
class Conditioning:
    """Everything but the latent and timestep that the model takes, batched (see `MfM.forward`)."""

    text: torch.Tensor  # (B, L, text_dim)
    text_mask: torch.Tensor  # (B, L)
    cond_pixels: torch.Tensor  # (B, 3, T, H, W)
    cond_depth: torch.Tensor  # (B, 1, T, H, W)
    cond_mask: torch.Tensor  # (B, 1, T, H, W)
    motion_score: torch.Tensor  # (B,)

    def negative(self, null_text: torch.Tensor, null_text_mask: torch.Tensor) -> Conditioning:
        """The CFG branch as the release builds it: null prompt, same pixels and mask, depth zeroed."""
        return replace(self, text=null_text, text_mask=null_text_mask, cond_depth=torch.zeros_like(self.cond_depth))

    def cat(self, other: Conditioning) -> Conditioning:
        return Conditioning(*(torch.cat([a, b]) for a, b in zip(vars(self).values(), vars(other).values())))


@dataclass(frozen=True)
class CfgSplit:
    """The two CFG branches on two ranks: this rank runs `branch` (0 conditional, 1 unconditional) and the
    pair trades velocities over `group`."""

    branch: int
    group: Any

    def gather(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's velocity -> (v_pos, v_neg), the same on both ranks."""
        parts = [torch.empty_like(v) for _ in range(2)]
        dist.all_gather(parts, v.contiguous(), group=self.group)
        return parts[0], parts[1]


def make_scheduler(shift: float = 1.0) -> FlowMatchEulerDiscreteScheduler:
    """The flow-matching Euler scheduler; `shift` > 1 spends more steps near noise (SD3 shift)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def guided_velocity(v_pos: torch.Tensor, v_neg: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance v_neg + guidance·(v_pos − v_neg), computed in fp32 whatever the inputs' dtype."""
    v_pos, v_neg = at_least_fp32(v_pos), at_least_fp32(v_neg)
    return v_neg + guidance * (v_pos - v_neg)


@torch.no_grad()
def sample(
    model: MfM,
    noise: torch.Tensor,
    positive: Conditioning,
    negative: Conditioning | None = None,
    guidance: float = DEFAULT_GUIDANCE,
    steps: int = DEFAULT_STEPS,
    scheduler: FlowMatchEulerDiscreteScheduler | None = None,
    progress: bool = False,
    cfg_split: CfgSplit | None = None,
) -> torch.Tensor:
    """Integrate from `noise` (B, C, t, h, w) to a latent. With `negative`, both branches run as one batch (or,
    with `cfg_split`, one on each of two ranks) and v = v_neg + guidance·(v_pos − v_neg); without it the model
    runs once per step, unguided.

    The model gets the latent in `noise`'s dtype (pass the model's); its velocity is upcast to fp32 before the
    guidance combination (as the release does), and the latent is kept and stepped in fp32. Returns it in fp32."""
    scheduler = scheduler or make_scheduler()
    scheduler.set_timesteps(steps, device=noise.device)
    if cfg_split is not None and negative is None:
        raise ValueError("CFG parallelism needs a negative branch (guidance != 1)")
    batched = negative is not None and cfg_split is None  # both branches in one batch
    if cfg_split is not None:
        cond = positive if cfg_split.branch == 0 else negative
    else:
        cond = positive.cat(negative) if batched else positive
    x = at_least_fp32(noise)  # (B, C, t, h, w), fp32 between steps
    for t in tqdm(scheduler.timesteps, desc="sampling", disable=not progress):
        x_in = (torch.cat([x, x]) if batched else x).to(noise.dtype)
        timestep = t.expand(x_in.shape[0]).float()  # (B,) or (2B,), 0–1000 scale; fp32 even under bf16
        v = model(
            x_in, timestep, cond.text, cond.text_mask, cond.cond_pixels, cond.cond_depth, cond.cond_mask,
            cond.motion_score,
        )
        v = at_least_fp32(v)
        if negative is not None:
            v = guided_velocity(*(cfg_split.gather(v) if cfg_split else v.chunk(2)), guidance)
        x = scheduler.step(v, t, x, return_dict=False)[0]  # fp32 Euler step
    return x
