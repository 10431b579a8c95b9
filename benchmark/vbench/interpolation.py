"""Frame interpolators for motion smoothness: predict the frame halfway between two frames.

VBench uses AMT-S (`vbench/third_party/amt`, config AMT-S.yaml, checkpoint amt-s.pth). AMT-S is not
implemented here yet: the interpolator is a pluggable module with the `FrameInterpolator` interface, and
`load_interpolator` reads a safetensors file whose metadata names its architecture. The one architecture
shipped is `TinyInterpolator` (the mean of the two frames plus a small learned residual; zero-init residual =
linear blending), for tests and the demo; motion-smoothness numbers equal VBench's only with AMT-S weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

TINY_ARCH = "tiny_interpolator"


class FrameInterpolator(Protocol):
    """(N, 3, H, W) float frames in [0, 1], H and W multiples of `divisor` -> the middle frames (N, 3, H, W)."""

    divisor: int

    def __call__(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor: ...


class TinyInterpolator(nn.Module):
    """(first + last) / 2 + a small conv net's residual on the two frames; the last conv starts at zero."""

    divisor = 1

    def __init__(self, channels: int = 16, layers: int = 2):
        super().__init__()
        self.config = {"channels": channels, "layers": layers}
        body: list[nn.Module] = [nn.Conv2d(6, channels, 3, padding=1), nn.SiLU()]
        for _ in range(layers - 1):
            body += [nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*body)
        self.out = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # starts as linear blending
        nn.init.zeros_(self.out.bias)

    def forward(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        residual = self.out(self.body(torch.cat([first, last], dim=1)))  # (N, 3, H, W)
        return (first + last) / 2 + residual


def save_interpolator(model: TinyInterpolator, path: str | Path) -> Path:
    """Weights as safetensors, the architecture and config in the file's metadata."""
    meta = {"arch": TINY_ARCH, "config": json.dumps(model.config)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return Path(path)


def load_interpolator(path: str | Path, device: str | torch.device = "cpu") -> TinyInterpolator:
    """The interpolator in a local safetensors file written by `save_interpolator`."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"interpolator {path}: expected a .safetensors file with an 'arch' in its metadata "
                         "(AMT-S's amt-s.pth is not supported yet: no AMT-S implementation here)")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("arch") != TINY_ARCH:
        raise ValueError(f"interpolator {path}: architecture {meta.get('arch')!r} is not one of [{TINY_ARCH!r}]")
    model = TinyInterpolator(**json.loads(meta["config"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False).to(device)
