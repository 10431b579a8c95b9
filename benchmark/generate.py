"""`mfm generate`: any of the 16 tasks from a checkpoint, with the paper's inference settings.

    mfm generate --task i2v --prompt "a boat on a lake" --image first.png --checkpoint CKPT --out boat.mp4
    mfm generate --batch jobs.jsonl --checkpoint CKPT          # one job per line, models loaded once
    mfm generate --task-plugin model.task_examples.deblur --task vdeblur --video blurry.mp4 ...  # a task of yours

CKPT is one of our checkpoint folders (config.json + model.safetensors) or a released MfM pipeline root
(transformer/ vae/ text_encoder/ tokenizer/ [scheduler/]). `--lora PATH` loads a LoRA adapter (peft's
folder, or a LoRA run's step folder holding lora/) onto CKPT's transformer, scaled by `--lora-scale`.
The frozen parts come from `--vae`, `--text-encoder` and `--depth-model`, else from the checkpoint's root
(or its parent) when it holds vae/, text_encoder/ and depth/ folders.

Defaults are the paper's (§4.1): 50 Euler steps, CFG 9.0, 97 frames at 352x640 for videos, motion score 5
(0 for images). Depth maps are computed for the given frames of generation tasks. Under CFG the negative
branch is the release's: the negative prompt, the same pixels and mask, depth zeroed; the negative prompt
defaults to the release's per-task one (`--negative-prompt ""` for the empty prompt the trainer drops to).
Videos are written as mp4 (16 fps, the prompt's "#FPS: 16."), images as png. The initial noise is drawn on
the CPU from `--seed`, so a seed gives the same sample on any device.

`generate_sample` is the one sampling function; `mfm benchmark run` calls it too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image

from model.conditions import Condition
from model.depth import DepthEstimator
from model.geometry import latent_shape
from model.lora import adapter_folder, load_lora
from model.mfm import MfM
from model.release import load_transformer
from model.sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS, Conditioning, make_scheduler, sample
from model.task_inputs import DEFAULT_FRAMES, DEFAULT_VIDEO_SIZE, USER_INPUTS, condition_from_files
from model.task_inputs import depth_on_given_frames as given_frames_depth
from model.task_plugins import TaskRegistrationError, add_plugin_argument, load_plugins_from_argv
from model.tasks import TASKS, Task, get_task
from model.text_encoder import TextEncoder
from model.vae import VideoVAE
from pipeline.contract.codecs import encode_video
from pipeline.contract.frames import tensor_to_frames

VIDEO_MOTION_SCORE = 5.0
IMAGE_MOTION_SCORE = 0.0
OUTPUT_FPS = 16.0

# The release's negative prompts (infer_mfm_pipeline.py): one default, replaced for colorization and SR.
NEGATIVE_PROMPT = (
    "static, watermark, subtitles, scene change, flickering, distorted, discontinuous, bad anatomy, bad hands, "
    "missing fingers, cropped, ugly, blurry, low resolution, low quality, motionless, cartoon, animation, "
    "oil painting, #reverse, #motion: super-fast, #backplay, human distortion, unnatural movement"
)
TASK_NEGATIVE_PROMPTS = {
    "grayscale": "over-saturated, grayscale, b&w, color bleeding, plain",
    "downsample": "blurry, dotted, noise, jpeg compression, raster lines, unclear, lowres, over-smoothed",
}


def negative_prompt_for(task: Task) -> str:
    """The release's negative prompt for `task`."""
    return TASK_NEGATIVE_PROMPTS.get(task.condition, NEGATIVE_PROMPT)


# --- the models --------------------------------------------------------------------------------------------


@dataclass
class GenerationModels:
    """The transformer and the frozen parts generation needs."""

    model: MfM
    vae: VideoVAE
    text_encoder: TextEncoder
    depth: DepthEstimator | None
    scheduler: FlowMatchEulerDiscreteScheduler
    checkpoint: str
    variant: str | None = None
    lora: str | None = None  # the adapter folder loaded onto the transformer
    lora_scale: float = 1.0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _part_folder(checkpoint: Path, name: str) -> Path | None:
    """`name/` beside the transformer: in the checkpoint folder itself or in its parent (pipeline root)."""
    for root in (checkpoint, checkpoint.parent):
        if (root / name).is_dir():
            return root
    return None


def load_models(
    checkpoint: str | Path,
    vae: str | Path | None = None,
    text_encoder: str | Path | None = None,
    depth_model: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    shift: float | None = None,
    variant: str | None = None,
    lora: str | Path | None = None,
    lora_scale: float = 1.0,
) -> GenerationModels:
    """Load the transformer from `checkpoint` (our folder, a trainer step folder, a released pipeline root or
    its transformer/; `variant` "ema" for EMA weights), with the LoRA adapter at `lora` (scaled by
    `lora_scale`) when given, and the VAE, T5 and depth model from the given paths or from
    the checkpoint's pipeline root. The scheduler is the root's `scheduler/` when there is one."""
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"--checkpoint {ckpt}: no such folder")
    if (ckpt / "model" / "config.json").is_file():  # a trainer step folder: its weights are in model/
        ckpt = ckpt / "model"
    model = load_transformer(ckpt, variant=variant, dtype=dtype, device=device).eval()
    if lora is not None:
        lora = adapter_folder(lora)
        load_lora(model, lora, lora_scale)
    paths = {"vae": vae, "text_encoder": text_encoder, "depth": depth_model}
    for name, flag in (("vae", "--vae"), ("text_encoder", "--text-encoder")):
        if paths[name] is None:
            paths[name] = _part_folder(ckpt, name)
        if paths[name] is None:
            raise FileNotFoundError(f"no {name}/ beside {ckpt} and no {flag} given: say where the {name} is")
    if paths["depth"] is None:
        paths["depth"] = _part_folder(ckpt, "depth")
    encoder = TextEncoder.from_pretrained(paths["text_encoder"]).to(device)
    if encoder.dim != model.config.text_dim:
        raise ValueError(
            f"text encoder {paths['text_encoder']} has width {encoder.dim}; the checkpoint's cross-attention "
            f"takes text_dim {model.config.text_dim}"
        )
    depth = DepthEstimator.from_pretrained(paths["depth"]).to(device) if paths["depth"] is not None else None
    root = _part_folder(ckpt, "scheduler")
    if shift is None and root is not None:
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(root), subfolder="scheduler")
    else:
        scheduler = make_scheduler(1.0 if shift is None else shift)
    vae_model = VideoVAE.from_pretrained(paths["vae"], tiling=True).to(device)
    return GenerationModels(model, vae_model, encoder, depth, scheduler, str(ckpt), variant,
                            None if lora is None else str(lora), lora_scale)


# --- one sample ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: the paper's settings by default."""

    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    motion_score: float | None = None  # None: 5 for videos, 0 for images
    negative_prompt: str | None = None  # None: the release's prompt for the task


def depth_on_given_frames(cond: Condition, models: GenerationModels) -> Condition:
    """`cond` with depth maps of its given frames when its task is a generation task (I2V, VEXT, FLF2V,
    FLC2V); other conditions are returned as they are."""
    if not get_task(cond.task).generation or not cond.mask.any():
        return cond
    if models.depth is None:
        if not models.model.config.use_depth:
            return cond
        raise ValueError(f"task {cond.task} needs depth maps of its given frames: pass --depth-model")
    def predict(frames: torch.Tensor) -> torch.Tensor:
        return models.depth.predict(frames.to(models.device)).cpu()

    depth = given_frames_depth(cond.pixels, cond.mask, predict)
    return replace(cond, depth=depth * cond.mask)


def generate_sample(
    models: GenerationModels,
    cond: Condition,
    seed: int,
    options: SamplingOptions | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample one video (or image) for `cond` -> frames (3, T, H, W) in [-1, 1], float32 on the CPU.

    `cond.depth` is used as given (see `depth_on_given_frames`). The noise comes from a CPU generator seeded
    with `seed`."""
    options = options or SamplingOptions()
    task = get_task(cond.task)
    device, dtype = models.device, next(models.model.parameters()).dtype
    _, t, h, w = cond.pixels.shape
    negative_prompt = negative_prompt_for(task) if options.negative_prompt is None else options.negative_prompt
    text, keep = models.text_encoder.encode([cond.prompt, negative_prompt])  # (2, 77, D), (2, 77)
    motion = options.motion_score
    if motion is None:
        motion = VIDEO_MOTION_SCORE if task.is_video else IMAGE_MOTION_SCORE
    inputs = {k: v.to(device, dtype) for k, v in cond.to_model_inputs().items()}  # (1, C, T, H, W) each
    positive = Conditioning(
        text=text[:1].to(dtype), text_mask=keep[:1], motion_score=torch.tensor([motion], device=device), **inputs
    )
    negative = positive.negative(text[1:].to(dtype), keep[1:]) if options.guidance != 1.0 else None
    shape = (1, *latent_shape(t, h, w, models.vae.latent_channels))  # (1, C, t, h/8, w/8)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype)
    latents = sample(
        models.model, noise, positive, negative, options.guidance, options.steps, models.scheduler, progress
    )
    return models.vae.decode(latents.float())[0].cpu()  # (3, T, H, W)


# --- writing --------------------------------------------------------------------------------------------------


def media_suffix(task: Task) -> str:
    return ".mp4" if task.is_video else ".png"


def write_media(frames: torch.Tensor, path: str | Path, fps: float = OUTPUT_FPS) -> Path:
    """Frames (3, T, H, W) -> mp4 (T > 1) or png (T == 1), written atomically (a partial file never has
    the final name, so a resumed run can trust any file it finds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = tensor_to_frames(frames)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix == ".png":
        if rgb.shape[0] != 1:
            raise ValueError(f"{path}: a png holds one frame; got {rgb.shape[0]} (write .mp4)")
        Image.fromarray(rgb[0]).save(tmp)
    elif path.suffix == ".mp4":
        tmp.write_bytes(encode_video(rgb, fps))
    else:
        raise ValueError(f"{path}: output must end in .mp4 or .png")
    tmp.replace(path)
    return path


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

    @property
    def inputs(self) -> list[str]:
        return [p for p in (self.image, self.image2, self.video, self.video2) if p]

    def size(self, task: Task) -> tuple[int, int] | None:
        """The generation size: as asked; else 352x640 for videos (the release's default; inputs are scaled
        to cover it and centre-cropped); None (the input's own size, x upscale for super-resolution, or
        1024x1024 for t2i) for images and video super-resolution."""
        if self.height or self.width:
            if not (self.height and self.width):
                raise ValueError("give both --height and --width, or neither")
            return self.height, self.width
        if task.is_video and task.condition != "downsample":
            return DEFAULT_VIDEO_SIZE
        return None


JOB_KEYS = set(Job.__dataclass_fields__)


def job_from_dict(d: dict, where: str, defaults: dict | None = None) -> Job:
    """A Job from a batch line; keys it leaves out come from `defaults` (the command line's values)."""
    unknown = sorted(set(d) - JOB_KEYS)
    merged = {k: v for k, v in (defaults or {}).items() if v is not None} | d
    missing = sorted({"task", "prompt", "out"} - set(merged))
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}; allowed: {sorted(JOB_KEYS)}")
    return Job(**merged)


def job_condition(job: Job) -> Condition:
    """The job's condition from its files, without depth maps (`depth_on_given_frames` adds them): this
    checks every input, so a wrong one fails before any model loads."""
    task = get_task(job.task)
    if Path(job.out).suffix != media_suffix(task):
        raise ValueError(f"task {task.id} makes {'a video' if task.is_video else 'an image'}: "
                         f"--out must end in {media_suffix(task)}; got {Path(job.out).name}")
    return condition_from_files(
        task, job.inputs, job.prompt, job.mask, num_frames=job.frames, size=job.size(task), upscale=job.upscale,
        given_frames=job.given_frames, invert_mask=job.invert_mask,
    )


def run_job(models: GenerationModels, job: Job, options: SamplingOptions, cond: Condition | None = None,
            progress: bool = True) -> Path:
    """Build the condition from the job's files (unless given), add depth maps, sample, write `job.out`."""
    cond = depth_on_given_frames(cond or job_condition(job), models)
    frames = generate_sample(models, cond, job.seed, options, progress)
    return write_media(frames, job.out)


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
    p.add_argument("--invert-mask", action="store_true", help="the mask is black = keep, white = fill")
    p.add_argument("--out", help="output file: .mp4 for video tasks, .png for image tasks")
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
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--negative-prompt", help="CFG negative prompt (default: the release's for the task)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames of a video (4k+1)")
    p.add_argument("--height", type=int, help="default 352 for videos; an input image/video's own size else")
    p.add_argument("--width", type=int, help="default 640 for videos; an input image/video's own size else")
    p.add_argument("--upscale", type=int, default=4, help="super-resolution factor")
    p.add_argument("--given-frames", type=int, default=8, help="vext/flc2v: frames taken from each input video")
    p.add_argument("--motion-score", type=float, help="default 5 for videos, 0 for images")
    p.add_argument("--shift", type=float, help="scheduler shift (default: the checkpoint's scheduler/, else 1)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default bfloat16 on GPU")
    return p


def jobs_from_args(args: argparse.Namespace) -> list[Job]:
    """One job from the options, or one per line of --batch (the options then are every line's defaults)."""
    given = {k: v for k, v in vars(args).items() if k in JOB_KEYS}
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
    dtype = getattr(torch, args.dtype or ("bfloat16" if str(args.device).startswith("cuda") else "float32"))
    options = SamplingOptions(args.steps, args.guidance, args.motion_score, args.negative_prompt)
    models = None
    try:
        jobs = jobs_from_args(args)
        for job in jobs:
            start = time.perf_counter()
            cond = job_condition(job)  # inputs checked before the models load
            models = models or load_models(args.checkpoint, args.vae, args.text_encoder, args.depth_model,
                                           args.device, dtype, args.shift, args.variant, args.lora,
                                           args.lora_scale)
            out = run_job(models, job, options, cond)
            print(f"{job.task}: wrote {out} ({time.perf_counter() - start:.1f}s)")
    except (ValueError, FileNotFoundError) as e:
        print(f"mfm generate: {e}", file=sys.stderr)
        return 2
    return 0
