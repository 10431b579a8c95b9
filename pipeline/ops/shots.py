"""Shot boundaries from content changes, and the clip windows cut from each shot.

The content score between consecutive frames is the mean absolute difference of their HSV channels on
small frames (PySceneDetect's ContentDetector). A cut is a frame whose score is at least `threshold` and
at least `ratio` times the mean score of its `window` neighbours on each side (PySceneDetect's
AdaptiveDetector: fast motion raises every score, a cut raises one), and at least `min_shot_frames`
after the previous cut. `shots_between` turns cuts and transition spans (TransNetV2, pipeline/ops/transnet.py)
into shot spans, `shot_windows` cuts those into clip windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np


class Window(NamedTuple):
    """A frame span [start, end) of a source; `long_enough` False marks a too-short remainder or shot."""

    start: int
    end: int
    long_enough: bool


def content_scores(frames: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """RGB frames (h, w, 3) uint8 -> (score of frame i vs frame i-1 for i >= 1 (score[0] = 0), frame count).

    The score is the mean over pixels and H, S, V of the absolute change; hue is an angle (0-179 in
    OpenCV), so its change is taken around the circle and rescaled to 0-255 like S and V.
    """
    import cv2

    scores, prev = [0.0], None
    n = 0
    for frame in frames:
        hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV).astype(np.int16)
        if prev is not None:
            delta = np.abs(hsv - prev)
            hue = np.minimum(delta[..., 0], 180 - delta[..., 0]) * (255.0 / 90.0)
            scores.append(float((hue.mean() + delta[..., 1].mean() + delta[..., 2].mean()) / 3.0))
        prev, n = hsv, n + 1
    return np.asarray(scores[:n], dtype=np.float32), n


def detect_cuts(
    scores: np.ndarray, threshold: float, ratio: float, min_shot_frames: int, window: int = 2
) -> list[int]:
    """First frame of every new shot (never 0), from `content_scores`."""
    cuts: list[int] = []
    last = 0
    for i in np.flatnonzero(scores >= threshold):
        neighbours = np.concatenate([scores[max(1, i - window) : i], scores[i + 1 : i + 1 + window]])
        local = float(neighbours.mean()) if len(neighbours) else 0.0
        if scores[i] >= ratio * local and i - last >= min_shot_frames:
            cuts.append(int(i))
            last = int(i)
    return cuts


def shots_between(
    n_frames: int, cuts: Sequence[int] = (), transitions: Sequence[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """Shot spans [start, end) of a source of `n_frames`: split at each cut (a shot's first frame) and with
    every transition span [start, end) left out of all shots."""
    keep = np.ones(n_frames, dtype=bool)
    for start, end in transitions:
        keep[max(0, start) : min(n_frames, end)] = False
    bounds = sorted({0, n_frames, *[c for c in cuts if 0 < c < n_frames]})
    spans = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep[lo:hi].astype(np.int8), [0]])))
        spans += [(lo + int(a), lo + int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return spans


def shot_windows(spans: list[tuple[int, int]], min_frames: int, max_frames: int) -> list[Window]:
    """Cut each shot into consecutive windows of `max_frames`; a shot or remainder shorter than `min_frames`
    becomes a window marked too short, so every frame of every shot is in exactly one window."""
    windows = []
    for shot_start, shot_end in spans:
        for start in range(shot_start, shot_end, max_frames):
            end = min(start + max_frames, shot_end)
            windows.append(Window(start, end, end - start >= min_frames))
    return windows


def clip_windows(n_frames: int, cuts: list[int], min_frames: int, max_frames: int) -> list[Window]:
    """`shot_windows` of the shots split at `cuts`: every frame of the source is in exactly one window."""
    return shot_windows(shots_between(n_frames, cuts), min_frames, max_frames)
