"""`mfm generate`: any of the 16 tasks from a checkpoint, a thin layer over `model.pipeline.MfMPipeline`.

    mfm generate --task i2v --prompt "a boat on a lake" --image first.png --checkpoint CKPT --out boat.mp4
    mfm generate --task i2v ... --out boat.safetensors    # + boat.mp4; float frames (T, H, W, 3) in [0, 1]
    mfm generate --batch jobs.jsonl --checkpoint CKPT     # one job per line, models loaded once
    mfm generate --task-plugin model.task_examples.deblur --task vdeblur --video blurry.mp4 ...  # a task of yours

CKPT is one of our checkpoint folders (config.json + model.safetensors) or a released MfM pipeline root
(transformer/ vae/ text_encoder/ tokenizer/ [scheduler/]). `--lora PATH` loads a LoRA adapter (peft's
folder, or a LoRA run's step folder holding lora/) onto CKPT's transformer, scaled by `--lora-scale`.
The frozen parts come from `--vae`, `--text-encoder` and `--depth-model`, else from the checkpoint's root
(or its parent) when it holds vae/, text_encoder/ and depth/ folders.

Defaults depend on the checkpoint; every one can be overridden:
- a released folder runs as the release's CLI runs it: 25 Euler steps, CFG 6 (7 for colorization), videos
  written at 24 fps, inputs fitted inside the box and padded (`--framing release`, `--crop-type
  keep_ratio`; `keep_res` keeps the fitted size), boxes 352x640 for videos and image in/outpainting,
  1024x1024 for T2I and image colorization, 1280x1280 for image super-resolution; I2V, FLF2V, VEXT and FLC2V
  make 97 frames, VEXT/FLC2V outputs carry the input clips' other frames (see `model.release_inputs`);
- our own checkpoints use the paper's settings (§4.1): 50 steps, CFG 9.0, 16 fps, inputs cover-cropped
  to 352x640 for videos (`--framing cover`, as the trainer frames clips), an input image's own size for
  image tasks, 1024x1024 for T2I.
Both: motion score 5 (0 for images), the release's per-task negative prompt (`--negative-prompt ""` for
the empty prompt the trainer drops to), the scheduler's shift from the checkpoint's scheduler/ (else 1),
noise drawn on the CPU from `--seed`, so a seed gives the same sample on any device. Where we differ from
the release on purpose: image editing (iedit) is ours, with no release id; `--height/--width` are honoured
for every task (the release ignores them for t2i, icolor and isr); a VEXT/FLC2V output of 4k frames keeps
its first 3 frames (the release's CLI drops them: `mfm release infer` does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from model.generation_groups import init_generation_groups, launched_world
from model.output_files import media_suffix, write_output
from model.pipeline import FRAMINGS, MfMPipeline, SamplingOptions
from model.release_inputs import CROP_TYPES
from model.task_inputs import DEFAULT_FRAMES, USER_INPUTS, check_files
from model.task_plugins import TaskRegistrationError, add_plugin_argument, load_plugins_from_argv
from model.tasks import TASKS, Task

# --- jobs -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One generation request (a command line, or a line of a --batch file)."""

    task: str
    prompt: str
    out: str
    image: str | None = None
    image2: str | None = None
    video: str | None = None
    video2: str | None = None
    mask: str | None = None
    seed: int = 0
    frames: int = DEFAULT_FRAMES
    height: int | None = None
    width: int | None = None
    upscale: int = 4
    given_frames: int = 8
    invert_mask: bool = False
    crop_type: str = "keep_ratio"

    @property
    def inputs(self) -> list[str]:
        return [p for p in (self.image, self.image2, self.video, self.video2) if p]


JOB_KEYS = set(Job.__dataclass_fields__)


def job_from_dict(d: dict, where: str, defaults: dict | None = None) -> Job:
    """A Job from a batch line; keys it leaves out come from `defaults` (the command line's values)."""
    unknown = sorted(set(d) - JOB_KEYS)
    merged = {k: v for k, v in (defaults or {}).items() if v is not None} | d
    missing = sorted({"task", "prompt", "out"} - set(merged))
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}; allowed: {sorted(JOB_KEYS)}")
    return Job(**merged)


def check_job(job: Job) -> Task:
    """The job's task, after checking its input files and that `job.out` names the kind of file it makes."""
    task = check_files(job.task, job.inputs, job.mask)
    suffix = Path(job.out).suffix
    if suffix not in (media_suffix(task), ".safetensors"):
        raise ValueError(f"task {task.id} makes {'a video' if task.is_video else 'an image'}: "
                         f"--out must end in {media_suffix(task)} (or .safetensors); got {Path(job.out).name}")
    return task


def prepare_kwargs(job: Job, framing: str | None) -> dict:
    return dict(num_frames=job.frames, height=job.height, width=job.width, upscale=job.upscale,
                given_frames=job.given_frames, invert_mask=job.invert_mask, crop_type=job.crop_type,
                framing=framing)


def run_job(pipe: MfMPipeline, job: Job, options: SamplingOptions, framing: str | None = None) -> list[Path]:
    """Prepare the job's inputs, sample, write `job.out` (over several ranks: the sample group's leader
    writes, the others return no files)."""
    task = check_job(job)
    out = pipe(task, job.prompt, job.inputs, job.mask, seed=job.seed, options=options,
               **prepare_kwargs(job, framing))
    return write_output(out, job.out, task) if out is not None else []


# --- command line ---------------------------------------------------------------------------------------------


def _task_help() -> str:
    return "; ".join(f"{t.id}: {USER_INPUTS[t.id].needs}" for t in TASKS.values())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfm generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", help=f"task id (or the release's): {_task_help()}")
    add_plugin_argument(p)
    p.add_argument("--prompt", help="the caption, or the instruction for editing tasks")
    p.add_argument("--image", help="input image (i2v, flf2v first frame, image tasks)")
    p.add_argument("--image2", help="second image (flf2v: the last frame)")
    p.add_argument("--video", help="input video (video tasks)")
    p.add_argument("--video2", help="second video (flc2v: the clip to end on)")
    p.add_argument("--mask", help="mask image or video for inpainting/outpainting: white = keep, black = fill")
    p.add_argument("--invert-mask", action="store_true", help="the mask is black = keep, white = fill "
                   "(cover framing only)")
    p.add_argument("--out", help="output file: .mp4 for video tasks, .png for image tasks; .safetensors for "
                   "the float frames (key `frames`, (T, H, W, 3) in [0, 1]) plus the mp4/png beside it")
    p.add_argument("--batch", help="jsonl file: one job per line with the keys of the options above")
    p.add_argument("--checkpoint", required=True,
                   help="our checkpoint folder (or a trainer step folder) or a released pipeline root")
    p.add_argument("--variant", help="weights variant, e.g. ema (model.ema.safetensors)")
    p.add_argument("--lora", help="LoRA adapter folder (adapter_config.json + adapter_model.safetensors) or a "
                   "LoRA training step folder: loaded onto the checkpoint's transformer")
    p.add_argument("--lora-scale", type=float, default=1.0, help="multiplies the adapter's alpha/rank scaling")
    p.add_argument("--vae", help="CogVideoX VAE folder (default: CKPT's root/vae)")
    p.add_argument("--text-encoder", help="T5 folder or pipeline root with text_encoder/ tokenizer/")
    p.add_argument("--depth-model", help="Depth-Anything-V2 folder (default: CKPT's root/depth)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="Euler steps (default: 25 released folder, 50 ours)")
    p.add_argument("--guidance", type=float, help="CFG scale (default: 6, 7 for colorization, released folder; "
                   "9 ours)")
    p.add_argument("--negative-prompt", help="CFG negative prompt (default: the release's for the task)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames of a video (4k+1); the release "
                   "framing makes 97 for i2v, flf2v, vext and flc2v whatever this says")
    p.add_argument("--height", type=int, help="box height (default: see above)")
    p.add_argument("--width", type=int, help="box width (default: see above)")
    p.add_argument("--upscale", type=int, default=4, help="super-resolution factor")
    p.add_argument("--given-frames", type=int, default=8, help="vext/flc2v: frames taken from each input video")
    p.add_argument("--motion-score", type=float, help="default 5 for videos, 0 for images")
    p.add_argument("--framing", choices=FRAMINGS, help="release: fit inside the box and pad (default for a "
                   "released folder); cover: cover-crop as the trainer does (default for ours)")
    p.add_argument("--crop-type", choices=CROP_TYPES, default="keep_ratio",
                   help="release framing: keep_ratio pads to the box, keep_res keeps the fitted size")
    p.add_argument("--shift", type=float, help="scheduler shift (default: the checkpoint's scheduler/, else 1)")
    add_scale_arguments(p)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default bfloat16 on GPU")
    return p


def jobs_from_args(args: argparse.Namespace) -> list[Job]:
    """One job from the options, or one per line of --batch (the options then are every line's defaults)."""
    given = {k: v for k, v in vars(args).items() if k in JOB_KEYS}
    given["frames"] = args.frames
    if args.batch:
        lines = Path(args.batch).read_text().splitlines()
        return [job_from_dict(json.loads(line), f"{args.batch}:{i + 1}", given)
                for i, line in enumerate(lines) if line.strip()]
    return [job_from_dict({}, "the command line (or give --batch jobs.jsonl)", given)]


def main(argv: list[str]) -> int:
    try:
        load_plugins_from_argv(argv)  # tasks of your own, before the parser lists the tasks
    except TaskRegistrationError as e:
        print(f"mfm generate: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    options = SamplingOptions(args.steps, args.guidance, args.motion_score, args.negative_prompt)
    try:
        jobs = jobs_from_args(args)
        for job in jobs:
            check_job(job)  # before the models load
        pipe = load_scaled_pipeline(args)
        groups = pipe.groups
        mine = jobs if groups is None else jobs[groups.replica :: groups.dp]  # jobs sharded over sample groups
        for job in mine:
            start = time.perf_counter()
            written = run_job(pipe, job, options, args.framing)
            if written:
                print(f"{job.task}: wrote {', '.join(map(str, written))} ({time.perf_counter() - start:.1f}s)"
                      + cache_note(pipe))
    except (ValueError, FileNotFoundError) as e:
        print(f"mfm generate: {e}", file=sys.stderr)
        return 2
    return 0


def add_scale_arguments(p: argparse.ArgumentParser) -> None:
    """Sampling at scale: ranks, compile, step caching (shared with `mfm benchmark run`)."""
    p.add_argument("--sp", type=int, help="under torchrun: ranks that split one sample's tokens (Ulysses); "
                   "default every rank (halved with --cfg-parallel); the rest share out the samples")
    p.add_argument("--cfg-parallel", action="store_true",
                   help="under torchrun: the conditional and unconditional CFG branches on two ranks")
    p.add_argument("--compile", action="store_true", help="torch.compile each transformer block")
    p.add_argument("--cache-threshold", type=float,
                   help="step caching: reuse the blocks' work while the first block's residual changes less "
                   "than this (relative L1, e.g. 0.05-0.1; 0 computes every step, as without it; default off)")


def load_scaled_pipeline(args: argparse.Namespace) -> MfMPipeline:
    """The pipeline of `args.checkpoint`, parallelized over the launcher's ranks and with step caching when
    asked. bf16 on a GPU by default (the fp32 islands as the release keeps them), fp32 on a CPU."""
    groups = None
    device = args.device
    if launched_world() > 1:
        groups = init_generation_groups(args.sp, args.cfg_parallel)
    elif args.cfg_parallel or (args.sp or 1) > 1:
        raise ValueError("--sp and --cfg-parallel split a sample over several ranks: launch with torchrun "
                         "--nproc_per_node N (or the DeepSpeed launcher)")
    if groups is not None and str(device).startswith("cuda"):
        device = f"cuda:{torch.cuda.current_device()}"
    dtype = getattr(torch, args.dtype or ("bfloat16" if str(device).startswith("cuda") else "float32"))
    pipe = MfMPipeline.from_pretrained(args.checkpoint, args.vae, args.text_encoder, args.depth_model, device,
                                       dtype, args.shift, args.variant, getattr(args, "lora", None),
                                       getattr(args, "lora_scale", 1.0))
    if groups is not None or args.compile:
        pipe.parallelize(groups, args.compile)
    if args.cache_threshold is not None:
        pipe.enable_step_cache(args.cache_threshold)
    if groups is not None and groups.rank == 0:
        print(f"sampling on {groups.describe()}")
    return pipe


def cache_note(pipe: MfMPipeline) -> str:
    cache = pipe.step_cache
    return "" if cache is None else f"; {cache.computed} of {cache.calls} steps computed (step cache)"
