"""Motion score: mean optical-flow magnitude (px/frame) over sampled frame pairs at a fixed analysis size.

Two backends with one meaning: RAFT (`model.raft`: torchvision `raft_small` / `raft_large`, weights from a local file,
as in the paper) and OpenCV Farneback (CPU, no weights). Rows record which one made the score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.raft import RAFT_VARIANTS, load_raft, save_raft

__all__ = ["RAFT_VARIANTS", "RaftMotion", "analysis_size", "farneback_motion", "load_raft", "pair_starts", "save_raft"]


def pair_starts(start: int, end: int, n_pairs: int, gap: int) -> list[int]:
    """First frames of up to `n_pairs` pairs (i, i + gap) spread evenly over [start, end)."""
    last = end - 1 - gap
    if last < start:
        return []
    count = min(n_pairs, last - start + 1)
    return sorted({int(round(x)) for x in np.linspace(start, last, count)})


def analysis_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(W, H) with the short side `short_side`, both multiples of 8 (RAFT's stride)."""
    scale = short_side / min(width, height)
    return max(8, int(round(width * scale / 8)) * 8), max(8, int(round(height * scale / 8)) * 8)


def farneback_motion(pairs: np.ndarray, gap: int = 1) -> float:
    """Pairs (N, 2, H, W, 3) uint8 RGB -> mean flow magnitude in px/frame (OpenCV Farneback)."""
    import cv2

    means = []
    for first, second in pairs:
        a = cv2.cvtColor(first, cv2.COLOR_RGB2GRAY)
        b = cv2.cvtColor(second, cv2.COLOR_RGB2GRAY)
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # (H, W, 2)
        means.append(float(np.linalg.norm(flow, axis=-1).mean()))
    return float(np.mean(means)) / gap


class RaftMotion:
    """RAFT flow magnitude; build once per worker, call per clip."""

    def __init__(self, variant: str, weights: str | Path | None, device: str = "cpu", flow_updates: int = 12):
        self.model = load_raft(variant, weights).to(device)
        self.device = device
        self.flow_updates = flow_updates

    def __call__(self, pairs: np.ndarray, gap: int = 1) -> float:
        """Pairs (N, 2, H, W, 3) uint8 RGB, H and W multiples of 8 -> mean flow magnitude in px/frame."""
        import torch

        from pipeline.contract.frames import to_signed

        x = to_signed(torch.from_numpy(pairs.copy()).to(self.device))  # (N, 2, H, W, 3)
        x = x.permute(0, 1, 4, 2, 3)  # (N, 2, 3, H, W)
        with torch.inference_mode():
            flow = self.model(x[:, 0], x[:, 1], num_flow_updates=self.flow_updates)[-1]  # (N, 2, H, W)
        return float(flow.norm(dim=1).mean()) / gap
