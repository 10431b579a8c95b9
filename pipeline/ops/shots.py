"""Shot boundaries from content changes, and the clip windows cut from each shot.

The content score between consecutive frames is the mean absolute difference of their HSV channels on
small frames (PySceneDetect's ContentDetector); `HsvCutDetector` scores while the source decodes. A cut
is a frame whose score is at least `threshold` and at least `ratio` times the mean score of its `window`
neighbours on each side (PySceneDetect's AdaptiveDetector: fast motion raises every score, a cut raises
one), and at least `min_shot_frames` after the previous cut. `shots_between` turns cuts and transition
spans (TransNetV2, pipeline/ops/transnet.py) into shot spans, `shot_windows` cuts those into clip windows.
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
    """RGB frames (h, w, 3) uint8 -> (score of frame i vs frame i-1 for i >= 1 (score[0] = 0), frame count)."""
    detector = HsvCutDetector()
    for frame in frames:
        detector.push(frame[None])
    return np.asarray(detector.scores, dtype=np.float32), detector.n_frames


def detect_cuts(
    scores: np.ndarray, threshold: float, ratio: float, min_shot_frames: int, window: int = 2
) -> list[int]:
    """First frame of every new shot (never 0), from `content_scores`."""
    detector = HsvCutDetector(threshold, ratio, min_shot_frames, window)
    detector.scores = [float(s) for s in scores]
    detector.n_frames = len(scores)
    return detector.decided(final=True)[1]


class HsvCutDetector:
    """Streaming content-change cuts: `push` small frames in order, `decided` says which cuts are final.

    The content score of a frame is the mean over pixels and H, S, V of its absolute change from the frame
    before; hue is an angle (0-179 in OpenCV), so its change is taken around the circle and rescaled to 0-255
    like S and V. A cut at frame i needs the scores of `window` frames after it, so frames up to
    n - window are decided while the video is still being decoded.
    """

    def __init__(self, threshold: float = 15.0, ratio: float = 3.0, min_shot_frames: int = 8, window: int = 2):
        self.threshold, self.ratio, self.min_shot_frames, self.window = threshold, ratio, min_shot_frames, window
        self.scores: list[float] = []
        self.n_frames = 0
        self.cuts: list[int] = []
        self._prev: np.ndarray | None = None  # HSV of the last frame pushed
        self._checked = 1  # frames below this have a final cut decision

    def push(self, frames: np.ndarray) -> None:
        """The next (n, h, w, 3) uint8 RGB frames."""
        import cv2

        if not len(frames):
            return
        n, h, w, _ = frames.shape
        hsv = cv2.cvtColor(np.ascontiguousarray(frames).reshape(n * h, w, 3), cv2.COLOR_RGB2HSV)
        hsv = hsv.reshape(n, h, w, 3).astype(np.int16)  # cvtColor is per pixel: one call for the chunk
        prev = hsv if self._prev is None else np.concatenate([self._prev[None], hsv])
        delta = np.abs(np.diff(prev, axis=0))  # (n or n-1, h, w, 3)
        hue = np.minimum(delta[..., 0], 180 - delta[..., 0]) * (255.0 / 90.0)
        scores = (hue.mean(axis=(1, 2)) + delta[..., 1].mean(axis=(1, 2)) + delta[..., 2].mean(axis=(1, 2))) / 3.0
        self.scores += ([0.0] if self._prev is None else []) + scores.tolist()
        self._prev, self.n_frames = hsv[-1], self.n_frames + n

    def decided(self, final: bool) -> tuple[int, list[int], list[tuple[int, int]]]:
        """-> (frontier, cuts, transitions): the cuts below `frontier` are final (all of them when `final`)."""
        frontier = self.n_frames if final else max(0, self.n_frames - self.window)
        scores = np.asarray(self.scores)
        for i in np.flatnonzero(scores[self._checked : frontier] >= self.threshold) + self._checked:
            neighbours = np.concatenate([scores[max(1, i - self.window) : i], scores[i + 1 : i + 1 + self.window]])
            local = float(neighbours.mean()) if len(neighbours) else 0.0
            last = self.cuts[-1] if self.cuts else 0
            if scores[i] >= self.ratio * local and i - last >= self.min_shot_frames:
                self.cuts.append(int(i))
        self._checked = max(self._checked, frontier)
        return frontier, list(self.cuts), []


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
