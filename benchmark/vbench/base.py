"""What every VBench dimension shares: the interface, uint8 frames, padding, and VBench's pooling.

A dimension scores one video, uint8 (T, 3, H, W) RGB as VBench's `load_video` gives it, at its frame rate, and
returns a `VideoScore`. A task's figure pools the videos as VBench pools them (`pool`): the mean of the
per-video values, except the two consistency dimensions, which divide the sum over all frame pairs by the
number of pairs (`vbench/subject_consistency.py`: `sim / cnt`), i.e. the mean weighted by pairs.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class VideoScore:
    """One video's score and its weight when a task pools videos (frame pairs, or 1 per video)."""

    value: float
    weight: float = 1.0


class Dimension(ABC):
    """One VBench quality dimension. Build once with `load`, call per video."""

    name: ClassVar[str]  # VBench's dimension name, also the --metrics name and the results key
    header: ClassVar[str]  # column header in the report
    weights: ClassVar[tuple[str, ...]] = ()  # --metric-weights keys this dimension needs
    min_frames: ClassVar[int] = 2  # fewer frames: NaN (the dimension is undefined)

    @classmethod
    @abstractmethod
    def load(cls, paths: dict[str, Path], device: str | torch.device = "cpu") -> Dimension:
        """The dimension with its networks built from the local files `paths[key]` for key in `weights`."""

    @abstractmethod
    def score(self, video: torch.Tensor, fps: float) -> VideoScore:
        """uint8 (T, 3, H, W) with T >= min_frames -> the video's score."""

    def __call__(self, video: torch.Tensor, fps: float) -> VideoScore:
        if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[1] != 3:
            raise ValueError(f"{self.name}: video must be uint8 (T, 3, H, W); got {video.dtype} {tuple(video.shape)}")
        if video.shape[0] < self.min_frames:
            return VideoScore(float("nan"), 0.0)
        return self.score(video, fps)


def pool(scores: list[VideoScore]) -> float:
    """A task's figure: the weighted mean of its videos' finite values (NaN when there is none)."""
    kept = [s for s in scores if math.isfinite(s.value) and s.weight > 0]
    if not kept:
        return float("nan")
    return sum(s.value * s.weight for s in kept) / sum(s.weight for s in kept)


def to_uint8(frames01: torch.Tensor) -> torch.Tensor:
    """Float frames in [0, 1] -> uint8, rounded (what writing them to a video file stores)."""
    return (frames01.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def pad_to_multiple(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Replicate-pad (..., H, W) to multiples of `divisor`, split evenly with the extra pixel right / bottom
    (RAFT's and AMT's `InputPadder`). Returns the padded tensor and (left, right, top, bottom)."""
    h, w = x.shape[-2:]
    ph, pw = -h % divisor, -w % divisor
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if not any(pad):
        return x, pad
    flat = x.reshape(-1, *x.shape[-3:]) if x.ndim > 4 else x
    return F.pad(flat, pad, mode="replicate").reshape(*x.shape[:-2], h + ph, w + pw), pad


def unpad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo `pad_to_multiple`."""
    left, right, top, bottom = pad
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


def device_of(net: object) -> torch.device:
    """Where a network's parameters live (the CPU for a callable without any)."""
    params = net.parameters() if isinstance(net, torch.nn.Module) else iter(())
    return next((p.device for p in params), torch.device("cpu"))


def weight_path(paths: dict[str, Path], key: str, dimension: str) -> Path:
    """paths[key], or a ValueError naming the dimension and the missing --metric-weights key."""
    if key not in paths:
        raise ValueError(f"{dimension}: needs --metric-weights {key}=PATH")
    return Path(paths[key])
