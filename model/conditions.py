"""Condition builders: a clip and a task -> the model's pixel-space condition and prompt (paper §3.1, Fig. 3).

One builder for all 16 tasks. A task names a condition kind; a kind draws its parameters (which
frames, which hole, which scale) from a `torch.Generator` and applies them to a clip, giving the
pixels before masking and the mask. `assemble_condition` then applies the rules every task shares:

- pixels = RGB * mask, mask 1 = given pixel, 0 = to generate;
- depth: the clip's raw depth maps on the given pixels of generation tasks (T2V, I2V, VEXT, FLF2V,
  FLC2V, T2I; only I2V, VEXT, FLF2V and FLC2V give pixels), zero for manipulation tasks
  (inpainting, outpainting, colorization, super-resolution, editing). This is the release's rule:
  depth "non-zero only on the given frames of i2v/vexd/vtrans/itrans, zero for editing tasks";
  those tasks give whole frames, so depth * mask is the same thing;
- prompt = caption (the instruction for editing) + " " + extra + " #task: " + name.

Training draws the kinds' ranges (paper §4.1); the benchmark (`benchmark_condition`) is a pure
function of (task, clip, seed) and gives the fixed spans of Appendix A (VEXT the first 8 frames,
FLC2V the first and last 8) with seeded masks and scales. Generation from user files is in
`model.task_inputs`, which ends in the same `assemble_condition`.

Choices where the paper is silent: the inpainting hole is one rectangle, the same on every frame,
at least one pixel from every border; the outpainting band takes 1/8-1/4 of the width, of the
height, or of both (each total split at random between the two sides), the same on every frame;
super-resolution scales by a factor drawn uniformly in [2, 6] (bicubic with anti-aliasing down,
bicubic up, clamped to [-1, 1]); grayscale is torchvision's luma (the release's `rgb_to_grayscale`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import rgb_to_grayscale

from model.geometry import is_coded_length, size_problem
from model.tasks import DEFAULT_EXTRA, Task, get_task, make_prompt

SR_FACTORS = (2.0, 6.0)  # super-resolution down-sampling factor range
HOLE_AREA = (1 / 9, 1 / 4)  # inpainting hole, fraction of the frame's pixels
BAND_FRACTION = (1 / 8, 1 / 4)  # outpainting band, fraction of the width or height


@dataclass(frozen=True)
class Clip:
    """What conditions are built from: frames, their depth maps and text.

    For an edit pair, `frames` is the target (what the model learns to generate), `source` the clip
    the instruction turns into it.
    """

    frames: torch.Tensor  # (3, T, H, W) RGB in [-1, 1]; an image is T == 1
    depth: torch.Tensor | None = None  # (1, T, H, W) raw Depth-Anything-V2 depth; None: zeros
    caption: str = ""
    source: torch.Tensor | None = None  # (3, T, H, W) edit source, same shape as frames
    instruction: str = ""  # edit instruction, the prompt text of editing tasks
    quality_tags: tuple[str, ...] = ()  # the row's `quality_tags` (tables.QUALITY_TAGS): rule tasks out

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[0] != 3:
            raise ValueError(f"clip frames must be (3, T, H, W) RGB; got shape {tuple(f.shape)}")
        if self.depth is not None and self.depth.shape != (1, *f.shape[1:]):
            want, got = (1, *f.shape[1:]), tuple(self.depth.shape)
            raise ValueError(f"clip depth must be (1, T, H, W) = {want}; got {got}")
        if self.source is not None and self.source.shape != f.shape:
            want, got = tuple(f.shape), tuple(self.source.shape)
            raise ValueError(f"edit source must have the frames' shape {want}; got {got}")

    @property
    def num_frames(self) -> int:
        return self.frames.shape[1]

    def first_frame(self) -> Clip:
        """The clip's first frame as an image (what the benchmark's image tasks use)."""
        first = slice(0, 1)
        return Clip(
            self.frames[:, first],
            None if self.depth is None else self.depth[:, first],
            self.caption,
            None if self.source is None else self.source[:, first],
            self.instruction,
            self.quality_tags,
        )


# --- parameters the kinds draw: recorded in the condition (the benchmark table stores them) ---


@dataclass(frozen=True)
class NoParams:
    """Kinds with nothing to draw (none, grayscale, edit source)."""


@dataclass(frozen=True)
class FrameSpans:
    """Given frames: the first `first` and the last `last` frames."""

    first: int
    last: int


@dataclass(frozen=True)
class Box:
    """The inpainting hole (to generate), in pixels."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class Bands:
    """The outpainting border (to generate): band widths in pixels on each side."""

    top: int
    bottom: int
    left: int
    right: int


@dataclass(frozen=True)
class Scale:
    """Super-resolution: down-sample to `size` (factor `factor`), then back up."""

    factor: float
    size: tuple[int, int]  # (h, w) of the down-sampled frames


Params = NoParams | FrameSpans | Box | Bands | Scale


@dataclass(frozen=True)
class Condition:
    """One sample's condition: the model's pixel-space input and prompt."""

    task: str  # task id
    pixels: torch.Tensor  # (3, T, H, W) RGB * mask
    depth: torch.Tensor  # (1, T, H, W) raw depth on given pixels of generation tasks, else 0
    mask: torch.Tensor  # (1, T, H, W) 1 = given, 0 = to generate
    prompt: str
    params: Params = NoParams()
    text_dropped: bool = False  # training: prompt replaced by the null prompt
    condition_dropped: bool = False  # training: pixels, depth and mask zeroed

    def to_model_inputs(self) -> dict[str, torch.Tensor]:
        """`cond_pixels` (1, 3, T, H, W), `cond_depth` and `cond_mask` (1, 1, T, H, W) for the model."""
        return stack_conditions([self])


def stack_conditions(conditions: Sequence[Condition]) -> dict[str, torch.Tensor]:
    """Batch conditions of one shape: `cond_pixels` (B, 3, T, H, W), `cond_depth` and `cond_mask`
    (B, 1, T, H, W), the model's keyword names."""
    shapes = {tuple(c.pixels.shape) for c in conditions}
    if len(shapes) != 1:
        raise ValueError(f"conditions to stack must share one (3, T, H, W) shape; got {sorted(shapes)}")
    return {
        "cond_pixels": torch.stack([c.pixels for c in conditions]),
        "cond_depth": torch.stack([c.depth for c in conditions]),
        "cond_mask": torch.stack([c.mask for c in conditions]),
    }


# --- random draws (all from one torch.Generator, so a seed fixes every draw) ---


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high], both included."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


# --- pixel operations ---


def grayscale(frames: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) [-1, 1] -> the same with R = G = B = luma (torchvision's weights, as the release)."""
    gray = rgb_to_grayscale(frames.transpose(0, 1) * 0.5 + 0.5, num_output_channels=3)  # (T, 3, H, W)
    return (gray * 2.0 - 1.0).transpose(0, 1)


def down_up_sample(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, T, H, W) -> down to `size` (bicubic, anti-aliased), back up to (H, W) (bicubic), clamped."""
    x = frames.transpose(0, 1)  # (T, 3, H, W)
    low = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    up = F.interpolate(low, size=x.shape[-2:], mode="bicubic", align_corners=False)
    return up.clamp(-1.0, 1.0).transpose(0, 1)


# --- the condition kinds ---

Shape = tuple[int, int, int]  # (T, H, W)


@dataclass(frozen=True)
class ConditionKind:
    """How one family of tasks draws its parameters and applies them to a clip."""

    draw: Callable[[Task, Shape, torch.Generator, bool], Params]  # (task, shape, gen, benchmark)
    apply: Callable[[Clip, Params], tuple[torch.Tensor, torch.Tensor]]  # -> pixels (3,T,H,W), mask (1,T,H,W)


def _ones_mask(clip: Clip) -> torch.Tensor:
    return torch.ones_like(clip.frames[:1])  # (1, T, H, W)


def _draw_nothing(task: Task, shape: Shape, gen: torch.Generator, benchmark: bool) -> Params:
    return NoParams()


def _nothing_given(clip: Clip, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros_like(clip.frames), torch.zeros_like(clip.frames[:1])


def _draw_spans(task: Task, shape: Shape, gen: torch.Generator, benchmark: bool) -> Params:
    if benchmark:  # Appendix A: I2V first frame, VEXT first 8, FLF2V first+last, FLC2V first 8 + last 8
        return FrameSpans(task.first_frames[0], task.last_frames[0])
    return FrameSpans(_randint(gen, *task.first_frames), _randint(gen, *task.last_frames))


def _given_frames(clip: Clip, params: FrameSpans) -> tuple[torch.Tensor, torch.Tensor]:
    t = clip.num_frames
    if params.first + params.last >= t:
        raise ValueError(f"{params} leaves no frame to generate in a {t}-frame clip")
    mask = torch.zeros_like(clip.frames[:1])
    mask[:, : params.first] = 1.0
    mask[:, t - params.last :] = 1.0
    return clip.frames, mask


def _draw_box(task: Task, shape: Shape, gen: torch.Generator, benchmark: bool) -> Params:
    # Hole area in [HW/9, HW/4] pixels, at least one pixel from each border: draw the height among
    # those that leave some width in range, then the width, then the position.
    _, h, w = shape
    area_min, area_max = math.ceil(h * w * HOLE_AREA[0]), math.floor(h * w * HOLE_AREA[1])
    hole_h = _randint(gen, max(1, math.ceil(area_min / (w - 2))), min(h - 2, area_max))
    hole_w = _randint(gen, max(1, math.ceil(area_min / hole_h)), min(w - 2, area_max // hole_h))
    return Box(_randint(gen, 1, h - 1 - hole_h), _randint(gen, 1, w - 1 - hole_w), hole_h, hole_w)


def _interior_hole(clip: Clip, params: Box) -> tuple[torch.Tensor, torch.Tensor]:
    mask = _ones_mask(clip)
    mask[..., params.top : params.top + params.height, params.left : params.left + params.width] = 0.0
    return clip.frames, mask


def _band_split(gen: torch.Generator, size: int) -> tuple[int, int]:
    """A band of 1/8-1/4 of `size` pixels in all, split at random between the two sides."""
    total = _randint(gen, math.ceil(size * BAND_FRACTION[0]), math.floor(size * BAND_FRACTION[1]))
    first = _randint(gen, 0, total)
    return first, total - first


def _draw_bands(task: Task, shape: Shape, gen: torch.Generator, benchmark: bool) -> Params:
    _, h, w = shape
    axes = _randint(gen, 0, 2)  # 0: left/right, 1: top/bottom, 2: both
    top, bottom = _band_split(gen, h) if axes >= 1 else (0, 0)
    left, right = _band_split(gen, w) if axes != 1 else (0, 0)
    return Bands(top, bottom, left, right)


def _boundary_bands(clip: Clip, params: Bands) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, h, w = clip.frames.shape
    mask = torch.zeros_like(clip.frames[:1])
    mask[..., params.top : h - params.bottom, params.left : w - params.right] = 1.0
    return clip.frames, mask


def _draw_scale(task: Task, shape: Shape, gen: torch.Generator, benchmark: bool) -> Params:
    _, h, w = shape
    factor = _uniform(gen, *SR_FACTORS)
    return Scale(factor, (max(1, round(h / factor)), max(1, round(w / factor))))


def _low_resolution(clip: Clip, params: Scale) -> tuple[torch.Tensor, torch.Tensor]:
    return down_up_sample(clip.frames, params.size), _ones_mask(clip)


def _grayscale_frames(clip: Clip, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
    return grayscale(clip.frames), _ones_mask(clip)


def _edit_source(clip: Clip, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
    if clip.source is None:
        raise ValueError("editing needs an edit pair: the clip has no `source`")
    return clip.source, _ones_mask(clip)


CONDITION_KINDS: dict[str, ConditionKind] = {
    "none": ConditionKind(_draw_nothing, _nothing_given),
    "frames": ConditionKind(_draw_spans, _given_frames),
    "interior_mask": ConditionKind(_draw_box, _interior_hole),
    "boundary_mask": ConditionKind(_draw_bands, _boundary_bands),
    "grayscale": ConditionKind(_draw_nothing, _grayscale_frames),
    "downsample": ConditionKind(_draw_scale, _low_resolution),
    "edit_source": ConditionKind(_draw_nothing, _edit_source),
}


# --- the builder ---


def clip_problem(task: Task, clip: Clip) -> str | None:
    """Why `clip` cannot make `task`'s condition (shape, frame count, edit pair), or None if it can."""
    t, h, w = clip.frames.shape[1:]
    if problem := size_problem(h, w):
        return problem
    if not task.is_video and t != 1:
        return f"an image task needs one frame; got {t} (take `clip.first_frame()`)"
    if task.is_video and (not is_coded_length(t) or t < task.min_frames):
        return f"needs T = 4k+1 >= {task.min_frames} frames; got {t}"
    if task.is_edit and clip.source is None:
        return "needs an edit pair (a clip with `source`)"
    return None


def draw_params(task: Task, clip: Clip, gen: torch.Generator, benchmark: bool = False) -> Params:
    """Draw `task`'s condition parameters for `clip`: training ranges, or the benchmark's fixed spans."""
    problem = clip_problem(task, clip)
    if problem:
        raise ValueError(f"task {task.id} ({task.prompt_name}): {problem}")
    return CONDITION_KINDS[task.condition].draw(task, tuple(clip.frames.shape[1:]), gen, benchmark)


def assemble_condition(
    task: Task,
    pixels: torch.Tensor,
    mask: torch.Tensor,
    depth: torch.Tensor | None,
    text: str,
    extra: str = DEFAULT_EXTRA,
    params: Params = NoParams(),
) -> Condition:
    """The rules all tasks share: mask the pixels, keep depth on given pixels of generation tasks, build
    the prompt. pixels (3, T, H, W) before masking, mask and depth (1, T, H, W)."""
    keep_depth = task.generation and depth is not None
    return Condition(
        task=task.id,
        pixels=pixels * mask,
        depth=depth * mask if keep_depth else torch.zeros_like(mask),
        mask=mask,
        prompt=make_prompt(text, task, extra),
        params=params,
    )


def build_condition(task: Task | str, clip: Clip, params: Params, extra: str = DEFAULT_EXTRA) -> Condition:
    """`task`'s condition for `clip` with drawn `params` (see `draw_params`)."""
    task = get_task(task) if isinstance(task, str) else task
    problem = clip_problem(task, clip)
    if problem:
        raise ValueError(f"task {task.id} ({task.prompt_name}): {problem}")
    pixels, mask = CONDITION_KINDS[task.condition].apply(clip, params)
    text = clip.instruction if task.is_edit else clip.caption
    return assemble_condition(task, pixels, mask, clip.depth, text, extra, params)


def benchmark_condition(task: Task | str, clip: Clip, seed: int, extra: str = DEFAULT_EXTRA) -> Condition:
    """The benchmark's condition: a pure function of (task, clip, seed), bit-identical on every call.
    Image tasks use the clip's first frame (Appendix A)."""
    task = get_task(task) if isinstance(task, str) else task
    if not task.is_video and clip.num_frames > 1:
        clip = clip.first_frame()
    gen = torch.Generator().manual_seed(seed)
    return build_condition(task, clip, draw_params(task, clip, gen, benchmark=True), extra)
