"""Subject and background consistency: how alike each frame's features are to the previous and the first frame's.

VBench (`vbench/subject_consistency.py`, `vbench/background_consistency.py`) scores frame t >= 1 by
(max(0, cos(f_t, f_{t-1})) + max(0, cos(f_t, f_0))) / 2 on L2-normalised features and averages over the
T - 1 frames; a set of videos divides the sum over all their frames by the number of frames scored.
Subject consistency uses DINO ViT-B/16's class token on every frame resized (short side 224, bilinear,
no antialias; no crop) and ImageNet-normalised (`vbench/utils.py`, `dino_transform`); background consistency
uses CLIP ViT-B/32's image embedding on `clip_pixels` frames.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF
from transformers import ViTModel

from benchmark.vbench.base import Dimension, VideoScore, weight_path
from model.clip_image import clip_pixels, image_embeds, load_clip_vision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_SIZE = 224


def first_and_previous_similarity(features: torch.Tensor) -> VideoScore:
    """Features (T, D), T >= 2 -> mean over t >= 1 of (max(0, cos(f_t, f_t-1)) + max(0, cos(f_t, f_0))) / 2,
    weighted by T - 1 (the frames scored)."""
    f = F.normalize(features.double(), dim=-1)  # (T, D)
    previous = (f[1:] * f[:-1]).sum(-1).clamp(min=0)  # (T-1,)
    first = (f[1:] * f[:1]).sum(-1).clamp(min=0)  # (T-1,)
    return VideoScore(float(((previous + first) / 2).mean()), float(len(f) - 1))


def dino_pixels(frames: torch.Tensor, size: int = DINO_SIZE) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float (N, 3, size, size * W / H): short side `size`, ImageNet-normalised."""
    x = TF.resize(frames, size, antialias=False).float() / 255.0  # bilinear on uint8, as torchvision's Resize
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


class SubjectConsistency(Dimension):
    """VBench subject consistency: DINO ViT-B/16 (transformers `ViTModel`, e.g. facebook/dino-vitb16) class
    tokens, position embeddings interpolated to the frame's aspect ratio."""

    name = "subject_consistency"
    header = "Subj.↑"
    weights = ("dino",)

    def __init__(self, dino: ViTModel, batch: int = 16):
        self.dino, self.batch = dino, batch

    @classmethod
    def load(cls, paths: dict[str, Path], device: str | torch.device = "cpu") -> SubjectConsistency:
        path = weight_path(paths, "dino", cls.name)
        dino = ViTModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
        return cls(dino.eval().requires_grad_(False).to(device))

    @torch.no_grad()
    def features(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 (T, 3, H, W) -> class tokens (T, D)."""
        device = next(self.dino.parameters()).device
        out = [self.dino(pixel_values=dino_pixels(chunk).to(device), interpolate_pos_encoding=True)
               .last_hidden_state[:, 0].float().cpu() for chunk in video.split(self.batch)]  # fmt: skip
        return torch.cat(out)

    def score(self, video: torch.Tensor, fps: float) -> VideoScore:
        return first_and_previous_similarity(self.features(video))


class BackgroundConsistency(Dimension):
    """VBench background consistency: CLIP ViT-B/32 image embeddings (transformers
    `CLIPVisionModelWithProjection`, e.g. openai/clip-vit-base-patch32)."""

    name = "background_consistency"
    header = "Backg.↑"
    weights = ("clip_b32",)

    def __init__(self, clip, batch: int = 32):
        self.clip, self.batch = clip, batch

    @classmethod
    def load(cls, paths: dict[str, Path], device: str | torch.device = "cpu") -> BackgroundConsistency:
        return cls(load_clip_vision(weight_path(paths, "clip_b32", cls.name), device))

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 (T, 3, H, W) -> unit-norm image embeddings (T, D)."""
        return image_embeds(self.clip, clip_pixels(video), self.batch)

    def score(self, video: torch.Tensor, fps: float) -> VideoScore:
        return first_and_previous_similarity(self.features(video))
