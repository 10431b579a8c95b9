"""One optimizer step of the DeepSpeed engine on a prepared batch, and the batch it takes.

Kept apart from the data path (no Lance import), so `benchmark/perf/train_step.py` can time the real step on a
machine that has only torch and DeepSpeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from model.flow import flow_matching_loss


@dataclass
class PreparedBatch:
    inputs: dict[str, Any]  # keyword arguments of MfM.forward, or of MfM.forward_packed (x, cond_* lists)
    target: torch.Tensor | list[torch.Tensor]  # velocity, like the model's output
    tasks: list[str]  # task id per sample
    tokens: list[int]  # latent tokens per sample
    packed: bool = False  # the inputs are for MfM.forward_packed (NaViT)


def model_forward(engine: Any, inputs: dict[str, Any], packed: bool = False) -> Any:
    """The engine's forward: `MfM.forward` on a batch, or with `packed` `MfM.forward_packed` (a list out).

    A packed call still goes through `engine(...)`: DeepSpeed's forward registers the output hooks that start
    ZeRO's backward, and ZeRO-3's hooks on the root module (step reset, parameter gathers) fire around
    `module(...)`; calling `engine.module.forward_packed` directly would skip them all. So for this one call
    the root's `forward` is its packed entry."""
    if not packed:
        return engine(**inputs)
    module = engine.module
    module.forward = module.forward_packed
    try:
        return engine(**inputs)
    finally:
        del module.forward  # the instance attribute: back to the class's forward


def per_sample_loss(pred: Any, target: Any) -> torch.Tensor:
    """(B,) flow-matching losses; packed outputs are lists of per-sample tensors."""
    if isinstance(pred, list):
        return torch.cat([flow_matching_loss(p[None], t[None]) for p, t in zip(pred, target)])
    return flow_matching_loss(pred, target)


@dataclass
class StepResult:
    losses: torch.Tensor  # (B,) per-sample loss, detached
    skipped: bool  # non-finite loss on some rank: no backward, no update anywhere
    grad_norm: torch.Tensor | float | None  # as DeepSpeed gives it: reading a tensor's value waits for the GPU


def train_step(engine: Any, batch: PreparedBatch) -> StepResult:
    """Forward, loss, and (when the loss is finite on every rank) backward and optimizer step.

    The finiteness check is all-reduced so that every rank skips together: ZeRO-3's collectives in
    backward and step must be entered by all ranks or none. Reading it is the step's one host sync
    (tests/test_perf_syncs.py); losses and the grad norm stay on the device for the metrics to read."""
    losses = per_sample_loss(model_forward(engine, batch.inputs, batch.packed), batch.target)
    loss = losses.mean()
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not finite.item():
        return StepResult(losses.detach(), True, None)
    engine.backward(loss)
    engine.step()
    return StepResult(losses.detach(), False, engine.get_global_grad_norm())
