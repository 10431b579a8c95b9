"""Rectified flow (paper §3.3): X_t = (1 − t)·X0 + t·ε, velocity target ε − X0, logit-normal t (SD3).

t ∈ [0, 1] with t = 1 pure noise; the model takes t on the 0–1000 scale (`model_timestep`).
"""

from __future__ import annotations

import torch

TIMESTEP_SCALE = 1000.0


def sample_t(
    batch: int,
    generator: torch.Generator | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Logit-normal t: sigmoid of N(mean, std²), (B,)."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator, device=device))


def shift_t(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 timestep shift toward noise for larger inputs: shift·t / (1 + (shift − 1)·t); shift 1 is identity."""
    return shift * t / (1 + (shift - 1) * t)


def _per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)  # (B, 1, 1, ...)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """X_t = (1 − t)·X0 + t·ε with per-sample t (B,)."""
    t = _per_sample(t, x0)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """dX_t/dt = ε − X0."""
    return noise - x0


def model_timestep(t: torch.Tensor) -> torch.Tensor:
    """t ∈ [0, 1] -> the 0–1000 scale the model's timestep embedder takes."""
    return t * TIMESTEP_SCALE


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error, (B,): average it for the step loss, or group it per task for logging."""
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
