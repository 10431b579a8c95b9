"""A batch of samples -> the model's inputs and flow-matching targets, on the training device.

Per sample: one task drawn by `model.task_sampling` (qualification, 3x weights, text / condition dropout)
builds the pixel condition and the prompt; the VAE encodes the frames (on the fly: training crops and
frame windows vary per step, so stored latents rarely match); T5 encodes the prompt; the task draw is seeded
by (seed, sample position), the same whatever the world size; t and the noise come from a generator seeded
by (seed, DP rank, step), so the ranks of one sequence-parallel group draw the same ones.

Text condition: T5 runs here, online, on the full prompt `caption + " " + extra + " #task: " + name`,
exactly as generation encodes it. The table's caption-only embeddings cannot carry the task: T5 attends
in both directions, so the caption's token states depend on the task words after them, and splicing a
separately encoded suffix onto stored states would give inputs the model never sees at inference; and
storing one embedding per task would multiply the table by 16. T5 costs a few percent of a DiT step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from model.conditions import Clip, Condition, stack_conditions
from model.flow import interpolate, model_timestep, sample_t, shift_t, velocity_target
from model.task_sampling import sample_training_condition
from model.text_encoder import TextEncoder
from model.vae import VideoVAE
from pipeline.contract.frames import to_signed
from trainer.configs import FlowConfig
from trainer.data import Sample
from trainer.step import PreparedBatch


def seed_of(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)


class BatchBuilder:
    """Frozen VAE and T5 plus the flow-matching draws; `__call__(samples, step)` gives a `PreparedBatch`."""

    def __init__(
        self, vae: VideoVAE, text_encoder: TextEncoder, flow: FlowConfig, seed: int, dp_rank: int,
        device: torch.device, dtype: torch.dtype, packed: bool,
    ):  # fmt: skip
        self.vae, self.text_encoder, self.flow = vae, text_encoder, flow
        self.seed, self.dp_rank, self.device, self.dtype, self.packed = seed, dp_rank, device, dtype, packed

    def conditions(self, samples: list[Sample]) -> list[tuple[torch.Tensor, Condition]]:
        """(frames (3, T, H, W) float in [-1, 1], condition) per sample, on the device."""
        out = []
        for s in samples:
            frames = to_signed(s.frames.to(self.device))  # (3, T, H, W)
            depth = None if s.depth is None else s.depth.to(self.device).float()
            source = None if s.source is None else to_signed(s.source.to(self.device))
            clip = Clip(frames, depth, s.caption, source=source, instruction=s.instruction,
                        quality_tags=s.quality_tags)
            gen = torch.Generator().manual_seed(seed_of(self.seed, *s.position, 1))
            out.append((frames, sample_training_condition(clip, gen, extra=s.extra)))
        return out

    @torch.no_grad()
    def __call__(self, samples: list[Sample], step: int) -> PreparedBatch:
        built = self.conditions(samples)
        conds = [c for _, c in built]
        text, text_mask = self.text_encoder.encode([c.prompt for c in conds])  # (B, 77, D), (B, 77)
        gen = torch.Generator().manual_seed(seed_of(self.seed, self.dp_rank, step, 2))
        t = shift_t(sample_t(len(samples), gen, self.flow.logit_mean, self.flow.logit_std), self.flow.shift)
        t = t.to(self.device)  # (B,) in (0, 1), drawn on the CPU so every device draws the same
        common = {
            "timestep": model_timestep(t),
            "text": text.to(self.device, self.dtype),
            "text_mask": text_mask.to(self.device),
            "motion_score": torch.tensor([s.motion_score for s in samples], device=self.device),
        }
        if self.packed:  # one latent per sample, each with its own noise
            x0s = [self.vae.encode(frames[None])[0] for frames, _ in built]  # (C, t, h, w) each
            noises = [torch.randn(x0.shape, generator=gen).to(self.device) for x0 in x0s]
            xs = [interpolate(x0[None], n[None], ti[None])[0].to(self.dtype) for x0, n, ti in zip(x0s, noises, t)]
            inputs = common | {"xs": xs, "cond_pixels": [c.pixels for c in conds],
                               "cond_depth": [c.depth for c in conds],
                               "cond_mask": [c.mask for c in conds]}  # fmt: skip
            target: Any = [velocity_target(x0, n) for x0, n in zip(x0s, noises)]
        else:
            frames = torch.stack([f for f, _ in built])  # (B, 3, T, H, W)
            x0 = self.vae.encode(frames)  # (B, C, t, h, w) float32
            noise = torch.randn(x0.shape, generator=gen).to(self.device)
            inputs = common | {"x": interpolate(x0, noise, t).to(self.dtype), **stack_conditions(conds)}
            target = velocity_target(x0, noise)
        tokens = [s.tokens for s in samples]
        return PreparedBatch(inputs, target, [c.task for c in conds], tokens, self.packed)
