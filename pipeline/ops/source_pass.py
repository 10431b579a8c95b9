"""One decode of a video source: each frame once, at the stored size for the clips and at the detector's scan
size for shot detection, cut into clip windows as soon as the detector has decided them.

Shot detectors (`shots.HsvCutDetector`, `transnet.TransNetDetector`) take frames in chunks and say up to which
frame their cuts and transitions are final (the frontier). A window is final when its shot has ended before
the frontier or it is a full `max_frames` window; its frames leave the buffer with it, so memory holds at most
one window, the detector's look-ahead and one chunk of stored-size frames, whatever the source's length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pipeline.contract.codecs import video_frames
from pipeline.ops import shots
from pipeline.ops.media import MediaError


class ShotDetector(Protocol):
    def push(self, frames: np.ndarray) -> None: ...

    def decided(self, final: bool) -> tuple[int, list[int], list[tuple[int, int]]]: ...


class WholeSource:
    """No shot detection (edit pairs): one shot, every frame decided as soon as it is decoded."""

    def __init__(self) -> None:
        self.n_frames = 0

    def push(self, frames: np.ndarray) -> None:
        self.n_frames += len(frames)

    def decided(self, final: bool) -> tuple[int, list[int], list[tuple[int, int]]]:
        return self.n_frames, [], []


@dataclass
class SourcePass:
    """Decode `path` once and yield (window, uint8 (T, H, W, 3) frames at `stored_size`) in source order."""

    path: str
    stored_size: tuple[int, int]  # (W, H)
    scan_size: tuple[int, int]  # (W, H) the detector reads
    detector: ShotDetector
    min_frames: int
    max_frames: int
    expected_frames: int | None = None  # the container's count: fewer decoded is "truncated"
    keep_short: bool = False  # frames for windows shorter than min_frames too (score-only runs)
    threaded: bool = False  # FFmpeg's decode threads: for a task that holds more than one core
    hwaccel: Any = None  # a PyAV HWAccel: decode on the GPU (NVDEC, ops/video_devices.py)
    chunk: int = 32  # frames handed to the detector at a time

    def __post_init__(self) -> None:
        self.n_frames = 0
        self.n_shots = 0
        self._frames: list[Any] = []  # decoded PyAV frames from index `_base` on
        self._base = 0
        self._next = 0  # every window before this frame has been yielded

    @property
    def buffered_frames(self) -> int:
        """Decoded frames held now: at most one window, the detector's look-ahead and one chunk."""
        return len(self._frames)

    def windows(self) -> Iterator[tuple[shots.Window, np.ndarray | None]]:
        """Windows too short to keep come with None frames (unless `keep_short`); MediaError when decoding
        stops early or fewer frames decode than the container says."""
        import av

        sw, sh = self.scan_size
        small: list[np.ndarray] = []
        try:
            for frame in video_frames(self.path, self.threaded, self.hwaccel):
                self._frames.append(frame)
                small.append(frame.to_ndarray(width=sw, height=sh, format="rgb24"))
                self.n_frames += 1
                if len(small) == self.chunk:
                    self.detector.push(np.stack(small))  # (chunk, sh, sw, 3)
                    small = []
                    yield from self._ready(final=False)
        except av.error.FFmpegError as exc:
            raise MediaError("truncated", f"{self.path}: decoding stopped after {self.n_frames} frames: {exc}") from exc
        if self.n_frames == 0:
            raise MediaError("decode_error", f"{self.path}: no frame could be decoded")
        if self.expected_frames and self.n_frames < self.expected_frames - 1:
            raise MediaError("truncated", f"{self.path}: {self.n_frames} frames decoded, the container says "
                                          f"{self.expected_frames}")  # fmt: skip
        if small:
            self.detector.push(np.stack(small))
        yield from self._ready(final=True)

    def _ready(self, final: bool) -> Iterator[tuple[shots.Window, np.ndarray | None]]:
        frontier, cuts, transitions = self.detector.decided(final)
        spans = shots.shots_between(frontier, cuts, transitions)
        if final:
            self.n_shots = len(spans)
        for window in shots.shot_windows(spans, self.min_frames, self.max_frames):
            if window.start < self._next:
                continue
            if not (final or window.end < frontier or window.end - window.start == self.max_frames):
                break  # the shot may go on past the frontier
            frames = None
            if window.long_enough or self.keep_short:
                w, h = self.stored_size
                decoded = self._frames[window.start - self._base : window.end - self._base]
                frames = np.stack([f.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
                                   for f in decoded])  # (T, H, W, 3)  # fmt: skip
            self._next = window.end
            yield window, frames
        drop = self._next - self._base  # no later window starts before these
        del self._frames[:drop]
        self._base += drop
