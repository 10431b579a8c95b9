"""Activation checkpointing of MfM blocks, applied from outside (`parallelize_mfm`'s first step, before compile).

A block's `forward` is replaced by a `CheckpointedForward` of the block's own forward, the way `apply_compile`
replaces it with a compiled one: parameter names stay (ZeRO-3 and saved checkpoints depend on them), and
compiling the block afterwards compiles its checkpointing too. Imports only torch (`benchmark/perf/train_step.py`
runs where Lance, Ray and PyAV are missing).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

if TYPE_CHECKING:
    from model.mfm import MfM

_aten = torch.ops.aten
# Outputs kept by selective checkpointing: the attention kernels (out + log-sum-exp, so backward needs no
# attention recompute), and for "selective_matmul" also the Linear products. All else (norms, modulate, RoPE,
# GELU, layout changes) is recomputed in backward.
_ATTENTION_OPS = frozenset({
    _aten._scaled_dot_product_flash_attention.default, _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default, _aten._scaled_dot_product_flash_attention_for_cpu.default,
})  # fmt: skip
_MATMUL_OPS = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default})
CHECKPOINT_MODES = ("off", "full", "selective", "selective_matmul")


def _checkpoint_policy(saved_ops: frozenset, ctx, func, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if func in saved_ops else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_saved_ops(mode: str) -> frozenset:
    """The aten ops whose outputs a selective checkpointing mode keeps (none for "full")."""
    return {"selective": _ATTENTION_OPS, "selective_matmul": _ATTENTION_OPS | _MATMUL_OPS}.get(mode, frozenset())


def _selective_context_fn(mode: str):
    """The `context_fn` of `torch.utils.checkpoint.checkpoint` for a selective checkpointing mode."""
    policy = functools.partial(_checkpoint_policy, checkpoint_saved_ops(mode))
    return functools.partial(create_selective_checkpoint_contexts, policy)


def checkpoint_mode(mode: bool | str) -> str:
    """Normalise True/False and the mode names to one of CHECKPOINT_MODES."""
    if isinstance(mode, bool):
        mode = "full" if mode else "off"
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"gradient checkpointing mode {mode!r} is not one of {CHECKPOINT_MODES} (or True/False)")
    return mode


class CheckpointedForward:
    """A block's forward, recomputed in backward per `mode` ("full" or a selective one); plain under no_grad."""

    def __init__(self, forward: Callable[..., torch.Tensor], mode: str):
        self.forward, self.mode = forward, mode

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.forward(*args, **kwargs)
        if self.mode == "full":  # the default context_fn (dynamo takes no explicit no-op one)
            return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        context_fn = _selective_context_fn(self.mode)
        return checkpoint(self.forward, *args, use_reentrant=False, context_fn=context_fn, **kwargs)


def checkpoint_block(block: nn.Module, mode: bool | str) -> None:
    """Set one block's checkpointing: `mode` replaces any earlier one, and "off" (or False) gives back the
    block's own forward. Apply before `apply_compile`, which compiles whatever `block.forward` is then."""
    mode = checkpoint_mode(mode)
    if isinstance(block.forward, CheckpointedForward):
        del block.forward  # the instance attribute: back to the class's forward
    if mode != "off":
        block.forward = CheckpointedForward(block.forward, mode)


def apply_activation_checkpointing(model: MfM, mode: bool | str) -> str:
    """Recompute every block in the backward pass instead of keeping its activations; returns the mode.
    `mode`: "full" (or True) keeps only each block's inputs; "selective" also keeps the attention outputs and
    recomputes the rest; "selective_matmul" keeps the attention and Linear outputs and recomputes only the
    elementwise ops; "off" (or False) keeps everything."""
    mode = checkpoint_mode(mode)
    for block in model.blocks:
        checkpoint_block(block, mode)
    return mode


def checkpointing_mode(model: MfM) -> str:
    """The checkpointing mode of the model's blocks (one of CHECKPOINT_MODES), compiled or not; a ValueError
    if the blocks differ."""
    forwards = (inspect.unwrap(block.forward) for block in model.blocks)  # torch.compile wraps what it compiles
    modes = {f.mode if isinstance(f, CheckpointedForward) else "off" for f in forwards}
    if len(modes) != 1:
        raise ValueError(f"the blocks have different checkpointing modes: {sorted(modes)}")
    return modes.pop()
