"""The stored clip: frames read from the source at the stored size and re-encoded (H.264 mp4 / PNG)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.contract import codecs, tables
from pipeline.ops import media
from pipeline.stages.base import Stage, is_active, rejecting_on_error


@dataclass
class ClipEncodeStage(Stage):
    """Passed clip rows -> `video` bytes (+ `frames` for the model stages after it when `keep_frames`)."""

    name = "clip_encode"
    reads = ("source_uri", "media_type", "frame_start", "frame_end", "width", "height", "fps")
    writes = ("video", "video_format", "frames")

    crf: int = 18
    preset: str = "veryfast"
    keep_frames: bool = False

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row):
                continue
            with rejecting_on_error(row, "decode_error", self.name):
                frames = self._read(row)  # (T, H, W, 3)
                if row["media_type"] == "image":
                    row["video"], row["video_format"] = codecs.encode_image(frames[0]), tables.VIDEO_FORMAT_PNG
                else:
                    row["video"] = codecs.encode_video(frames, row["fps"], self.crf, self.preset)
                    row["video_format"] = tables.VIDEO_FORMAT_MP4
                if self.keep_frames:
                    row["frames"] = np.ascontiguousarray(frames).tobytes()
        return rows

    def _read(self, row: dict[str, Any]) -> np.ndarray:
        path = media.local_path(row["source_uri"], self.storage_options, self.cache_dir)
        size = (row["width"], row["height"])
        if row["media_type"] == "image":
            return media.read_image(path, size)[None]
        return media.read_frames(path, list(range(row["frame_start"], row["frame_end"])), size)


def row_frames(row: dict[str, Any]) -> np.ndarray:
    """The `frames` column of a row -> uint8 (T, H, W, 3)."""
    return np.frombuffer(row["frames"], np.uint8).reshape(row["n_frames"], row["height"], row["width"], 3)
