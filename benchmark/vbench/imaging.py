"""Imaging quality: MUSIQ (trained on SPAQ) per frame, averaged, on a 0-1 scale.

VBench (`vbench/imaging_quality.py`, default mode "longer"): a frame whose longer side exceeds 512 is resized
(torchvision `Resize`, bilinear with antialias) to (int(s * H), int(s * W)) with s = 512 / max(H, W); pixels
/ 255 go to pyiqa's MUSIQ (`musiq_spaq_ckpt-358bb6af.pth`), the 0-100 scores are averaged over all frames and
divided by 100; a set of videos is their mean.

The network is pluggable (`ImageQualityNet`): `load_iqa` builds pyiqa's MUSIQ when pyiqa is installed (an
optional dependency; it is not in our environment, because it brings ~20 packages, among them a second
OpenCV build beside opencv-python-headless) with the weights read by us with weights_only=True, or
`TinyIqa` (a small random conv net for tests and the demo) from a safetensors file that names it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.transforms.v2 import functional as TF

from benchmark.vbench.base import Dimension, VideoScore, device_of, weight_path

LONGER_SIDE = 512
TINY_ARCH = "tiny_iqa"


class ImageQualityNet(Protocol):
    """Float frames (1, 3, H, W) in [0, 1] -> quality on MUSIQ's 0-100 scale, (1,) or (1, 1)."""

    def __call__(self, frame: torch.Tensor) -> torch.Tensor: ...


class TinyIqa(nn.Module):
    """Conv -> SiLU -> global mean -> linear -> 100 * sigmoid: a stand-in with MUSIQ's interface."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.config = {"channels": channels}
        self.conv = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.head = nn.Linear(channels, 1)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        x = nn.functional.silu(self.conv(frame)).mean(dim=(2, 3))  # (N, C)
        return 100 * torch.sigmoid(self.head(x))  # (N, 1)


def save_tiny_iqa(model: TinyIqa, path: str | Path) -> Path:
    meta = {"arch": TINY_ARCH, "config": json.dumps(model.config)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return Path(path)


def load_iqa(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """TinyIqa from a safetensors file that names it, else pyiqa's MUSIQ with the state dict at `path`."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("arch") == TINY_ARCH:
            model = TinyIqa(**json.loads(meta["config"]))
            model.load_state_dict(load_file(str(path)))
            return model.eval().requires_grad_(False).to(device)
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        from pyiqa.archs.musiq_arch import MUSIQ
    except ImportError as e:
        raise ValueError(f"imaging_quality: {path} is a MUSIQ checkpoint, which needs pyiqa (pip install pyiqa); "
                         "it is not installed") from e
    model = MUSIQ(pretrained=False)
    model.load_state_dict(state.get("params", state))  # pyiqa's checkpoints keep the weights under "params"
    return model.eval().requires_grad_(False).to(device)


def resize_longer(frames: torch.Tensor, longer: int = LONGER_SIDE) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> the longer side at most `longer`, VBench's sizes, as float in [0, 1]."""
    h, w = frames.shape[-2:]
    if max(h, w) > longer:
        s = longer / max(h, w)
        frames = TF.resize(frames, [int(s * h), int(s * w)], antialias=True)
    return frames.float() / 255.0


class ImagingQuality(Dimension):
    """VBench imaging quality (MUSIQ-SPAQ through pyiqa, or a stand-in `ImageQualityNet`)."""

    name = "imaging_quality"
    header = "Imaging↑"
    weights = ("musiq",)
    min_frames = 1

    def __init__(self, net: ImageQualityNet):
        self.net = net

    @classmethod
    def load(cls, paths: dict[str, Path], device: str | torch.device = "cpu") -> ImagingQuality:
        return cls(load_iqa(weight_path(paths, "musiq", cls.name), device))

    @torch.no_grad()
    def score(self, video: torch.Tensor, fps: float) -> VideoScore:
        device = device_of(self.net)
        frames = resize_longer(video)  # (T, 3, h, w)
        scores = [float(self.net(frame[None].to(device))) for frame in frames]  # MUSIQ, one frame at a time
        return VideoScore(sum(scores) / len(scores) / 100.0)
