"""Proxies: each stored clip again at the sizes low-resolution training phases crop from.

A 128px training sample cut from a stored 720p clip spends most of its loader time decoding and scaling
pixels it throws away. For each configured phase size this stage stores the clip scaled to cover its nearest
aspect-ratio bucket of that phase (the trainer's buckets, `pipeline.contract.buckets`), with its depth; the trainer
reads the smallest proxy that covers its sample and only crops (trainer/data.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.contract import codecs
from pipeline.contract.buckets import DEFAULT_ASPECT_RATIOS, aspect_buckets, cover_size, nearest_bucket
from pipeline.contract.frames import resize_frames
from pipeline.ops import video_devices
from pipeline.stages.base import Stage, is_active, rejecting_on_error, row_frames


def proxy_sizes(
    height: int, width: int, phases: Sequence[tuple[int, int]], ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS
) -> list[tuple[int, int]]:
    """(H, W) of the proxies of an (height, width) clip, smallest first: per phase size, the cover size of the
    clip's nearest bucket; sizes not smaller than the clip are left out (it is its own best copy there)."""
    sizes = {cover_size(height, width, nearest_bucket(height, width, aspect_buckets(*phase, ratios)))
             for phase in phases}  # fmt: skip
    return sorted((s for s in sizes if s[0] < height and s[1] < width), key=lambda s: s[0] * s[1])


def make_proxies(
    frames: np.ndarray,
    fps: float,
    sizes: Sequence[tuple[int, int]],
    depth: np.ndarray | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    threads: int = 1,
    encoder: str = "libx264",
) -> list[dict[str, Any]]:
    """uint8 (T, H, W, 3) frames (T == 1: an image, stored as PNG) and raw depth (T, H, W) -> one `proxies`
    entry per (h, w) in `sizes`; videos by `encoder` (libx264 or h264_nvenc)."""
    out = []
    for size in sizes:
        small = resize_frames(frames, *size)  # (T, h, w, 3), area-averaged: proxies are smaller
        if len(small) == 1:
            video = codecs.encode_image(small[0])
        else:
            video = codecs.encode_video(small, fps, crf, preset, threads, encoder)
        entry: dict[str, Any] = {"height": size[0], "width": size[1], "video": video,
                                 "depth": None, "depth_min": None, "depth_max": None}  # fmt: skip
        if depth is not None:
            data, lows, highs = codecs.encode_depth_stack(resize_frames(depth.astype(np.float32), *size))
            entry |= {"depth": data, "depth_min": lows, "depth_max": highs}
        out.append(entry)
    return out


@dataclass
class ProxyStage(Stage):
    """`frames` (from clip_encode) and the depth maps, when stored -> `proxies`, one per training phase size."""

    name = "proxies"
    reads = ("frames", "n_frames", "height", "width", "fps", "depth_frames", "depth_min", "depth_max")
    writes = ("proxies",)

    phases: tuple[tuple[int, int], ...] = ((128, 224), (352, 640))  # training phase sizes (H, W)
    aspect_ratios: tuple[float, ...] = DEFAULT_ASPECT_RATIOS
    crf: int = 18
    preset: str = "veryfast"
    threads: int = 1  # x264 threads
    encoder: str = "libx264"  # auto | libx264 | h264_nvenc: ops/video_devices.py, settled once per process

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        encoder = video_devices.h264_encoder(self.encoder)
        for row in rows:
            if not is_active(row) or row.get("frames") is None:
                continue
            sizes = proxy_sizes(row["height"], row["width"], self.phases, self.aspect_ratios)
            if not sizes:
                continue
            with rejecting_on_error(row, "decode_error", self.name):
                depth = None
                if row.get("depth_frames"):
                    depth = codecs.decode_depth(row["depth_frames"], row["depth_min"], row["depth_max"])  # (T, H, W)
                row["proxies"] = make_proxies(row_frames(row), row["fps"] or 0.0, sizes, depth, self.crf, self.preset,
                                              self.threads, encoder)
        return rows
