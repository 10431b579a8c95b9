"""Motion smoothness: how well a frame-interpolation model rebuilds the odd frames from the even ones.

VBench (`vbench/motion_smoothness.py`, AMT utils): keep frames 0, 2, 4, ... as float RGB / 255, replicate-pad
them to a multiple of the model's divisor (16 for AMT), interpolate the middle of each consecutive kept pair
(embt 0.5, one pass), unpad, convert to uint8 by truncating (x * 255, clipped), then take the mean absolute
difference against the real frames 1, 3, 5, ... (one per interpolated frame), averaged over frames, as
(255 - MAE) / 255. A set of videos is their mean. VBench's optional down-scaling on small GPUs is not used.
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.vbench.base import Dimension, VideoScore, device_of, pad_to_multiple, unpad, weight_path
from benchmark.vbench.interpolation import FrameInterpolator, load_interpolator


@torch.no_grad()
def interpolate_odd_frames(video: torch.Tensor, interpolator: FrameInterpolator, batch: int = 8) -> torch.Tensor:
    """uint8 (T, 3, H, W), T >= 3 -> the interpolated frames 1, 3, ... as uint8 (ceil(T / 2) - 1, 3, H, W)."""
    device = device_of(interpolator)
    kept = video[0::2].float() / 255.0  # (K, 3, H, W)
    padded, pad = pad_to_multiple(kept, interpolator.divisor)
    mids = [interpolator(a.to(device), b.to(device)).float().cpu()
            for a, b in zip(padded[:-1].split(batch), padded[1:].split(batch))]  # fmt: skip
    return (unpad(torch.cat(mids), pad) * 255.0).clamp(0, 255).to(torch.uint8)  # truncates, as AMT's tensor2img


def vfi_score(video: torch.Tensor, predicted_odd: torch.Tensor) -> float:
    """(255 - mean |real odd frame - predicted odd frame|) / 255, over the predicted frames."""
    real = video[1::2][: len(predicted_odd)].double()
    mae = (real - predicted_odd.double()).abs().flatten(1).mean(1)  # (K-1,)
    return float((255.0 - mae.mean()) / 255.0)


class MotionSmoothness(Dimension):
    """VBench motion smoothness with a pluggable interpolator (`interpolation.py`; VBench's AMT-S is `amt.py`)."""

    name = "motion_smoothness"
    header = "Smooth.↑"
    weights = ("interpolator",)
    min_frames = 3  # two kept frames at least

    def __init__(self, interpolator: FrameInterpolator):
        self.interpolator = interpolator

    @classmethod
    def load(cls, paths: dict[str, Path], device: str | torch.device = "cpu") -> MotionSmoothness:
        return cls(load_interpolator(weight_path(paths, "interpolator", cls.name), device))

    def score(self, video: torch.Tensor, fps: float) -> VideoScore:
        return VideoScore(vfi_score(video, interpolate_odd_frames(video, self.interpolator)))
