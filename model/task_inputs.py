"""Generation inputs: a user's files (an image, two images, a clip, two clips, a mask) -> a `Condition`.

What each task takes follows the release's inference script:
- t2v, t2i: no file, only the prompt (size and frame count from the arguments);
- i2v: one image, the first frame; flf2v: two images, the first and the last frame;
- vext: one video; its last `given_frames` frames (8 by default) start the new clip;
- flc2v: two videos; the last `given_frames` of the first start the new clip, the first
  `given_frames` of the second end it;
- vinp, voutp: one video and a mask (an image for every frame, or a video); iinp, ioutp: one image
  and a mask image. As in the release and the paper's Figure 3, white = given, black = to generate
  (`invert_mask=True` for the other convention); the mask is thresholded at one half;
- vcolor, icolor: a video / an image, turned to grayscale;
- vsr, sisr: a low-resolution video / image, brought up `upscale` times (4 by default) by bicubic;
- vedit, iedit: the source video / image; the prompt is the instruction.
Videos are cut to the longest 4k+1 frames not above `num_frames`. Frames are resized to cover the
target size and centre-cropped, as the trainer and the benchmark builder do (`pipeline.contract.frames`: area
averaging when shrinking, bicubic when growing); the size defaults to the input's, floored to multiples of 16.
Depth maps (`depth_fn`, e.g. `DepthEstimator.predict`) are computed on the given frames of generation
tasks only; without `depth_fn` they are zero.

A wrong number or kind of input raises ValueError naming the task and what it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from model.conditions import (
    Condition,
    FrameSpans,
    NoParams,
    Params,
    Scale,
    assemble_condition,
    grayscale,
)
from model.geometry import coded_length, floor_size, is_coded_length, size_problem
from model.tasks import MIN_VIDEO_FRAMES, Media, Task, get_task
from pipeline.contract.codecs import decode_video
from pipeline.contract.frames import cover_crop_tensor, frames_to_tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
DEFAULT_FRAMES = 97
DEFAULT_VIDEO_SIZE = (352, 640)  # release defaults when no file gives a size
DEFAULT_IMAGE_SIZE = (1024, 1024)
DEFAULT_UPSCALE = 4
DEFAULT_GIVEN_FRAMES = 8

DepthFn = Callable[[torch.Tensor], torch.Tensor]  # frames (N, 3, H, W) [-1, 1] -> raw depth (N, 1, H, W)


@dataclass(frozen=True)
class UserInputs:
    """What a task takes from the user."""

    media: tuple[Media, ...]  # the kind of each input file, in order
    needs: str  # in words, for errors and help
    mask: bool = False  # also takes a mask image or video


USER_INPUTS: dict[str, UserInputs] = {
    "t2v": UserInputs((), "no input file, only a prompt"),
    "i2v": UserInputs(("image",), "one image (the first frame)"),
    "vext": UserInputs(("video",), "one video to extend"),
    "flf2v": UserInputs(("image", "image"), "two images (the first and the last frame)"),
    "flc2v": UserInputs(("video", "video"), "two videos (the clip to start from and the clip to end on)"),
    "vinp": UserInputs(("video",), "one video and a mask (white = keep, black = fill)", mask=True),
    "voutp": UserInputs(("video",), "one video and a mask (white = keep, black = fill)", mask=True),
    "vcolor": UserInputs(("video",), "one video to colorize"),
    "vsr": UserInputs(("video",), "one low-resolution video"),
    "vedit": UserInputs(("video",), "one source video (the prompt is the instruction)"),
    "t2i": UserInputs((), "no input file, only a prompt"),
    "sisr": UserInputs(("image",), "one low-resolution image"),
    "iinp": UserInputs(("image",), "one image and a mask image (white = keep, black = fill)", mask=True),
    "ioutp": UserInputs(("image",), "one image and a mask image (white = keep, black = fill)", mask=True),
    "icolor": UserInputs(("image",), "one image to colorize"),
    "iedit": UserInputs(("image",), "one source image (the prompt is the instruction)"),
}


# --- reading files ---


def media_kind(path: str | Path) -> Media:
    """"image" or "video" from the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    known = " ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    raise ValueError(f"{path}: unknown media type {suffix!r}; known suffixes: {known}")


def read_image(path: str | Path) -> torch.Tensor:
    """An image file -> (3, 1, H, W) in [-1, 1]."""
    try:
        with Image.open(path) as im:
            rgb = np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: cannot read image: {e}") from e
    return frames_to_tensor(rgb[None])


def read_video(path: str | Path, max_frames: int | None = None) -> torch.Tensor:
    """A video file -> (3, T, H, W) in [-1, 1], its first `max_frames` frames (all if None)."""
    try:
        frames = decode_video(str(path), max_frames=max_frames)  # (T, H, W, 3)
    except (av.FFmpegError, OSError) as e:
        raise ValueError(f"{path}: cannot read video: {e}") from e
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return frames_to_tensor(frames)


def read_media_file(path: str | Path, max_frames: int | None = None) -> torch.Tensor:
    """An image (3, 1, H, W) or a video (3, T, H, W), by suffix."""
    return read_image(path) if media_kind(path) == "image" else read_video(path, max_frames)


# --- sizes and masks ---


def _binary_mask(mask: torch.Tensor, size: tuple[int, int], frames: int, invert: bool) -> torch.Tensor:
    """A user mask (C, Tm, h, w) in [-1, 1], one frame for all or a video -> (1, frames, H, W) of 0/1,
    white = 1 (given)."""
    gray = mask.mean(0, keepdim=True)  # (1, Tm, h, w)
    if gray.shape[1] == 1:
        gray = gray.expand(1, frames, *gray.shape[-2:])
    elif gray.shape[1] < frames:
        raise ValueError(f"the mask video has {gray.shape[1]} frames; the clip has {frames}")
    binary = (cover_crop_tensor(gray[:, :frames], size) > 0.0).float()
    return 1.0 - binary if invert else binary


# --- building the condition ---


def _describe(media: Sequence[torch.Tensor]) -> str:
    if not media:
        return "no input"
    parts = [
        f"{'an image' if m.shape[1] == 1 else f'a {m.shape[1]}-frame video'} {m.shape[-2]}x{m.shape[-1]}"
        if m.ndim == 4
        else f"a tensor of shape {tuple(m.shape)}"
        for m in media
    ]
    return f"{len(media)} input(s): " + ", ".join(parts)


def _tensor_kind(media: torch.Tensor) -> Media | None:
    """"image" for (3, 1, H, W), "video" for (3, T, H, W), None for any other shape."""
    if media.ndim != 4 or media.shape[0] != 3:
        return None
    return "image" if media.shape[1] == 1 else "video"


def _check_inputs(task: Task, kinds: tuple[Media | None, ...], got: str, has_mask: bool) -> None:
    """The inputs' kinds and the mask against what `task` takes (`USER_INPUTS`); `got` describes the inputs."""
    spec = USER_INPUTS[task.id]
    if kinds != spec.media:
        raise ValueError(f"task {task.id} ({task.prompt_name}) needs {spec.needs}; got {got}")
    if spec.mask != has_mask:
        need = "needs a mask" if spec.mask else "takes no mask"
        raise ValueError(f"task {task.id} ({task.prompt_name}) {need}: {spec.needs}")


def _target_size(
    task: Task, media: Sequence[torch.Tensor], size: tuple[int, int] | None, upscale: int
) -> tuple[int, int]:
    if size is not None:
        if problem := size_problem(*size):
            raise ValueError(f"task {task.id}: {problem}")
        return size
    if not media:
        return DEFAULT_VIDEO_SIZE if task.is_video else DEFAULT_IMAGE_SIZE
    h, w = media[0].shape[-2:]
    if task.condition == "downsample":
        h, w = h * upscale, w * upscale
    return floor_size(h, w)


def _given_frames(
    task: Task, media: Sequence[torch.Tensor], num_frames: int, given_frames: int
) -> tuple[torch.Tensor, torch.Tensor, Params]:
    """I2V, VEXT, FLF2V, FLC2V: a num_frames clip with the given frames at its start (and end)."""
    if given_frames < 1:
        raise ValueError(f"task {task.id}: given_frames must be >= 1; got {given_frames}")
    start = media[0][:, -given_frames:]  # an image, or the last frames of the first video
    end = media[1][:, :given_frames] if len(media) == 2 else media[0][:, :0]
    first, last = start.shape[1], end.shape[1]
    if first + last >= num_frames:
        raise ValueError(f"task {task.id}: {first}+{last} given frames leave none of {num_frames} to make")
    c, _, h, w = start.shape
    pixels = torch.zeros(c, num_frames, h, w)
    mask = torch.zeros(1, num_frames, h, w)
    pixels[:, :first], mask[:, :first] = start, 1.0
    pixels[:, num_frames - last :], mask[:, num_frames - last :] = end, 1.0
    return pixels, mask, FrameSpans(first, last)


def _whole_clip(
    task: Task, clip: torch.Tensor, mask: torch.Tensor | None, num_frames: int, invert_mask: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Manipulation tasks: every frame given, outside the user's mask if there is one."""
    if task.is_video:
        length = coded_length(min(clip.shape[1], num_frames))
        if length < MIN_VIDEO_FRAMES:
            need = f"a video of at least {MIN_VIDEO_FRAMES} frames"
            raise ValueError(f"task {task.id} needs {need}; got {clip.shape[1]} frames")
        clip = clip[:, :length]
    if mask is None:
        return clip, torch.ones_like(clip[:1])
    given = _binary_mask(mask, tuple(clip.shape[-2:]), clip.shape[1], invert_mask)
    if given.all() or not given.any():
        raise ValueError(f"task {task.id}: the mask must mark pixels to keep (white) and to fill (black)")
    return clip, given


def depth_on_given_frames(pixels: torch.Tensor, given: torch.Tensor, depth_fn: DepthFn) -> torch.Tensor:
    """(1, T, H, W) depth of the frames with a given pixel, zero elsewhere."""
    frames_given = given.flatten(2).amax(-1)[0] > 0  # (T,) bool
    depth = torch.zeros_like(given)
    if frames_given.any():
        with torch.no_grad():
            depth[:, frames_given] = depth_fn(pixels[:, frames_given].transpose(0, 1)).transpose(0, 1)
    return depth


def condition_from_media(
    task: Task | str,
    media: Sequence[torch.Tensor],
    prompt: str,
    mask: torch.Tensor | None = None,
    *,
    num_frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] | None = None,
    upscale: int = DEFAULT_UPSCALE,
    given_frames: int = DEFAULT_GIVEN_FRAMES,
    extra: str | None = None,
    depth_fn: DepthFn | None = None,
    invert_mask: bool = False,
) -> Condition:
    """`task`'s generation condition from in-memory inputs: each (3, T, H, W) in [-1, 1], an image T = 1;
    `mask` (C, T, H, W) in [-1, 1], white = given. `extra` defaults to the task's generation extra."""
    task = get_task(task) if isinstance(task, str) else task
    _check_inputs(task, tuple(_tensor_kind(m) for m in media), _describe(media), mask is not None)
    size = _target_size(task, media, size, upscale)
    frames = [cover_crop_tensor(m, size) for m in media]  # each (3, T_i, H, W)
    params: Params = NoParams()
    makes_frames = task.is_video and task.condition in ("none", "frames")  # num_frames is the clip's length
    if makes_frames and (not is_coded_length(num_frames) or num_frames < MIN_VIDEO_FRAMES):
        raise ValueError(f"task {task.id}: num_frames must be 4k+1 >= {MIN_VIDEO_FRAMES}; got {num_frames}")
    if task.condition == "none":
        pixels = torch.zeros(3, num_frames if task.is_video else 1, *size)
        given = torch.zeros_like(pixels[:1])
    elif task.condition == "frames":
        pixels, given, params = _given_frames(task, frames, num_frames, given_frames)
    else:
        pixels, given = _whole_clip(task, frames[0], mask, num_frames, invert_mask)
        if task.condition == "grayscale":
            pixels = grayscale(pixels)
        elif task.condition == "downsample":
            low = tuple(media[0].shape[-2:])
            params = Scale(size[0] / low[0], low)
    depth = depth_on_given_frames(pixels, given, depth_fn) if task.generation and depth_fn else None
    extra = task.generate_extra if extra is None else extra
    return assemble_condition(task, pixels, given, depth, prompt, extra, params)


def check_files(task: Task | str, inputs: Sequence[str | Path], mask: str | Path | None = None) -> Task:
    """The task, after checking the kinds (by suffix) and number of its input files and the mask."""
    task = get_task(task) if isinstance(task, str) else task
    kinds = tuple(media_kind(p) for p in inputs)
    got = ", ".join(f"{Path(p).name} ({k})" for p, k in zip(inputs, kinds)) or "no input"
    _check_inputs(task, kinds, f"{len(inputs)}: {got}", mask is not None)
    missing = [str(p) for p in [*inputs, mask] if p is not None and not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"task {task.id}: no such input file: {', '.join(missing)}")
    return task


def condition_from_files(
    task: Task | str,
    inputs: Sequence[str | Path],
    prompt: str,
    mask: str | Path | None = None,
    **kwargs,
) -> Condition:
    """`task`'s generation condition from files (images by suffix .png/.jpg/..., videos .mp4/.mov/...);
    keyword arguments as `condition_from_media`."""
    task = check_files(task, inputs, mask)
    media = [read_media_file(p) for p in inputs]
    mask_media = None if mask is None else read_media_file(mask)
    return condition_from_media(task, media, prompt, mask_media, **kwargs)
