"""The LAION aesthetic predictor: a linear head on unit-norm CLIP ViT-L/14 image embeddings, scores about 1-10.

The head is LAION-AI/aesthetic-predictor's `sa_0_4_vit_l_14_linear.pth` (an `nn.Linear(768, 1)` state dict,
keys `weight`, `bias`), read with weights_only=True or from safetensors. VBench's aesthetic quality
(`vbench/aesthetic_quality.py`) feeds it `clip_pixels` frames and divides by 10. Curation can score clips
with the same `AestheticPredictor`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from model.clip_image import clip_pixels, image_embeds, load_clip_vision


def load_head(path: str | Path) -> nn.Linear:
    """The linear head from a local state dict (`weight` (1, D), `bias` (1,))."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aesthetic head {path}: no such file")
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if set(state) != {"weight", "bias"} or state["weight"].ndim != 2 or state["weight"].shape[0] != 1:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        raise ValueError(f"aesthetic head {path}: expected weight (1, D) and bias (1,), got {shapes}")
    head = nn.Linear(state["weight"].shape[1], 1)
    head.load_state_dict(state)
    return head.eval().requires_grad_(False)


class AestheticPredictor:
    """CLIP image embedding -> LAION linear head. Build once, call per batch of frames."""

    def __init__(self, clip_path: str | Path, head_path: str | Path, device: str | torch.device = "cpu"):
        self.clip = load_clip_vision(clip_path, device)
        self.head = load_head(head_path).to(device)
        dim = self.clip.config.projection_dim
        if self.head.in_features != dim:
            raise ValueError(f"aesthetic head {head_path} takes {self.head.in_features}-d embeddings; the CLIP "
                             f"at {clip_path} makes {dim}-d ones (LAION's head is for ViT-L/14, 768)")

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> aesthetic scores (N,), float32, LAION's scale (about 1-10)."""
        emb = image_embeds(self.clip, clip_pixels(frames))  # (N, D), unit norm
        return self.head(emb.to(self.head.weight.device)).squeeze(-1).cpu()  # (N,)
