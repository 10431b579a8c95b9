"""Temporal flickering: how little consecutive frames differ, pixel by pixel.

VBench (`vbench/temporal_flickering.py`): the mean absolute difference of consecutive uint8 frames (every
frame, all channels), averaged over pairs, as (255 - MAE) / 255; a set of videos is their mean. VBench runs it
on videos of static prompts, where any change is flicker; here it runs on whatever the task's outputs show.
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.vbench.base import Dimension, VideoScore


def flicker_score(video: torch.Tensor) -> float:
    """uint8 (T, 3, H, W), T >= 2 -> (255 - mean over pairs of mean |x_t+1 - x_t|) / 255."""
    x = video.double()
    mae = (x[1:] - x[:-1]).abs().flatten(1).mean(1)  # (T-1,)
    return float((255.0 - mae.mean()) / 255.0)


class TemporalFlickering(Dimension):
    """VBench temporal flickering; no network."""

    name = "temporal_flickering"
    header = "Flicker↑"

    @classmethod
    def load(cls, paths: dict[str, Path], device: str | torch.device = "cpu") -> TemporalFlickering:
        return cls()

    def score(self, video: torch.Tensor, fps: float) -> VideoScore:
        return VideoScore(flicker_score(video))
