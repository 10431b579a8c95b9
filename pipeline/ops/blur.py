"""Blur score: variance of the Laplacian of grey frames (higher = sharper; the paper rejects below 200)."""

from __future__ import annotations

import numpy as np


def laplacian_variance(frame: np.ndarray) -> float:
    """RGB (H, W, 3) or grey (H, W) uint8 -> variance of its 3x3 Laplacian (cv2.CV_64F)."""
    import cv2

    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def blur_score(frames: np.ndarray) -> float:
    """Mean Laplacian variance over frames (N, H, W, 3)."""
    return float(np.mean([laplacian_variance(f) for f in frames]))


def sample_indices(start: int, end: int, n: int) -> list[int]:
    """`n` frame indices spread evenly over [start, end) (fewer when the span is shorter)."""
    count = max(1, min(n, end - start))
    return sorted({int(round(x)) for x in np.linspace(start, end - 1, count)})
