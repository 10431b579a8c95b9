"""Dynamic degree: whether a video moves, from RAFT flow between frames sampled at about 8 fps.

VBench (`vbench/dynamic_degree.py`): take every round(fps / 8)-th frame (at least 1), RAFT (raft-things, 20
refinement iterations) on each consecutive pair, replicate-padded to a multiple of 8; a pair's score is the
mean of the largest 5% (int(h * w * 0.05) pixels of the padded frame) of the flow magnitudes. The video is
dynamic when at least round(4 * n / 16) pairs (n: frames sampled) score above 6 * min(H, W) / 256. A set of
videos scores the fraction that are dynamic. RAFT here is torchvision's (`model.raft`), whose `raft_large`
C_T_V1 weights are the same raft-things checkpoint ported.

One addition: RAFT's correlation pyramid needs frames of at least 128 px, so smaller frames (which VBench
cannot score) are upscaled by the integer factor s that reaches 128 and the flow is divided by s.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.vbench.base import Dimension, VideoScore, pad_to_multiple, weight_path
from model.raft import load_raft

FLOW_UPDATES = 20
TOP_FRACTION = 0.05
RAFT_MIN_SIDE = 128  # torchvision RAFT: feature maps (1/8 of the frame) of at least 16


def sample_interval(fps: float) -> int:
    """Every how many frames VBench samples: round(fps / 8) (Python's round), at least 1."""
    return max(1, round(fps / 8))


def top_flow_magnitude(flow: torch.Tensor) -> float:
    """Flow (2, H, W) -> mean of the largest int(H * W * 0.05) magnitudes."""
    rad = flow.double().norm(dim=0).flatten()
    k = int(rad.numel() * TOP_FRACTION)
    if k == 0:
        raise ValueError(f"dynamic_degree: frames of {tuple(flow.shape[1:])} are too small for a top-5% flow")
    return float(rad.topk(k).values.mean())


def is_dynamic(pair_scores: list[float], short_side: int, n_frames: int) -> bool:
    """VBench's rule: at least round(4 * n_frames / 16) pairs above 6 * short_side / 256 (and one pair)."""
    threshold = 6.0 * short_side / 256.0
    needed = round(4 * (n_frames / 16.0))
    return len(pair_scores) > 0 and sum(s > threshold for s in pair_scores) >= needed


class DynamicDegree(Dimension):
    """VBench dynamic degree; the video's value is 1.0 (dynamic) or 0.0."""

    name = "dynamic_degree"
    header = "Dynamic↑"
    weights = ("raft",)

    def __init__(self, raft: torch.nn.Module, flow_updates: int = FLOW_UPDATES):
        self.raft, self.flow_updates = raft, flow_updates

    @classmethod
    def load(cls, paths: dict[str, Path], device: str | torch.device = "cpu") -> DynamicDegree:
        return cls(load_raft(None, weight_path(paths, "raft", cls.name)).requires_grad_(False).to(device))

    @torch.no_grad()
    def pair_scores(self, frames: torch.Tensor) -> list[float]:
        """Sampled uint8 frames (N, 3, H, W) -> top-5% flow magnitude of each consecutive pair."""
        device = next(self.raft.parameters()).device
        x = frames.float() / 127.5 - 1.0  # RAFT's [-1, 1] input, (N, 3, H, W)
        up = math.ceil(RAFT_MIN_SIDE / min(x.shape[-2:]))
        if up > 1:  # too small for RAFT: see the module docstring
            x = F.interpolate(x, scale_factor=up, mode="bilinear", align_corners=False)  # (N, 3, sH, sW)
        x, _ = pad_to_multiple(x, 8)  # (N, 3, H8, W8)
        scores = []
        for a, b in zip(x[:-1], x[1:]):
            flow = self.raft(a[None].to(device), b[None].to(device), num_flow_updates=self.flow_updates)[-1]
            scores.append(top_flow_magnitude(flow[0].cpu() / up))  # (2, H8, W8) -> float
        return scores

    def score(self, video: torch.Tensor, fps: float) -> VideoScore:
        frames = video[:: sample_interval(fps)]
        if len(frames) < 2:
            return VideoScore(float("nan"), 0.0)
        moving = is_dynamic(self.pair_scores(frames), min(video.shape[-2:]), len(frames))
        return VideoScore(float(moving))
