"""Imaging quality: MUSIQ per frame, averaged, on a 0-1 scale.

VBench (`vbench/imaging_quality.py`, default mode "longer"): a frame whose longer side exceeds 512 is resized
(torchvision `Resize`, bilinear with antialias) to (int(s * H), int(s * W)) with s = 512 / max(H, W); pixels
/ 255 go to pyiqa's MUSIQ (VBench ships the SPAQ checkpoint `musiq_spaq_ckpt-358bb6af.pth`; pyiqa's `musiq`
metric is the KonIQ one, `musiq_koniq_ckpt-e95806b9.pth`: the same architecture), the 0-100 scores are
averaged over all frames and divided by 100; a set of videos is their mean.

The network is pluggable (`ImageQualityNet`); `load` builds our MUSIQ (`musiq.py`, no pyiqa) from pyiqa's .pth
or a safetensors file, the tiny random-init one included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torchvision.transforms.v2 import functional as TF

from benchmark.vbench import musiq
from benchmark.vbench.base import Dimension, VideoScore, device_of, weight_path

LONGER_SIDE = 512


class ImageQualityNet(Protocol):
    """Float frames (1, 3, H, W) in [0, 1] -> quality on MUSIQ's 0-100 scale, (1,) or (1, 1)."""

    def __call__(self, frame: torch.Tensor) -> torch.Tensor: ...


def resize_longer(frames: torch.Tensor, longer: int = LONGER_SIDE) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> the longer side at most `longer`, VBench's sizes, as float in [0, 1]."""
    h, w = frames.shape[-2:]
    if max(h, w) > longer:
        s = longer / max(h, w)
        frames = TF.resize(frames, [int(s * h), int(s * w)], antialias=True)
    return frames.float() / 255.0


class ImagingQuality(Dimension):
    """VBench imaging quality (our MUSIQ with pyiqa's weights, or a stand-in `ImageQualityNet`)."""

    name = "imaging_quality"
    header = "Imaging↑"
    weights = ("musiq",)
    min_frames = 1

    def __init__(self, net: ImageQualityNet):
        self.net = net

    @classmethod
    def load(cls, paths: dict[str, Path], device: str | torch.device = "cpu") -> ImagingQuality:
        return cls(musiq.load(weight_path(paths, "musiq", cls.name), device))

    @torch.no_grad()
    def score(self, video: torch.Tensor, fps: float) -> VideoScore:
        device = device_of(self.net)
        frames = resize_longer(video)  # (T, 3, h, w)
        scores = [float(self.net(frame[None].to(device))) for frame in frames]  # MUSIQ, one frame at a time
        return VideoScore(sum(scores) / len(scores) / 100.0)
