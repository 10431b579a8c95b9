"""Sampling latency of MfM: seconds per Euler step and per sample for one sample at the paper's setting
(97x352x640, 22k latent tokens, CFG: both branches every step), through `model.sampling.sample` and the same
wrapping `mfm generate` applies (`MfMPipeline.parallelize`: Ulysses over the ranks present, optionally CFG on
two ranks, torch.compile per block). The transformer only (random weights; T5, depth and the VAE run once per
sample and are not part of the per-step cost). bf16 on a GPU, with the release's fp32 islands.

    python benchmark/perf/sample_latency.py --size 2b --steps 6 --append                # one GPU: SP=1
    torchrun --nproc_per_node 8 benchmark/perf/sample_latency.py --size 2b --append     # SP=8 over 8 GPUs
    python benchmark/perf/sample_latency.py --size tiny --frames 9 --height 32 --width 48 --steps 2   # a CPU

The total is the measured per-step time x `--total-steps` (the paper's 50), so a short run prices a whole
sample.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from dataclasses import replace

import torch

from benchmark.perf.results import append_results
from model.generation_groups import init_generation_groups, launched_world
from model.geometry import latent_shape
from model.mfm import MFM_CONFIGS, MfM
from model.parallelize import apply_compile, apply_ulysses
from model.sampling import CfgSplit, Conditioning, make_scheduler, sample

TEXT_LEN = 77


def conditioning(model: MfM, frames: int, height: int, width: int, device, dtype) -> Conditioning:
    """A T2V-shaped condition of random values (the cost does not depend on them)."""
    g = torch.Generator().manual_seed(0)
    cfg = model.config

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device, dtype)

    return Conditioning(
        text=randn(1, TEXT_LEN, cfg.text_dim), text_mask=torch.ones(1, TEXT_LEN, device=device, dtype=torch.bool),
        cond_pixels=randn(1, 3, frames, height, width), cond_depth=randn(1, 1, frames, height, width),
        cond_mask=torch.zeros(1, 1, frames, height, width, device=device, dtype=dtype),
        motion_score=torch.full((1,), 5.0, device=device),
    )  # fmt: skip


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="2b", choices=sorted(MFM_CONFIGS))
    p.add_argument("--layers", type=int, help="fewer blocks than the preset (a CPU)")
    p.add_argument("--frames", type=int, default=97)
    p.add_argument("--height", type=int, default=352)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--steps", type=int, default=6, help="Euler steps timed (after one warm-up sample)")
    p.add_argument("--total-steps", type=int, default=50, help="steps of a whole sample (the paper's 50)")
    p.add_argument("--cfg-parallel", action="store_true", help="the two CFG branches on two ranks")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--append", action="store_true", help="append the result to benchmark/perf/RESULTS.md")
    args = p.parse_args(argv)

    on_gpu = torch.cuda.is_available()
    groups = init_generation_groups(None, args.cfg_parallel) if launched_world() > 1 else None
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if on_gpu else "cpu")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    cfg = MFM_CONFIGS[args.size]
    if args.layers:
        cfg = replace(cfg, num_layers=args.layers)
    model = MfM(cfg).to(device, dtype).eval()
    if groups is not None and groups.sp > 1:
        apply_ulysses(model, groups.sp_group)
    if args.compile:
        apply_compile(model)
    positive = conditioning(model, args.frames, args.height, args.width, device, dtype)
    negative = positive.negative(positive.text.flip(1), positive.text_mask)
    cfg_split = CfgSplit(groups.cfg_branch, groups.cfg_group) if groups is not None and groups.cfg == 2 else None
    shape = (1, *latent_shape(args.frames, args.height, args.width, cfg.latent_channels))
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    tokens = shape[2] * (shape[3] // cfg.patch_size) * (shape[4] // cfg.patch_size)

    def run(steps: int) -> float:
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        sample(model, noise, positive, negative, 6.0, steps, make_scheduler(5.0), cfg_split=cfg_split)
        if on_gpu:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(1)  # warm-up (and compile)
    per_step = statistics.median(run(1) for _ in range(args.steps))
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else float("nan")
    layout = groups.describe() if groups is not None else "1 rank: sp=1"
    line = (f"{args.size}{f' ({args.layers} layers)' if args.layers else ''} sample {args.frames}x{args.height}x"
            f"{args.width} ({tokens} tokens, CFG, {'compiled' if args.compile else 'eager'}, {layout}): "
            f"{per_step:.3f} s/step, {per_step * args.total_steps:.1f} s for {args.total_steps} steps, "
            f"peak {peak:.1f} GiB")
    if groups is None or groups.rank == 0:
        print(line)
        if args.append:
            append_results(None, [line], "python benchmark/perf/sample_latency.py " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
