"""Aesthetic quality: the LAION aesthetic predictor on every frame, averaged, on a 0-1 scale.

VBench (`vbench/aesthetic_quality.py`): CLIP ViT-L/14 `encode_image` on `clip_transform(224)` frames,
L2-normalised, through LAION's `sa_0_4_vit_l_14_linear.pth`; the per-frame scores are divided by 10 and
averaged over all frames; a set of videos is their mean. The predictor is `model.aesthetic` (shared with
curation).
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.vbench.base import Dimension, VideoScore, weight_path
from model.aesthetic import AestheticPredictor


class AestheticQuality(Dimension):
    """VBench aesthetic quality (CLIP ViT-L/14 folder + LAION head file)."""

    name = "aesthetic_quality"
    header = "Aesth.↑"
    weights = ("clip_l14", "laion_head")
    min_frames = 1

    def __init__(self, predictor: AestheticPredictor, batch: int = 32):
        self.predictor, self.batch = predictor, batch

    @classmethod
    def load(cls, paths: dict[str, Path], device: str | torch.device = "cpu") -> AestheticQuality:
        clip = weight_path(paths, "clip_l14", cls.name)
        return cls(AestheticPredictor(clip, weight_path(paths, "laion_head", cls.name), device))

    def score(self, video: torch.Tensor, fps: float) -> VideoScore:
        scores = torch.cat([self.predictor(chunk) for chunk in video.split(self.batch)])  # (T,), about 1-10
        return VideoScore(float((scores.double() / 10).mean()))
