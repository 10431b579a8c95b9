"""`mfm benchmark run`: generate every sample of a benchmark table with one checkpoint.

    mfm benchmark run --checkpoint CKPT --bench bench.lance --out runs/ckpt [--tasks vinp,voutp]

Each sample's condition is rebuilt from the stored ground truth and seed (and checked against the stored
parameters), depth maps are computed for the given frames of generation tasks, and `MfMPipeline.sample`
(the code behind `mfm generate`) samples it with the same seed and the pipeline's defaults (the paper's for
our checkpoints, the release's for a released folder). Outputs go to OUT/<task>/<sample_id>.mp4
(or .png), each written atomically, so a killed run resumes by skipping the files that exist. OUT/run.json
records the checkpoint, its model config, the benchmark table and version, and the sampling settings; a
resumed run with different ones is refused, so one folder never mixes two runs.

On N ranks (`torchrun --nproc_per_node N -m mfm.cli benchmark run ...`) the samples are shared out over
data-parallel sample groups, each of `--sp` ranks (Ulysses) or two CFG branches (`--cfg-parallel`); the files
written are those of a one-rank run. With `--cache-threshold`, OUT/steps.jsonl records per sample the steps
computed, and the report shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import lance
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from benchmark.table import Sample, check_benchmark_schema, read_sample_media, read_samples
from model.conditions import benchmark_condition
from model.generate_cli import add_scale_arguments, load_scaled_pipeline
from model.output_files import media_suffix, write_media
from model.pipeline import MfMPipeline, SamplingOptions, unit_frames
from model.tasks import TASKS, get_task

RUN_RECORD = "run.json"
STEPS_RECORD = "steps.jsonl"  # per sample, the steps computed under step caching


def output_path(out_dir: str | Path, sample: Sample) -> Path:
    return Path(out_dir) / sample.task / f"{sample.sample_id}{media_suffix(get_task(sample.task))}"


def run_record(pipe: MfMPipeline, bench_uri: str, bench_version: int, options: SamplingOptions) -> dict:
    return {
        "checkpoint": str(Path(pipe.checkpoint).resolve()),
        "variant": pipe.variant,
        "model_config": asdict(pipe.transformer.config),
        "bench": str(Path(bench_uri).resolve()) if "://" not in str(bench_uri) else str(bench_uri),
        "bench_version": bench_version,
        "sampling": asdict(options) | {"cache_threshold": pipe.step_cache.threshold if pipe.step_cache else 0.0},
        "defaults": asdict(pipe.defaults),
        "scheduler": dict(pipe.scheduler.config),
    }


def _check_resume(path: Path, record: dict) -> None:
    """Refuse to add outputs to a folder that holds another run's."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    keys = ("checkpoint", "variant", "model_config", "bench", "bench_version", "sampling")
    changed = [k for k in keys if old.get(k) != json.loads(json.dumps(record[k]))]
    if changed:
        raise ValueError(f"{path.parent} holds outputs of another run (different {', '.join(changed)}); "
                         "use a new --out, or delete the folder")


def run_benchmark(
    pipe: MfMPipeline,
    bench_uri: str,
    out_dir: str | Path,
    options: SamplingOptions | None = None,
    tasks: list[str] | None = None,
    log=print,
) -> dict[str, int]:
    """Generate the outputs of every sample (of `tasks`) not yet in `out_dir`; returns counts. Over several
    ranks (`pipe.parallelize`) every rank calls it: the samples to do are shared out over the sample groups
    (sample i of the list to group i mod dp), each group's leader writes, global rank 0 shows the progress."""
    options = options or SamplingOptions()
    groups = pipe.groups
    rank0 = groups is None or groups.rank == 0
    ds = lance.dataset(bench_uri)
    check_benchmark_schema(ds.schema, bench_uri)
    out_dir = Path(out_dir)
    record = run_record(pipe, bench_uri, ds.version, options)
    _check_resume(out_dir / RUN_RECORD, record)
    samples = [s for s in read_samples(ds) if tasks is None or s.task in tasks]
    todo = [s for s in samples if not output_path(out_dir, s).exists()]
    if groups is not None:
        dist.barrier()  # every rank has listed what exists before any writes
    if rank0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RUN_RECORD).write_text(json.dumps(record, indent=2, default=str))
        log(f"{bench_uri} (version {ds.version}): {len(samples)} samples, {len(samples) - len(todo)} done, "
            f"{len(todo)} to generate -> {out_dir}" + (f" on {groups.describe()}" if groups else ""))
    mine = todo if groups is None else todo[groups.replica :: groups.dp]
    share = 1 if groups is None else groups.dp
    with tqdm(total=len(todo), desc="benchmark", unit="sample", disable=not (todo and rank0)) as bar:
        for sample in mine:
            start = time.perf_counter()
            cond = None
            if pipe.is_leader:
                task = get_task(sample.task)
                gt = read_sample_media(ds, sample, "gt")  # (3, T, H, W)
                cond = benchmark_condition(task, sample.clip(gt), sample.seed, extra=task.generate_extra)
                sample.check_condition(cond)
                cond = pipe.with_depth(cond)
            frames = pipe.sample(cond, sample.seed, options)  # (3, T, H, W) on the leader
            if pipe.is_leader:
                write_media(unit_frames(frames), output_path(out_dir, sample), fps=sample.fps)
                record_steps(out_dir, sample, pipe)
                tqdm.write(f"{sample.sample_id}: {time.perf_counter() - start:.1f}s")
            bar.update(min(share, bar.total - bar.n))
    if groups is not None:
        dist.barrier()
    return {"samples": len(samples), "generated": len(todo)}


def record_steps(out_dir: Path, sample: Sample, pipe: MfMPipeline) -> None:
    """Append the sample's computed step count (step caching) to OUT/steps.jsonl, one line per sample."""
    cache = pipe.step_cache
    if cache is None:
        return
    line = {"sample_id": sample.sample_id, "task": sample.task, "steps": cache.calls, "computed": cache.computed,
            "cache_threshold": cache.threshold}
    with open(out_dir / STEPS_RECORD, "a") as f:
        f.write(json.dumps(line) + "\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="our checkpoint folder (or a trainer step folder) or a released pipeline root")
    p.add_argument("--variant", help="weights variant, e.g. ema (model.ema.safetensors)")
    p.add_argument("--bench", required=True, help="benchmark Lance table (`mfm benchmark build`)")
    p.add_argument("--out", required=True, help="folder for the outputs (resumable)")
    p.add_argument("--vae", help="CogVideoX VAE folder (default: CKPT's root/vae)")
    p.add_argument("--text-encoder", help="T5 folder or pipeline root with text_encoder/ tokenizer/")
    p.add_argument("--depth-model", help="Depth-Anything-V2 folder (default: CKPT's root/depth)")
    p.add_argument("--tasks", help=f"comma-separated subset of: {','.join(TASKS)}")
    p.add_argument("--steps", type=int, help="Euler steps (default: 50 ours, the paper's; 25 a released folder)")
    p.add_argument("--guidance", type=float, help="CFG scale (default: 9.0 ours, the paper's; 6 a released "
                   "folder, 7 for its colorization)")
    p.add_argument("--negative-prompt", help="CFG negative prompt (default: the release's for the task)")
    p.add_argument("--shift", type=float, help="scheduler shift (default: the checkpoint's scheduler/, else 1)")
    add_scale_arguments(p)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default bfloat16 on GPU")


def main(args: argparse.Namespace) -> int:
    tasks = None
    try:
        if args.tasks:
            tasks = [get_task(t).id for t in args.tasks.split(",")]
        pipe = load_scaled_pipeline(args)
        options = SamplingOptions(args.steps, args.guidance, None, args.negative_prompt)
        counts = run_benchmark(pipe, args.bench, args.out, options, tasks)
    except (ValueError, FileNotFoundError) as e:
        print(f"mfm benchmark run: {e}", file=sys.stderr)
        return 2
    if pipe.groups is None or pipe.groups.rank == 0:
        print(f"done: {counts['generated']} generated, {counts['samples']} outputs in {args.out}")
    return 0
