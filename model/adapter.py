"""The condition adapter: pixel-space [RGB·mask, depth, mask] -> features on the token grid (paper §3.1).

Structure of the release's `ConvitConditioningEmbedding`: conv_in, then four levels of (same-width conv,
stride-2 down conv), the down conv 3D (time and space) in levels 1 and 3, and conv_out to the model width.
Net /16 in space (VAE 8 × patch 2) and /4 in time (4k+1 frames -> k+1); an image stays one frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER_CHANNELS = (16, 32, 96, 256, 512)
TEMPORAL_DOWN_LEVELS = (0, 2)  # levels whose down conv is 3D


class FrameConv2d(nn.Conv2d):
    """A 3×3 Conv2d applied to every frame of a (B, C, T, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _, _ = x.shape
        y = super().forward(x.transpose(1, 2).flatten(0, 1))  # (B·T, C', H', W')
        return y.unflatten(0, (b, t)).transpose(1, 2)  # (B, C', T, H', W')


def _conv(c_in: int, c_out: int, stride: int = 1, temporal: bool = False) -> nn.Module:
    conv = nn.Conv3d if temporal else FrameConv2d
    return conv(c_in, c_out, kernel_size=3, stride=stride, padding=1)


class ConditionAdapter(nn.Module):
    """(B, C_cond, T, H, W) condition -> (B, D, (T-1)/4+1, H/16, W/16) features added to the patch tokens.

    conv_out starts at zero, so a new adapter adds nothing until it is trained (DiT's zero-init idea).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        c = ADAPTER_CHANNELS
        self.conv_in = _conv(in_channels, c[0])
        blocks: list[nn.Module] = []
        for level in range(len(c) - 1):
            blocks.append(_conv(c[level], c[level]))
            blocks.append(_conv(c[level], c[level + 1], stride=2, temporal=level in TEMPORAL_DOWN_LEVELS))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = _conv(c[-1], out_channels)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(cond))  # (B, 16, T, H, W)
        for block in self.blocks:
            x = F.silu(block(x))  # down convs: T 4k+1 -> 2k+1 -> k+1, space /16 over the four levels
        return self.conv_out(x)  # (B, D, t, H/16, W/16)
