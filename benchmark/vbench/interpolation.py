"""Frame interpolators for motion smoothness: predict the frame halfway between two frames.

VBench uses AMT-S (`vbench/third_party/amt`, config AMT-S.yaml, checkpoint amt-s.pth), implemented in `amt.py`.
`load_interpolator` reads the official amt-s.pth (weights only), or a safetensors file: one written by
`save_interpolator` / `convert` names its architecture in its metadata, one without metadata is taken as AMT-S.
`TinyInterpolator` (the mean of the two frames plus a small learned residual; zero-init residual = linear
blending) stays for tests and the demo; motion-smoothness numbers equal VBench's only with AMT-S weights.

    python -m benchmark.vbench.interpolation convert amt-s.pth amt-s.safetensors
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from benchmark.vbench import amt

TINY_ARCH = "tiny_interpolator"
AMT_ARCH = "amt_s"


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


def save_interpolator(model: TinyInterpolator | amt.AMTS, path: str | Path) -> Path:
    """Weights as safetensors, the architecture and config in the file's metadata."""
    if isinstance(model, amt.AMTS):
        meta = {"arch": AMT_ARCH, "config": json.dumps(asdict(model.cfg))}
    else:
        meta = {"arch": TINY_ARCH, "config": json.dumps(model.config)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return Path(path)


def load_interpolator(path: str | Path, device: str | torch.device = "cpu") -> TinyInterpolator | amt.AMTS:
    """The interpolator in a local file: AMT-S's amt-s.pth, or a safetensors file (see the module docstring)."""
    path = Path(path)
    if path.suffix in (".pth", ".pt"):
        return amt.load(path, device=device)
    if path.suffix != ".safetensors":
        raise ValueError(f"interpolator {path}: expected AMT-S's amt-s.pth or a .safetensors file")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    arch = meta.get("arch", AMT_ARCH)  # a bare safetensors file: the converted official checkpoint
    if arch == AMT_ARCH:
        cfg = amt.AMTConfig(**json.loads(meta["config"])) if "config" in meta else None
        return amt.load(path, cfg, device)
    if arch != TINY_ARCH:
        raise ValueError(f"interpolator {path}: architecture {arch!r} is not one of [{AMT_ARCH!r}, {TINY_ARCH!r}]")
    model = TinyInterpolator(**json.loads(meta["config"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False).to(device)


def convert(pth: str | Path, out: str | Path) -> Path:
    """The official amt-s.pth ({"state_dict": ...}) -> safetensors with AMT-S metadata; checks a strict load."""
    return save_interpolator(amt.load(pth), out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmark.vbench.interpolation")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="amt-s.pth -> safetensors (strictly loaded into our AMT-S first)")
    conv.add_argument("pth", type=Path)
    conv.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    print(f"wrote {convert(args.pth, args.out)}")


if __name__ == "__main__":
    main()
