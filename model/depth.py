"""Depth-Anything-V2 (frozen): frames in [-1, 1] -> raw relative depth, batched on tensors.

The output is the model's raw `predicted_depth` (not normalised), bicubic-resized back to the frame and
clamped at 0, as the MfM release feeds it to the adapter. Preprocessing follows the checkpoint's
`DPTImageProcessor` settings (resize keeping aspect ratio to a multiple of 14 near `input_size`, ImageNet
mean/std) but runs in torch on whole batches instead of per PIL image.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import (
    AutoImageProcessor,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTImageProcessor,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


def model_input_size(height: int, width: int, target: int, multiple: int, keep_aspect_ratio: bool) -> tuple[int, int]:
    """The size DPTImageProcessor resizes an (height, width) frame to for a `target` x `target` setting."""
    scale_h, scale_w = target / height, target / width
    if keep_aspect_ratio:  # scale as little as possible
        scale_h = scale_w = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
    return _to_multiple(scale_h * height, multiple), _to_multiple(scale_w * width, multiple)


def _to_multiple(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


class DepthEstimator(nn.Module):
    """Frozen `DepthAnythingForDepthEstimation` with tensor preprocessing from its processor config."""

    def __init__(
        self, model: DepthAnythingForDepthEstimation, processor: DPTImageProcessor, input_size: int | None = None
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.input_size = input_size or int(processor.size["height"])
        self.multiple = int(processor.ensure_multiple_of or model.config.patch_size)
        self.keep_aspect_ratio = bool(processor.keep_aspect_ratio)
        self.register_buffer("mean", torch.tensor(processor.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(processor.image_std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        subfolder: str | None = None,
        input_size: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> DepthEstimator:
        """Load model + processor config from a folder, a folder holding `depth/`, or a hub id.

        `input_size` overrides the processor's target size (518 for the released checkpoints).
        """
        if subfolder is None and (Path(path_or_id) / "depth" / "config.json").is_file():
            subfolder = "depth"  # a pipeline-like root (see model/tiny_pretrained.py)
        subfolder = subfolder or ""
        model = DepthAnythingForDepthEstimation.from_pretrained(
            str(path_or_id), subfolder=subfolder, dtype=dtype, use_safetensors=True
        )
        processor = AutoImageProcessor.from_pretrained(str(path_or_id), subfolder=subfolder, backend="pil")
        return cls(model, processor, input_size=input_size)

    @classmethod
    def tiny(cls, seed: int = 0) -> DepthEstimator:
        """Random-init Depth-Anything-V2 (4-layer Dinov2, width 32) on 56-pixel inputs."""
        backbone = Dinov2Config(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=14,
            image_size=56,
            out_features=["stage1", "stage2", "stage3", "stage4"],
            reshape_hidden_states=False,
            initializer_range=0.1,
        )
        config = DepthAnythingConfig(
            backbone_config=backbone,
            patch_size=14,
            reassemble_hidden_size=32,
            neck_hidden_sizes=[8, 16, 32, 32],
            fusion_hidden_size=16,
            head_hidden_size=8,
            depth_estimation_type="relative",
            initializer_range=0.1,  # with the default 0.02 a random depth map is flat to 1e-5
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DepthAnythingForDepthEstimation(config)
        with torch.no_grad():  # a random head's ReLU output is mostly 0: lift it so depth is positive
            model.head.conv3.bias.fill_(1.0)
        processor = DPTImageProcessor(
            do_resize=True,
            size={"height": 56, "width": 56},
            resample=PILImageResampling.BICUBIC,
            keep_aspect_ratio=True,
            ensure_multiple_of=14,
            do_rescale=True,
            do_normalize=True,
            image_mean=list(IMAGENET_DEFAULT_MEAN),
            image_std=list(IMAGENET_DEFAULT_STD),
            do_pad=False,
        )
        return cls(model, processor)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model config + safetensors weights and the processor config into `directory`."""
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.processor.save_pretrained(str(directory))

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, H, W) in [-1, 1] -> normalised model input (N, 3, h, w), h and w multiples of 14."""
        size = model_input_size(*frames.shape[-2:], self.input_size, self.multiple, self.keep_aspect_ratio)
        pixels = (frames.float() + 1.0) / 2.0  # [0, 1]
        pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True)
        return (pixels.clamp(0.0, 1.0) - self.mean) / self.std

    @torch.no_grad()
    def predict_images(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images of one size -> raw depth (N, 1, H, W), float32, as transformers' depth-estimation pipeline
        gives it (the processor's PIL preprocessing, bicubic back to the image size, no clamp): the release's
        path, for its folders."""
        inputs = self.processor(images=images, return_tensors="pt").to(self.model.device, self.model.dtype)
        outputs = self.model(**inputs)
        sizes = [im.size[::-1] for im in images]
        depth = self.processor.post_process_depth_estimation(outputs, target_sizes=sizes)
        return torch.stack([d["predicted_depth"].float() for d in depth])[:, None]

    @torch.no_grad()
    def predict(self, frames: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Frames (T, 3, H, W) in [-1, 1] -> raw depth (T, 1, H, W), float32, >= 0."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (T, 3, H, W) RGB in [-1, 1]; got shape {tuple(frames.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        height, width = frames.shape[-2:]
        if frames.shape[0] == 0:
            return frames.new_zeros(0, 1, height, width, dtype=torch.float32)
        device, dtype = self.model.device, self.model.dtype
        depths = []
        for chunk in frames.split(batch_size):
            pixel_values = self.preprocess(chunk.to(device)).to(dtype)  # (n, 3, h, w)
            depth = self.model(pixel_values=pixel_values).predicted_depth  # (n, h, w)
            depth = F.interpolate(depth[:, None].float(), size=(height, width), mode="bicubic", align_corners=False)
            depths.append(depth.clamp(min=0.0))  # (n, 1, H, W)
        return torch.cat(depths)
