"""Training-step throughput of MfM: latent tokens/s and MFU of real DeepSpeed ZeRO-3 steps (forward, backward,
AdamW), through the trainer's own `parallelize_mfm` and `train_step`, at the token counts of the 128px / 360px
/ 720px phases (Table 3: 49x128x224 bs 16, 89x352x640 bs 2, 97x720x1280 bs 1).

The batch is random latents, pixel conditions and T5-width text at the phase's exact shapes (the VAE and T5
are not part of the step). One process; on a GPU bf16. Three variants per phase: eager (full activation
checkpointing, as the presets train), compiled (the same with torch.compile per block) and final (compiled,
selective checkpointing, the fastest attention backend at the phase's shape). MFU counts 3x
`MfM.forward_flops` per sample over the device's dense bf16 peak. With `--roofline` the attainable step of
`roofline.py` (the best kernels for the same FLOPs) is timed in the same run, and each variant gets a line
`2b 720px MFU 44.0% attainable 47.1% fraction 93% (eager)`.

    python benchmark/perf/train_step.py --size 2b --phases 128px 360px 720px --roofline [--layers 28] [--append]
    python benchmark/perf/train_step.py --size 2b --layers 1 --phases 128px --batch 1 --append   # a CPU
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch

from benchmark.perf.roofline import H100_PEAK_BF16, PHASES, attainable_step, time_attention
from model.geometry import SIZE_MULTIPLE, pixel_frames
from model.mfm import MFM_CONFIGS, MfM
from trainer.activation_checkpointing import CHECKPOINT_MODES
from trainer.configs import deepspeed_config, load_config
from trainer.metrics import peak_flops
from trainer.parallel import init_distributed, parallelize_mfm
from trainer.step import PreparedBatch, train_step

TEXT_LEN = 77
VARIANTS = ("eager", "compiled", "final")


def random_batch(model: MfM, grid: tuple[int, int, int], batch: int, device, dtype) -> PreparedBatch:
    """Inputs of the phase's shape: latent (B, 16, t, h, w), conditions (B, c, 4(t-1)+1, 16h, 16w), text."""
    cfg, (t, h, w) = model.config, grid
    frames, height, width = pixel_frames(t), SIZE_MULTIPLE * h, SIZE_MULTIPLE * w
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device, dtype)

    x = randn(batch, cfg.latent_channels, t, 2 * h, 2 * w)
    inputs = {
        "x": x, "timestep": torch.rand(batch, generator=g).to(device) * 1000,
        "text": randn(batch, TEXT_LEN, cfg.text_dim), "text_mask": torch.ones(batch, TEXT_LEN, device=device),
        "cond_pixels": randn(batch, 3, frames, height, width), "cond_depth": randn(batch, 1, frames, height, width),
        "cond_mask": torch.ones(batch, 1, frames, height, width, device=device, dtype=dtype),
        "motion_score": torch.full((batch,), 5.0, device=device),
    }  # fmt: skip
    return PreparedBatch(inputs, torch.randn_like(x, dtype=torch.float32), ["t2v"] * batch, [t * h * w] * batch)


def measure(engine, batch: PreparedBatch, warmup: int, steps: int, on_gpu: bool) -> float:
    """Median seconds of `steps` optimizer steps after `warmup`."""
    times = []
    for i in range(warmup + steps):
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = train_step(engine, batch)
        if on_gpu:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        assert not result.skipped, "non-finite loss in the benchmark step"
    return statistics.median(times)


@dataclass(frozen=True)
class Variant:
    """How the step is built: checkpointing mode, per-block torch.compile, attention backend."""

    name: str
    checkpointing: str
    compile: bool
    attention_backend: str


def variants(names: list[str], checkpointing: str, final_checkpointing: str, best_backend: str) -> list[Variant]:
    """eager: the presets' path; compiled: the same with compiled blocks; final: compiled, selective
    checkpointing and the fastest attention kernel of the roofline's timing."""
    table = {
        "eager": Variant("eager", checkpointing, False, "auto"),
        "compiled": Variant("compiled", checkpointing, True, "auto"),
        "final": Variant("final", final_checkpointing, True, best_backend),
    }
    return [table[n] for n in names]


def best_attention_backend(cfg, grid: tuple[int, int, int], batch: int, device, dtype) -> str:
    """The SDPA backend with the fastest fwd+bwd at this shape (roofline.py's timing)."""
    times = time_attention(cfg, grid[0] * grid[1] * grid[2], batch, device, dtype, repeats=3)
    return min(times, key=times.get)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(MFM_CONFIGS), default="2b")
    p.add_argument("--phases", nargs="+", choices=sorted(PHASES), default=sorted(PHASES))
    p.add_argument("--layers", type=int, help="transformer layers (default: the preset's full depth)")
    p.add_argument("--batch", type=int, help="samples per step (default: the phase's bs/GPU of Table 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--checkpointing", choices=CHECKPOINT_MODES, default="full",
                   help="checkpointing of the eager and compiled variants (the presets train with full)")
    p.add_argument("--final-checkpointing", choices=CHECKPOINT_MODES, default="selective")
    p.add_argument("--roofline", action="store_true", help="also time roofline.py's attainable step")
    p.add_argument("--append", action="store_true", help="append each phase's results to benchmark/perf/RESULTS.md")
    args = p.parse_args(argv)

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    dims = init_distributed(sp=1, backend="nccl" if on_gpu else "gloo")
    model_cfg = MFM_CONFIGS[args.size]
    model_cfg = replace(model_cfg, num_layers=args.layers or model_cfg.num_layers)
    train_cfg = load_config(overrides={"data.table": "-", "frozen.root": "-", "model.size": args.size})
    ds_config = deepspeed_config(train_cfg, on_gpu)
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
    peak = peak_flops(None) or H100_PEAK_BF16  # a CPU has no known peak: its MFU figures are against an H100
    command = "python benchmark/perf/train_step.py " + shlex.join(argv)
    for phase in args.phases:
        grid, phase_batch = PHASES[phase]
        batch_size = args.batch or phase_batch
        tokens = grid[0] * grid[1] * grid[2]
        with torch.device("meta"):
            flops = 3 * batch_size * MfM(model_cfg).forward_flops(tokens, TEXT_LEN)
        best = attainable_step(model_cfg, phase, device, dtype, batch=batch_size) if args.roofline else None
        backend = best.attention_backend if best else best_attention_backend(model_cfg, grid, batch_size, device,
                                                                             dtype)  # fmt: skip
        lines = [best.line(args.size)] if best else []
        for variant in variants(args.variants, args.checkpointing, args.final_checkpointing, backend):
            seconds, mem = run_variant(variant, model_cfg, grid, batch_size, dims, ds_config, device, dtype, args)
            line = (f"{args.size} {phase} ({variant.name}: {model_cfg.num_layers} layers, {batch_size}x{tokens} "
                    f"tokens, {dtype}, checkpointing {variant.checkpointing}, compile {variant.compile}, attention "
                    f"{variant.attention_backend}): step {seconds:.3f} s, {batch_size * tokens / seconds:,.0f} "
                    f"tokens/s, {flops / seconds / 1e12:.2f} TFLOP/s{mem}")  # fmt: skip
            lines.append(line)
            if best:  # attainable MFU from the same FLOP count, so fraction = attainable time / step time
                lines.append(f"{args.size} {phase} MFU {flops / seconds / peak:.1%} attainable "
                             f"{flops / best.seconds / peak:.1%} fraction {best.seconds / seconds:.0%} "
                             f"({variant.name})")  # fmt: skip
            else:
                lines.append(f"{args.size} {phase} MFU {flops / seconds / peak:.1%} ({variant.name})")
            print("\n".join(lines[-2:]), flush=True)
        if args.append:
            from benchmark.perf.results import append_results

            append_results(None, lines, command=command)
    return 0


def run_variant(variant: Variant, model_cfg, grid, batch_size: int, dims, ds_config, device, dtype, args):
    """Median step seconds of a fresh model built per `variant`, and its peak memory (GPU) as text."""
    torch.manual_seed(0)
    torch._dynamo.reset()  # each compiled variant compiles its own blocks
    model = MfM(replace(model_cfg, attention_backend=variant.attention_backend))
    engine = parallelize_mfm(model, dims, ds_config | {"train_micro_batch_size_per_gpu": batch_size},
                             gradient_checkpointing=variant.checkpointing, compile=variant.compile)  # fmt: skip
    batch = random_batch(model, grid, batch_size, device, dtype)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = measure(engine, batch, args.warmup, args.steps, on_gpu)
    mem = f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if on_gpu else ""
    del engine, model, batch
    if on_gpu:
        torch.cuda.empty_cache()
    return seconds, mem


if __name__ == "__main__":
    raise SystemExit(main())
