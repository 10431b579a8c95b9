"""The attainable training step of MfM: the best available kernels, timed in isolation, at the model's shapes.

For each phase size, every distinct matmul of a block (forward, and the two backward products of each) and the
attention forward + backward are timed on the given device; their sum over the layers is the step time the best
kernels allow for the model's exact FLOPs. MFU counts 3 × forward FLOPs (attention as 4·N²·D per layer) over
the peak. `train_step.py` divides this attainable time by the real step time: the fraction of attainable.

    python benchmark/perf/roofline.py --size 2b --phases 128px 360px 720px [--layers 28] [--append RESULTS.md]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from model.mfm import MFM_CONFIGS, MfMConfig

H100_PEAK_BF16 = 989e12  # dense bf16 FLOP/s of an H100 SXM
# Kernel rates measured on this workplace's H100 (bf16): dense matmul, and SDPA cuDNN attention fwd+bwd at
# head dim 64 — the estimate `estimated_attainable_seconds` uses where no GPU is at hand.
H100_MATMUL_BF16 = 767e12
H100_ATTENTION_BF16 = 440e12
TEXT_LEN = 77

# Token grid (t, h, w) and samples per GPU of each training phase (paper §3.3, Table 3): 128px 49×128×224 ->
# 13×8×14 tokens (bs 16, packed), 360px 89×352×640 -> 23×22×40 (bs 2), 720p 97×720×1280 -> 25×45×80 (bs 1).
PHASES: dict[str, tuple[tuple[int, int, int], int]] = {
    "128px": ((13, 8, 14), 16),
    "360px": ((23, 22, 40), 2),
    "720px": ((25, 45, 80), 1),
}


@dataclass(frozen=True)
class Matmul:
    """(M, K) @ (K, N), `count` times per layer; `phase` is fwd or bwd."""

    name: str
    m: int
    k: int
    n: int
    count: int
    phase: str

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


def block_matmuls(cfg: MfMConfig, tokens: int, batch: int, text_len: int = TEXT_LEN) -> list[Matmul]:
    """Every Linear product of one block, forward and backward (dX = dY·Wᵀ and dW = Xᵀ·dY)."""
    d, rows, text_rows = cfg.dim, batch * tokens, batch * text_len
    forward = [
        Matmul("attn qkvo + cross q,o", rows, d, d, 6, "fwd"),
        Matmul("cross k,v", text_rows, cfg.text_dim, d, 2, "fwd"),
        Matmul("mlp fc1", rows, d, cfg.mlp_ratio * d, 1, "fwd"),
        Matmul("mlp fc2", rows, cfg.mlp_ratio * d, d, 1, "fwd"),
        Matmul("modulation", batch, d, 6 * d, 1, "fwd"),
    ]
    backward = []
    for f in forward:
        backward.append(Matmul(f"{f.name} dX", f.m, f.n, f.k, f.count, "bwd"))
        backward.append(Matmul(f"{f.name} dW", f.k, f.m, f.n, f.count, "bwd"))
    return forward + backward


def attention_flops(cfg: MfMConfig, tokens: int, batch: int, text_len: int = TEXT_LEN) -> int:
    """Self- and cross-attention score and weighted-sum FLOPs of one layer, forward + backward (3×)."""
    return 3 * batch * (4 * tokens * tokens * cfg.dim + 4 * tokens * text_len * cfg.dim)


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of `fn` after warm-up (device events on CUDA, a host clock elsewhere)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_matmul(mm: Matmul, device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    a = torch.randn(mm.m, mm.k, device=device, dtype=dtype)
    b = torch.randn(mm.k, mm.n, device=device, dtype=dtype)
    return mm.count * _time(lambda: a @ b, device, repeats)


def attention_backends(device: torch.device) -> dict[str, list[SDPBackend]]:
    if device.type != "cuda":
        return {"math": [SDPBackend.MATH]}
    return {
        "cudnn": [SDPBackend.CUDNN_ATTENTION],
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    }


def time_attention(
    cfg: MfMConfig, tokens: int, batch: int, device: torch.device, dtype: torch.dtype, repeats: int
) -> dict[str, float]:
    """Forward + backward seconds of one layer's self- and cross-attention, per SDPA backend that runs."""
    def qkv(n: int) -> torch.Tensor:
        return torch.randn(batch, cfg.num_heads, n, cfg.head_dim, device=device, dtype=dtype, requires_grad=True)

    q, k, v = qkv(tokens), qkv(tokens), qkv(tokens)
    kt, vt = qkv(TEXT_LEN), qkv(TEXT_LEN)
    grad = torch.randn_like(q)
    results = {}
    for name, kernels in attention_backends(device).items():
        def step(kernels=kernels):
            with sdpa_kernel(kernels):
                out = F.scaled_dot_product_attention(q, k, v)
                out_x = F.scaled_dot_product_attention(q, kt, vt)
            torch.autograd.backward([out, out_x], [grad, grad])

        try:
            results[name] = _time(step, device, repeats)
        except RuntimeError as err:  # the backend does not support this shape or device
            print(f"  attention backend {name}: not available ({str(err).splitlines()[0][:80]})")
    return results


@dataclass
class Attainable:
    phase: str
    tokens: int
    batch: int
    layers: int
    step_flops: float
    seconds: float
    attention_backend: str
    attention_seconds: float

    @property
    def mfu(self) -> float:
        return self.step_flops / self.seconds / H100_PEAK_BF16

    def line(self, size: str) -> str:
        return (
            f"{size} {self.phase} attainable step {self.seconds * 1e3:.1f} ms ({self.layers} layers, "
            f"{self.batch}×{self.tokens} tokens), attainable MFU {self.mfu:.1%}, "
            f"attention {self.attention_backend} {self.attention_seconds / self.seconds:.0%} of the step"
        )


def estimated_attainable_seconds(cfg: MfMConfig, phase: str) -> tuple[float, int]:
    """(step seconds, samples per step) of `phase` at the measured H100 kernel rates, for machines without one."""
    grid, batch = PHASES[phase]
    tokens = grid[0] * grid[1] * grid[2]
    matmul = sum(mm.flops for mm in block_matmuls(cfg, tokens, batch)) / H100_MATMUL_BF16
    return cfg.num_layers * (matmul + attention_flops(cfg, tokens, batch) / H100_ATTENTION_BF16), batch


def attainable_step(
    cfg: MfMConfig,
    phase: str,
    device: torch.device,
    dtype: torch.dtype = torch.bfloat16,
    layers: int | None = None,
    repeats: int = 10,
    grid: tuple[int, int, int] | None = None,
    batch: int | None = None,
) -> Attainable:
    """Sum of the best kernel times of every block operation, times the layer count."""
    phase_grid, phase_batch = PHASES.get(phase, (None, None))
    grid, batch = grid or phase_grid, batch or phase_batch
    tokens, layers = grid[0] * grid[1] * grid[2], layers or cfg.num_layers
    matmul_s = sum(time_matmul(mm, device, dtype, repeats) for mm in block_matmuls(cfg, tokens, batch))
    attn = time_attention(cfg, tokens, batch, device, dtype, repeats)
    backend = min(attn, key=attn.get)
    per_layer_flops = sum(mm.flops for mm in block_matmuls(cfg, tokens, batch)) + attention_flops(cfg, tokens, batch)
    return Attainable(phase, tokens, batch, layers, layers * per_layer_flops, layers * (matmul_s + attn[backend]),
                      backend, layers * attn[backend])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(MFM_CONFIGS), default="2b")
    parser.add_argument("--phases", nargs="+", choices=sorted(PHASES), default=sorted(PHASES))
    parser.add_argument("--layers", type=int, help="layers to count (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--append", help="a RESULTS.md to append the lines to")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = MFM_CONFIGS[args.size]
    lines = [attainable_step(cfg, s, device, dtype, args.layers, args.repeats).line(args.size) for s in args.phases]
    print("\n".join(lines))
    if args.append:
        from benchmark.perf.results import append_results

        append_results(args.append, lines, command="python benchmark/perf/roofline.py " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
