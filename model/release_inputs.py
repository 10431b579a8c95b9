"""The release's framing of a user's inputs and assembly of its outputs (leeruibin/MfM, `MfMPipeline.__call__`
and `infer_mfm_pipeline.py`), so that a released folder gives the release's samples.

What the release does, which differs from our training-time framing (`model.task_inputs`, cover-crop):
- Frames are PIL images. The target box (height, width) is swapped for portrait inputs; the input is scaled
  to fit inside the box, floored to multiples of 16 (PIL's default bicubic resize, masks too, so masks
  stay soft), then pasted centred on black (`keep_ratio`, the default; the padding is to be generated) or
  kept at the fitted size (`keep_res`).
- I2V, FLF2V, VEXT and FLC2V always make `RELEASE_FRAMES` (97) frames: the image(s) at frames 0 (and 96),
  or the input clip's last 8 frames at 0-7 (and the second clip's first 8 at 89-96). Their outputs are the
  input's frames before its last 8 (resized straight to the processed size), the 97 generated frames, and
  for FLC2V the second clip after its first 8. Depth maps are computed on the given frames only.
- Other video tasks read the clip's first min(num_frames, longest 4k+1) frames; colorization turns the
  condition grayscale; image super-resolution and colorization resize their output (nearest) to the input's
  size times `upscale` (super-resolution) or 1 (colorization). Image colorization first resizes its input to
  the box and then fits it with the original input's aspect.
- A mask is read per frame as 8-bit luma: 255 = keep, 0 = generate; no mask keeps every pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import rgb_to_grayscale

from model.geometry import SIZE_MULTIPLE, coded_length
from model.tasks import Task
from pipeline.contract.codecs import decode_video

RELEASE_FRAMES = 97  # the pipeline's `default_num_frames`: what I2V, FLF2V, VEXT and FLC2V always make
TRANSITION_FRAMES = 8  # VEXT / FLC2V: frames taken from each input clip
CROP_TYPES = ("keep_ratio", "keep_ratio_h", "keep_res")


@dataclass
class FramedInputs:
    """A task's condition as the release builds it, with what its output assembly needs."""

    pixels: torch.Tensor  # (3, T, H, W) in [-1, 1], times the mask (grayscale for colorization)
    mask: torch.Tensor  # (1, T, H, W) in [0, 1], soft; 1 = keep
    depth_frames: list[int]  # frames that get a depth map (generation tasks' given frames)
    depth_images: list[Image.Image]  # those frames as framed PIL images, what the depth model sees
    before: torch.Tensor | None = None  # (3, n, H, W) input frames put before the generated ones
    after: torch.Tensor | None = None  # (3, n, H, W) input frames put after them (FLC2V)
    output_size: tuple[int, int] | None = None  # (H, W) the output is resized to (SISR, image colorization)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.pixels.shape[-2:])

    @property
    def num_frames(self) -> int:
        return int(self.pixels.shape[1])


# --- reading files as the release does (PIL images) ---


def read_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: cannot read image: {e}") from e


def read_video(path: str | Path, max_frames: int | None = None) -> list[Image.Image]:
    try:
        frames = decode_video(str(path), max_frames=max_frames)  # (T, H, W, 3) uint8
    except Exception as e:  # PyAV raises its own error types; say which file
        raise ValueError(f"{path}: cannot read video: {e}") from e
    return [Image.fromarray(f) for f in frames]


def read_mask_video(path: str | Path, frames: int) -> list[Image.Image]:
    masks = [m.convert("L") for m in read_video(path, frames)]
    if len(masks) < frames:
        raise ValueError(f"{path}: the mask video has {len(masks)} frames; the clip has {frames}")
    return masks


# --- framing ---


def _to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images -> (C, T, H, W) in [-1, 1] (torchvision's ToTensor then Normalize(0.5, 0.5))."""
    arrays = [np.asarray(im, dtype=np.uint8) for im in images]
    x = torch.from_numpy(np.stack(arrays)).float().div(255.0)  # (T, H, W[, C])
    x = x[..., None] if x.ndim == 3 else x
    return ((x - 0.5) / 0.5).permute(3, 0, 1, 2)  # (C, T, H, W)


def fit_size(image_size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an image scaled to fit inside `box` (width, height), floored to multiples of 16."""
    (w, h), (box_w, box_h) = image_size, box
    scale = min(box_w / w, box_h / h)
    fitted = round(w * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE, round(h * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE
    if min(fitted) < SIZE_MULTIPLE:
        raise ValueError(f"an input of {w}x{h} fitted to {box_w}x{box_h} leaves no {SIZE_MULTIPLE}-pixel block")
    return fitted


def _frame(images: list[Image.Image], box: tuple[int, int], fitted: tuple[int, int], crop_type: str,
           mode: str) -> list[Image.Image]:
    """Resize to `fitted` (width, height); with keep_ratio paste centred on black in `box` (or crop to it)."""
    images = [im.resize(fitted) for im in images]
    if crop_type == "keep_res":
        return images
    (box_w, box_h), (w, h) = box, fitted
    if box_w >= w and box_h >= h:
        out = []
        for im in images:
            canvas = Image.new(mode, box)
            canvas.paste(im, ((box_w - w) // 2, (box_h - h) // 2, (box_w + w) // 2, (box_h + h) // 2))
            out.append(canvas)
        return out
    left, top = (w - box_w) // 2, (h - box_h) // 2
    return [im.crop((left, top, left + box_w, top + box_h)) for im in images]


def _floor_to_multiple(x: torch.Tensor, task: Task, mode: str) -> torch.Tensor:
    """(C, T, H, W) -> H and W floored to multiples of 16 (only a box that is not one needs it)."""
    h, w = x.shape[-2:]
    if not (h % SIZE_MULTIPLE or w % SIZE_MULTIPLE):
        return x
    size = (h // SIZE_MULTIPLE * SIZE_MULTIPLE, w // SIZE_MULTIPLE * SIZE_MULTIPLE)
    frames = x.transpose(0, 1)  # (T, C, H, W)
    if mode == "bicubic":
        return F.interpolate(frames, size, mode="bicubic", align_corners=False).transpose(0, 1)
    return F.interpolate(frames, size).transpose(0, 1)


def frame_inputs(
    task: Task,
    inputs: Sequence[str | Path],
    mask: str | Path | None,
    box: tuple[int, int],
    num_frames: int,
    crop_type: str = "keep_ratio",
    upscale: int = 4,
    given_frames: int = TRANSITION_FRAMES,
) -> FramedInputs:
    """A task's files -> its condition, as the release frames them. `box` is (height, width);
    `given_frames` the frames VEXT / FLC2V take from each clip (the release's 8)."""
    if crop_type not in CROP_TYPES:
        raise ValueError(f"crop type {crop_type!r}: choose one of {', '.join(CROP_TYPES)}")
    masks: list[Image.Image]
    given: list[int] = []
    before: list[Image.Image] = []
    after: list[Image.Image] = []
    if task.id in ("vext", "flc2v"):
        frames = read_video(inputs[0])  # VEXT / FLC2V: the whole clip
        n = given_frames
        if len(frames) < n:
            raise ValueError(f"{inputs[0]}: task {task.id} needs at least {n} frames; the clip has {len(frames)}")
        before, frames = frames[:-n], frames[-n:]
        black = Image.new("RGB", frames[0].size)
        frames += [black] * (RELEASE_FRAMES - n)
        masks = [Image.new("L", frames[0].size, 255 if i < n else 0) for i in range(RELEASE_FRAMES)]
        given = list(range(n))
        if task.id == "flc2v":
            second = read_video(inputs[1])
            if len(second) < n:
                raise ValueError(f"{inputs[1]}: task flc2v needs at least {n} frames; the clip has {len(second)}")
            frames[-n:], after = second[:n], second[n:]
            masks[-n:] = [Image.new("L", frames[0].size, 255)] * n
            given += list(range(RELEASE_FRAMES - n, RELEASE_FRAMES))
    elif task.id in ("i2v", "flf2v"):  # images at the first (and last) frame
        frames = [read_image(inputs[0])]
        black = Image.new("RGB", frames[0].size)
        frames += [black] * (RELEASE_FRAMES - 1)
        masks = [Image.new("L", frames[0].size, 255 if i == 0 else 0) for i in range(RELEASE_FRAMES)]
        given = [0]
        if len(inputs) == 2:
            frames[-1] = read_image(inputs[1])
            masks[-1] = Image.new("L", frames[0].size, 255)
            given.append(RELEASE_FRAMES - 1)
    elif task.is_video:
        probe = read_video(inputs[0])
        frames = probe[: min(num_frames, coded_length(len(probe)))]
        masks = (read_mask_video(mask, len(frames)) if mask is not None
                 else [Image.new("L", frames[0].size, 255)] * len(frames))
    else:  # image tasks
        frames = [read_image(inputs[0])]
        masks = [read_image(mask, "L") if mask is not None else Image.new("L", frames[0].size, 255)]

    width, height = frames[0].size
    box_h, box_w = box
    if crop_type != "keep_ratio_h" and width < height:
        box_h, box_w = box_w, box_h  # portrait input: portrait box
    output_size = None
    if task.id == "sisr":
        output_size = (height * upscale, width * upscale)
    elif task.id == "icolor":
        output_size = (height, width)
        frames = [im.resize((box_w, box_h)) for im in frames]
    fitted = fit_size((width, height), (box_w, box_h))
    frames = _frame(frames, (box_w, box_h), fitted, crop_type, "RGB")
    masks = _frame(masks, (box_w, box_h), fitted, crop_type, "L")

    pixels = _floor_to_multiple(_to_tensor(frames), task, "bicubic" if task.id == "vsr" else "nearest")
    keep = _floor_to_multiple(_to_tensor(masks) * 0.5 + 0.5, task, "nearest")  # (1, T, H, W) in [0, 1]
    if task.condition == "grayscale":
        gray = rgb_to_grayscale(pixels.transpose(0, 1) * 0.5 + 0.5, num_output_channels=3)  # (T, 3, H, W)
        pixels = (gray * 2.0 - 1.0).transpose(0, 1)
    size = (pixels.shape[-1], pixels.shape[-2])  # (width, height) for PIL
    return FramedInputs(
        pixels=pixels * keep,
        mask=keep,
        depth_frames=given if task.generation else [],
        depth_images=[frames[i] for i in given] if task.generation else [],
        before=_to_tensor([im.resize(size) for im in before]) if before else None,
        after=_to_tensor([im.resize(size) for im in after]) if after else None,
        output_size=output_size,
    )


def assemble_output(video: torch.Tensor, framed: FramedInputs | None) -> torch.Tensor:
    """Decoded frames (3, T, H, W) in [-1, 1] -> the release's output: resized for SISR / image colorization,
    with the input's frames before (and after) the generated ones for VEXT / FLC2V."""
    if framed is None:
        return video
    if framed.output_size is not None:
        video = F.interpolate(video.transpose(0, 1), framed.output_size).transpose(0, 1)  # nearest
    parts = [p for p in (framed.before, video, framed.after) if p is not None]
    return torch.cat(parts, dim=1) if len(parts) > 1 else video
