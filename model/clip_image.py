"""CLIP image embeddings (transformers `CLIPVisionModelWithProjection`) with OpenAI CLIP's preprocessing.

`clip_pixels` is the transform VBench applies before `encode_image` (`vbench/utils.py`, `clip_transform`):
resize the short side to 224 (bicubic, no antialias) on uint8 frames, centre-crop 224, scale to [0, 1] and
normalise with CLIP's mean / std. `image_embeds` equals OpenAI CLIP's `encode_image` (class token, `ln_post`,
projection) for weights converted to transformers (e.g. openai/clip-vit-large-patch14), L2-normalised.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from transformers import CLIPVisionModelWithProjection

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(frames: torch.Tensor, size: int = 224) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float (N, 3, size, size), CLIP-normalised."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"clip_pixels takes uint8 (N, 3, H, W) frames; got {frames.dtype} {tuple(frames.shape)}")
    x = TF.resize(frames, size, interpolation=InterpolationMode.BICUBIC, antialias=False)  # short side -> size
    x = TF.center_crop(x, [size, size]).float() / 255.0
    return TF.normalize(x, CLIP_MEAN, CLIP_STD)


def load_clip_vision(path: str | Path, device: str | torch.device = "cpu") -> CLIPVisionModelWithProjection:
    """A CLIP vision tower + projection from a local transformers folder (config.json + safetensors)."""
    if not Path(path, "config.json").is_file():
        raise FileNotFoundError(f"CLIP vision weights {path}: not a transformers model folder (no config.json)")
    model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True)
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def image_embeds(model: CLIPVisionModelWithProjection, pixels: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """CLIP-normalised pixels (N, 3, S, S) -> unit-norm image embeddings (N, D), float32 on the CPU."""
    device = next(model.parameters()).device
    out = [model(pixel_values=chunk.to(device)).image_embeds.float() for chunk in pixels.split(batch)]
    return F.normalize(torch.cat(out), dim=-1).cpu()  # (N, D)
