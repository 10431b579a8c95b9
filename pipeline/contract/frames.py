"""Frames between storage and the models: uint8 RGB (T, H, W, 3) <-> float (3, T, H, W) in [-1, 1], and the one
resize and cover-crop that curation, training, the benchmark builder and generation all use.

Resampling: area averaging when a frame shrinks (each output pixel is the mean of the input pixels it covers,
so nothing aliases; curation makes its proxies with it, so a crop of a proxy equals the same crop of the clip),
bicubic when it grows (what the super-resolution tasks' condition is up-sampled with in training).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is made: curation's CPU workers never load it
    import torch


def to_signed(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 values 0..255 -> float32 in [-1, 1], any layout."""
    return pixels.float().div(127.5).sub(1.0)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [-1, 1] (the project's clip layout)."""
    import torch

    return to_signed(torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2))


def tensor_to_frames(clip: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3), rounded and clamped."""
    import torch

    return ((clip.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w[, C]) -> (T, height, width[, C]): area averaging when shrinking, bicubic when growing."""
    import cv2

    interpolation = cv2.INTER_AREA if height * width < frames.shape[1] * frames.shape[2] else cv2.INTER_CUBIC
    out = np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in frames])
    return out.reshape(len(frames), height, width, *frames.shape[3:])  # cv2 drops a channel axis of 1


def cover_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w[, C]) -> (T, height, width[, C]): scale to cover, then centre-crop; no resampling when a side
    already fits exactly (a proxy made for this size)."""
    t, h, w = frames.shape[:3]
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    if (rh, rw) != (h, w):
        frames = resize_frames(frames, rh, rw)
    y0, x0 = (rh - height) // 2, (rw - width) // 2
    return frames[:, y0 : y0 + height, x0 : x0 + width]


def cover_crop_tensor(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`cover_crop` of a float (C, T, h, w) tensor in [-1, 1] -> (C, T, H, W), clamped to [-1, 1]."""
    if tuple(clip.shape[-2:]) == tuple(size):
        return clip
    import torch

    frames = clip.detach().cpu().float().permute(1, 2, 3, 0).numpy()  # (T, h, w, C)
    out = torch.from_numpy(np.ascontiguousarray(cover_crop(frames, *size))).permute(3, 0, 1, 2)  # (C, T, H, W)
    return out.clamp(-1.0, 1.0).to(clip.device, clip.dtype)
