"""`MfMPipeline`: load a checkpoint once (ours, or a released MfM pipeline folder), then call it per task.

    pipe = MfMPipeline.from_pretrained("MfM-2B")                       # transformer/ vae/ text_encoder/ ...
    out = pipe("i2v", "a boat drifts on a lake", inputs=["boat.png"])
    out.frames                                                          # (T, H, W, 3) float32 in [0, 1]

A released folder (its transformer is the release's `Transformer3DModel`) is run as the release runs it:
its inputs framed by `model.release_inputs` (fit inside the box and pad), its VAE latents scaled by the
release's hard-coded 0.958917567 whatever `vae/config.json` says, its outputs assembled as the release
assembles them, and the release CLI's defaults (`RELEASE_DEFAULTS`). Our own checkpoints record the VAE
scale they were trained with (`MfMConfig.vae_scaling_factor`) and default to the paper's settings
(`PAPER_DEFAULTS`) with the trainer's framing (cover-crop, `model.task_inputs`). Every default can be
overridden per call. `mfm generate`, `mfm release infer` and `mfm benchmark run` are layers over this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from diffusers import FlowMatchEulerDiscreteScheduler

from model.conditions import Condition
from model.depth import DepthEstimator
from model.generation_groups import GenerationGroups
from model.geometry import latent_shape
from model.lora import adapter_folder, load_lora
from model.mfm import MfM
from model.parallelize import apply_compile, apply_ulysses
from model.release import is_release_folder, load_transformer
from model.release_inputs import CROP_TYPES, FramedInputs, assemble_output, frame_inputs
from model.sampling import CfgSplit, Conditioning, make_scheduler, sample
from model.step_cache import FirstBlockCache, apply_step_cache
from model.task_inputs import DEFAULT_FRAMES, DEFAULT_VIDEO_SIZE, condition_from_files, depth_on_given_frames
from model.tasks import Task, get_task, make_prompt
from model.text_encoder import MAX_LENGTH, TextEncoder
from model.vae import MFM_SCALING_FACTOR, VideoVAE

VIDEO_MOTION_SCORE = 5.0
IMAGE_MOTION_SCORE = 0.0
FRAMINGS = ("release", "cover")

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


@dataclass(frozen=True)
class GenerationDefaults:
    """What a call uses when it does not say."""

    steps: int
    guidance: float
    colorization_guidance: float  # colorization tasks' CFG scale
    fps: float  # of a written video
    framing: str  # "release" (fit and pad) or "cover" (cover-crop)
    image_boxes: dict[str, tuple[int, int]]  # (height, width) per image task without an input size of its own


PAPER_DEFAULTS = GenerationDefaults(steps=50, guidance=9.0, colorization_guidance=9.0, fps=16.0,
                                    framing="cover", image_boxes={"t2i": (1024, 1024)})
RELEASE_DEFAULTS = GenerationDefaults(steps=25, guidance=6.0, colorization_guidance=7.0, fps=24.0,
                                      framing="release",
                                      image_boxes={"t2i": (1024, 1024), "icolor": (1024, 1024), "sisr": (1280, 1280)})


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample; None takes the pipeline's default (`GenerationDefaults`, motion 5 for videos, 0 for
    images, the release's negative prompt for the task)."""

    steps: int | None = None
    guidance: float | None = None
    motion_score: float | None = None
    negative_prompt: str | None = None


@dataclass
class PipelineOutput:
    """One sample."""

    video: torch.Tensor  # (3, T, H, W) float32, as decoded and assembled: [-1, 1] up to the VAE's overshoot
    latents: torch.Tensor  # (1, C, t, h, w) the final latents
    fps: float  # what a video of it is written at

    @property
    def frames(self) -> torch.Tensor:
        """(T, H, W, 3) float32 in [0, 1], before any uint8 conversion."""
        return unit_frames(self.video)


def _part_folder(checkpoint: Path, name: str) -> Path | None:
    """`name/` beside the transformer: in the checkpoint folder itself or in its parent (pipeline root)."""
    for root in (checkpoint, checkpoint.parent):
        if (root / name).is_dir():
            return root
    return None


class MfMPipeline:
    """The transformer, the frozen parts and the scheduler, with how to prepare inputs and sample."""

    def __init__(
        self,
        transformer: MfM,
        vae: VideoVAE,
        text_encoder: TextEncoder,
        depth: DepthEstimator | None,
        scheduler: FlowMatchEulerDiscreteScheduler,
        released: bool = False,
        checkpoint: str = "",
        variant: str | None = None,
        lora: str | None = None,
        lora_scale: float = 1.0,
    ) -> None:
        self.transformer, self.vae, self.text_encoder, self.depth = transformer, vae, text_encoder, depth
        self.scheduler = scheduler
        self.released = released
        self.checkpoint, self.variant, self.lora, self.lora_scale = checkpoint, variant, lora, lora_scale
        self.groups: GenerationGroups | None = None  # set by `parallelize`
        self.step_cache: FirstBlockCache | None = None  # set by `enable_step_cache`

    @classmethod
    def from_pretrained(
        cls,
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
    ) -> MfMPipeline:
        """Load the transformer from `checkpoint` (our folder, a trainer step folder, a released pipeline root
        or its transformer/; `variant` "ema" for EMA weights), with the LoRA adapter at `lora` (scaled by
        `lora_scale`) when given, and the VAE, T5 and depth model from the given paths or from the
        checkpoint's root. The scheduler is the root's `scheduler/` (its shift) unless `shift` is given."""
        ckpt = Path(checkpoint)
        if not ckpt.exists():
            raise FileNotFoundError(f"checkpoint {ckpt}: no such folder")
        if (ckpt / "model" / "config.json").is_file():  # a trainer step folder: its weights are in model/
            ckpt = ckpt / "model"
        released = is_release_folder(ckpt)
        model = load_transformer(ckpt, variant=variant, dtype=dtype, device=device).eval()
        if lora is not None:
            lora = adapter_folder(lora)
            load_lora(model, lora, lora_scale)
        paths = {"vae": vae, "text_encoder": text_encoder, "depth": depth_model}
        for name, flag in (("vae", "vae"), ("text_encoder", "text encoder")):
            if paths[name] is None:
                paths[name] = _part_folder(ckpt, name)
            if paths[name] is None:
                raise FileNotFoundError(f"no {name}/ beside {ckpt} and no {flag} path given: say where it is")
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
        # the release hard-codes its latent scale; our checkpoints record theirs
        scale = MFM_SCALING_FACTOR if released else model.config.vae_scaling_factor
        vae_model = VideoVAE.from_pretrained(paths["vae"], tiling=True, scaling_factor=scale).to(device)
        return cls(model, vae_model, encoder, depth, scheduler, released, str(ckpt), variant,
                   None if lora is None else str(lora), lora_scale)

    def parallelize(self, groups: GenerationGroups | None, compile: bool = False) -> None:
        """Sample over `groups`' ranks: Ulysses over its SP group (the trainer's wrapping), the CFG branches on
        two ranks when `groups.cfg` is 2; `compile`: torch.compile each block."""
        if groups is not None and groups.sp > 1:
            heads = self.transformer.config.num_heads
            if heads % groups.sp:
                raise ValueError(f"sequence-parallel size {groups.sp} must divide the {heads} attention heads")
            apply_ulysses(self.transformer, groups.sp_group)
        if compile:
            apply_compile(self.transformer)
        self.groups = groups

    def enable_step_cache(self, threshold: float) -> FirstBlockCache:
        """Reuse the blocks' work between steps while the first block's residual changes less than
        `threshold` (`model.step_cache`); its counters say how many steps were computed."""
        group = self.groups.sample_group if self.groups else None
        self.step_cache = apply_step_cache(self.transformer, threshold, group)
        return self.step_cache

    @property
    def is_leader(self) -> bool:
        """True on the rank that prepares inputs and writes outputs (always, on one process)."""
        return self.groups is None or self.groups.is_leader

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def defaults(self) -> GenerationDefaults:
        return RELEASE_DEFAULTS if self.released else PAPER_DEFAULTS

    # --- inputs ---

    def prepare(
        self,
        task: Task | str,
        prompt: str,
        inputs: Sequence[str | Path] = (),
        mask: str | Path | None = None,
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        upscale: int = 4,
        given_frames: int = 8,
        invert_mask: bool = False,
        crop_type: str = "keep_ratio",
        framing: str | None = None,
        extra: str | None = None,
    ) -> tuple[Condition, FramedInputs | None]:
        """A task's files -> its condition (with depth maps of the given frames) and, with release framing,
        what the output assembly needs. `extra`: the words between the prompt and its "#task:" tag (default
        the task's, "#FPS: 16." for most). Every input is checked before any model runs."""
        task = get_task(task) if isinstance(task, str) else task
        extra = task.generate_extra if extra is None else extra
        framing = framing or self.defaults.framing
        if framing not in FRAMINGS:
            raise ValueError(f"framing {framing!r}: choose one of {', '.join(FRAMINGS)}")
        if bool(height) != bool(width):
            raise ValueError("give both height and width, or neither")
        num_frames = num_frames or DEFAULT_FRAMES
        if framing == "cover":
            video_box = task.is_video and task.condition != "downsample"  # else the input's size (x upscale)
            size = (height, width) if height else DEFAULT_VIDEO_SIZE if video_box else None
            cond = condition_from_files(task, inputs, prompt, mask, num_frames=num_frames, size=size,
                                        upscale=upscale, given_frames=given_frames, invert_mask=invert_mask,
                                        extra=extra)
            return self.with_depth(cond), None
        if crop_type not in CROP_TYPES:
            raise ValueError(f"crop type {crop_type!r}: choose one of {', '.join(CROP_TYPES)}")
        box = (height, width) if height else self.defaults.image_boxes.get(task.id, DEFAULT_VIDEO_SIZE)
        text = make_prompt(prompt, task, extra)
        if task.condition == "none":
            frames = num_frames if task.is_video else 1
            zeros = torch.zeros(1, frames, *box)
            return Condition(task.id, torch.zeros(3, frames, *box), zeros, zeros.clone(), text), None
        if invert_mask:
            raise ValueError("release framing reads masks as the release does (white = keep); use framing cover "
                             "for an inverted mask")
        framed = frame_inputs(task, inputs, mask, box, num_frames, crop_type, upscale, given_frames)
        depth = torch.zeros_like(framed.mask)
        if framed.depth_frames:
            if self.depth is None:
                raise ValueError(f"task {task.id} needs depth maps of its given frames: give a depth model")
            depth[0, framed.depth_frames] = self.depth.predict_images(framed.depth_images)[:, 0].cpu()
        return Condition(task.id, framed.pixels, depth, framed.mask, text), framed

    def with_depth(self, cond: Condition) -> Condition:
        """`cond` with depth maps of its given frames when its task is a generation task."""
        if not get_task(cond.task).generation or not cond.mask.any():
            return cond
        if self.depth is None:
            if not self.transformer.config.use_depth:
                return cond
            raise ValueError(f"task {cond.task} needs depth maps of its given frames: give a depth model")

        def predict(frames: torch.Tensor) -> torch.Tensor:
            return self.depth.predict(frames.to(self.device)).cpu()

        return replace(cond, depth=depth_on_given_frames(cond.pixels, cond.mask, predict) * cond.mask)

    # --- sampling ---

    @torch.no_grad()
    def sample_latents(
        self, cond: Condition, seed: int, options: SamplingOptions | None = None, progress: bool = False
    ) -> torch.Tensor:
        """Denoise one sample for `cond` -> final latents (1, C, t, h, w). The noise is drawn on the CPU from
        `seed` (the same sample on any device); the negative CFG branch is the release's: the negative prompt,
        the same pixels and mask, depth zeroed."""
        options = options or SamplingOptions()
        if self.groups is not None:
            cond = self._share_condition(cond)
        task = get_task(cond.task)
        device, dtype = self.device, next(self.transformer.parameters()).dtype
        _, t, h, w = cond.pixels.shape
        defaults = self.defaults
        guidance = options.guidance
        if guidance is None:
            guidance = defaults.colorization_guidance if task.condition == "grayscale" else defaults.guidance
        negative_prompt = negative_prompt_for(task) if options.negative_prompt is None else options.negative_prompt
        text, keep = self._encode_text([cond.prompt, negative_prompt])  # (2, 77, D), (2, 77)
        motion = options.motion_score
        if motion is None:
            motion = VIDEO_MOTION_SCORE if task.is_video else IMAGE_MOTION_SCORE
        inputs = {k: v.to(device, dtype) for k, v in cond.to_model_inputs().items()}  # (1, C, T, H, W) each
        positive = Conditioning(
            text=text[:1].to(dtype), text_mask=keep[:1], motion_score=torch.tensor([motion], device=device), **inputs
        )
        negative = positive.negative(text[1:].to(dtype), keep[1:]) if guidance != 1.0 else None
        shape = (1, *latent_shape(t, h, w, self.vae.latent_channels))  # (1, C, t, h/8, w/8)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype)
        steps = options.steps or defaults.steps
        cfg_split = None
        if self.groups is not None and self.groups.cfg == 2 and negative is not None:
            cfg_split = CfgSplit(self.groups.cfg_branch, self.groups.cfg_group)
        if self.step_cache is not None:
            self.step_cache.reset()
        return sample(self.transformer, noise, positive, negative, guidance, steps, self.scheduler,
                      progress and self.is_leader, cfg_split)

    def sample(self, cond: Condition | None, seed: int, options: SamplingOptions | None = None) -> torch.Tensor | None:
        """One sample for `cond` (depth as given) -> decoded frames (3, T, H, W) in [-1, 1], float32, CPU. Over
        several ranks every rank of the sample group calls it, the leader with `cond` (the others may pass
        None), and only the leader decodes and gets the frames (None elsewhere)."""
        latents = self.sample_latents(cond, seed, options)
        return self.vae.decode(latents.float())[0].cpu() if self.is_leader else None

    # --- over several ranks: the leader's inputs and text states, shared with its sample group ---

    def _share_condition(self, cond: Condition | None) -> Condition:
        groups = self.groups
        if groups.sample_group is None:
            return cond
        meta = [None if cond is None else (cond.task, cond.prompt, tuple(cond.pixels.shape))]
        dist.broadcast_object_list(meta, src=groups.leader, group=groups.sample_group)
        task, prompt, (c, t, h, w) = meta[0]
        if not groups.is_leader:
            cond = Condition(task, torch.empty(c, t, h, w), torch.empty(1, t, h, w), torch.empty(1, t, h, w), prompt)
        return replace(cond, **{name: self._broadcast(getattr(cond, name)) for name in ("pixels", "depth", "mask")})

    def _encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 once per sample group (on its leader), the states broadcast to the others."""
        if self.groups is None or self.groups.sample_group is None:
            return self.text_encoder.encode(prompts)
        if self.groups.is_leader:
            text, keep = self.text_encoder.encode(prompts)
        else:
            text = torch.empty(len(prompts), MAX_LENGTH, self.text_encoder.dim, device=self.device)
            keep = torch.empty(len(prompts), MAX_LENGTH, dtype=torch.bool, device=self.device)
        return self._broadcast(text), self._broadcast(keep.to(torch.uint8)).bool()

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` from the sample group's leader (through this rank's device, for NCCL)."""
        on_device = tensor.to(self.device).contiguous()
        dist.broadcast(on_device, src=self.groups.leader, group=self.groups.sample_group)
        return on_device.to(tensor.device)

    def __call__(
        self,
        task: Task | str,
        prompt: str = "",
        inputs: Sequence[str | Path] = (),
        mask: str | Path | None = None,
        *,
        seed: int = 0,
        options: SamplingOptions | None = None,
        **prepare_kwargs,
    ) -> PipelineOutput | None:
        """Prepare `task`'s inputs (see `prepare` for the keyword arguments), sample, assemble the output. Over
        several ranks (`parallelize`) every rank of a sample group calls it with the same arguments; the leader
        reads the inputs and gets the output, the others None."""
        cond, framed = self.prepare(task, prompt, inputs, mask, **prepare_kwargs) if self.is_leader else (None, None)
        latents = self.sample_latents(cond, seed, options)
        if not self.is_leader:
            return None
        video = assemble_output(self.vae.decode(latents.float(), clamp=False)[0].cpu(), framed)  # (3, T, H, W)
        return PipelineOutput(video, latents.float().cpu(), self.defaults.fps)


def unit_frames(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) in [0, 1], what is written (the release's conversion)."""
    return (video / 2 + 0.5).clamp(0.0, 1.0).permute(1, 2, 3, 0).contiguous()
