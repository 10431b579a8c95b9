"""Memory model of MfM training: what fits per GPU for a size, token count, sequence parallelism and ZeRO-3.

Activation bytes per layer are measured, not guessed: one real block runs forward in bf16 and every tensor
autograd saves for backward is counted once (by storage). That is done at two token counts and fitted as
a·N + b (attention kernels that keep only the log-sum-exp make it linear in N), for each checkpointing mode
(selective: what the selective policy keeps, counted as its ops run). The rest is bookkeeping:
ZeRO-3 shards bf16 weights, bf16 gradients and fp32 master weights + Adam moments (16 bytes per parameter)
over the data-parallel world; each rank holds N / sp tokens outside attention.

    python benchmark/perf/memory_model.py --size 8b --tokens 90000 --sp 2 --gpus 8 --gpu-gib 80
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from model.math import rope_3d
from model.mfm import MFM_CONFIGS, MfMBlock, MfMConfig
from trainer.activation_checkpointing import CHECKPOINT_MODES, checkpoint_block, checkpoint_mode, checkpoint_saved_ops

ZERO3_BYTES_PER_PARAM = 2 + 2 + 4 + 4 + 4  # bf16 weight, bf16 grad, fp32 master, Adam m and v
TEXT_LEN = 77
GIB = 2**30


class _OutputBytes(TorchDispatchMode):
    """Counts the output storage bytes of the given aten ops (what a selective checkpoint policy keeps)."""

    def __init__(self, ops: frozenset):
        super().__init__()
        self.ops, self.bytes = ops, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.ops:
            tensors = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            self.bytes += sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())
        return out


def saved_activation_bytes(
    cfg: MfMConfig, tokens: int, dtype: torch.dtype = torch.bfloat16, checkpointing: str = "off"
) -> int:
    """Bytes autograd keeps for backward through one block on `tokens` tokens (one sample), by storage, under
    a checkpointing mode (`checkpoint_block`): "off" everything; "full" the block's inputs; "selective*" the inputs
    plus the outputs of the ops the selective policy keeps (`checkpoint_saved_ops`; SAC's own store bypasses
    saved-tensor hooks, so those outputs are counted as the ops run)."""
    if checkpointing not in ("off", "full"):
        with _OutputBytes(checkpoint_saved_ops(checkpointing)) as kept:
            _saved_bytes(cfg, tokens, dtype, "off")
        return _saved_bytes(cfg, tokens, dtype, "full") + kept.bytes
    return _saved_bytes(cfg, tokens, dtype, checkpointing)


def _saved_bytes(cfg: MfMConfig, tokens: int, dtype: torch.dtype, checkpointing: str) -> int:
    torch.manual_seed(0)
    block = MfMBlock(cfg).to(dtype)
    checkpoint_block(block, checkpointing)
    x = torch.randn(1, tokens, cfg.dim, dtype=dtype, requires_grad=True)
    c = torch.randn(1, cfg.dim, dtype=dtype)
    text = torch.randn(1, TEXT_LEN, cfg.text_dim, dtype=dtype)
    bias = torch.zeros(1, 1, 1, TEXT_LEN, dtype=dtype)
    rope = rope_3d((1, 1, tokens), cfg.head_dim)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x, c, text, bias, rope)
    weights = {p.untyped_storage().data_ptr() for p in block.parameters()}
    inputs = {t.untyped_storage().data_ptr() for t in (c, text, bias)}
    return sum(n for ptr, n in seen.items() if ptr not in weights and ptr not in inputs)


@dataclass(frozen=True)
class ActivationFit:
    """Saved bytes per layer = per_token · N + constant."""

    per_token: float
    constant: float

    def bytes(self, tokens: float) -> float:
        return self.per_token * tokens + self.constant


def fit_activation_bytes(
    cfg: MfMConfig, small: int = 64, large: int = 256, checkpointing: str = "off"
) -> ActivationFit:
    """Saved bytes per layer under a checkpointing mode, fitted as a·N + b from two token counts."""
    a = saved_activation_bytes(cfg, small, checkpointing=checkpointing)
    b = saved_activation_bytes(cfg, large, checkpointing=checkpointing)
    per_token = (b - a) / (large - small)
    return ActivationFit(per_token, a - per_token * small)


@dataclass(frozen=True)
class MemoryEstimate:
    states_gib: float  # ZeRO-3 shard of weights, gradients, optimizer
    activations_gib: float  # saved for backward over all layers
    working_gib: float  # one layer's full activations while it runs or recomputes, plus gathered weights
    total_gib: float


def estimate(
    cfg: MfMConfig,
    fit: ActivationFit,
    tokens: int,
    sp: int,
    gpus: int,
    checkpointing: bool | str,
    layers: int | None = None,
    kept: ActivationFit | None = None,
) -> MemoryEstimate:
    """Per-GPU memory of one training step (batch 1 per sequence-parallel group). `checkpointing` is a mode of
    `apply_activation_checkpointing`; the selective modes need `kept`, the fit of what that mode saves per
    layer (`fit_activation_bytes(..., checkpointing=mode)`)."""
    mode = checkpoint_mode(checkpointing)
    layers = layers or cfg.num_layers
    params = layers * sum(p.numel() for p in _meta_block(cfg).parameters())
    local = tokens / sp
    layer_bytes = fit.bytes(local)
    block_input = local * cfg.dim * 2  # bf16 tokens entering a block: all that full checkpointing keeps
    if mode in ("off", "full"):
        kept_bytes = layer_bytes if mode == "off" else block_input
    elif kept is None:
        raise ValueError(f"checkpointing {mode!r} needs `kept`, the fit of the bytes that mode saves per layer")
    else:
        kept_bytes = kept.bytes(local)
    activations = layers * kept_bytes
    gathered = 2 * 2 * params / layers  # two layers' bf16 weights gathered at once (compute + prefetch)
    working = (layer_bytes if mode != "off" else 0) + gathered  # the layer being recomputed
    states = ZERO3_BYTES_PER_PARAM * params / gpus
    total = states + activations + working
    return MemoryEstimate(states / GIB, activations / GIB, working / GIB, total / GIB)


def _meta_block(cfg: MfMConfig) -> MfMBlock:
    with torch.device("meta"):
        return MfMBlock(cfg)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(MFM_CONFIGS), default="8b")
    parser.add_argument("--tokens", type=int, default=90000, help="tokens per sample (720p: 25×45×80)")
    parser.add_argument("--sp", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--gpu-gib", type=float, default=80.0)
    parser.add_argument("--append", help="a RESULTS.md to append the lines to")
    args = parser.parse_args(argv)
    cfg = MFM_CONFIGS[args.size]
    fit = fit_activation_bytes(cfg)
    lines = [f"{args.size}: saved activations per layer = {fit.per_token / 1024:.1f} KiB/token "
             f"+ {fit.constant / 2**20:.1f} MiB (measured, bf16)"]
    for mode in CHECKPOINT_MODES:
        kept = fit_activation_bytes(cfg, checkpointing=mode) if mode.startswith("selective") else None
        e = estimate(cfg, fit, args.tokens, args.sp, args.gpus, mode, kept=kept)
        verdict = "fits" if e.total_gib <= args.gpu_gib else "does not fit"
        lines.append(
            f"{args.size} {args.tokens} tokens sp={args.sp} ZeRO-3 on {args.gpus} GPUs, "
            f"activation checkpointing {mode}: states {e.states_gib:.1f} + activations "
            f"{e.activations_gib:.1f} + working {e.working_gib:.1f} = {e.total_gib:.1f} GiB per GPU "
            f"({verdict} in {args.gpu_gib:.0f} GiB)"
        )
    print("\n".join(lines))
    if args.append:
        from benchmark.perf.results import append_results

        append_results(args.append, lines, command="python benchmark/perf/memory_model.py " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
