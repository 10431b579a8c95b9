"""The stored clip: the frames shot_split decoded, encoded once (H.264 mp4 / PNG)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.contract import codecs, tables
from pipeline.ops import video_devices
from pipeline.stages.base import Stage, is_active, rejecting_on_error, row_frames


@dataclass
class ClipEncodeStage(Stage):
    """Passed clip rows -> `video` bytes; `frames` stay on the row for the model stages after it when
    `keep_frames`, else they are dropped here (also from rejected rows), so they go no further."""

    name = "clip_encode"
    reads = ("frames", "media_type", "fps")
    writes = ("video", "video_format", "frames")

    crf: int = 18
    preset: str = "veryfast"
    threads: int = 1  # x264 threads: what the task holds (build_stages: its CPUs, rounded up)
    keep_frames: bool = False
    encoder: str = "libx264"  # auto | libx264 | h264_nvenc: ops/video_devices.py, settled once per process

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        encoder = video_devices.h264_encoder(self.encoder)
        for row in rows:
            if not is_active(row):
                row.pop("frames", None)
                continue
            with rejecting_on_error(row, "decode_error", self.name):
                frames = row_frames(row)  # (T, H, W, 3)
                if row["media_type"] == "image":
                    row["video"], row["video_format"] = codecs.encode_image(frames[0]), tables.VIDEO_FORMAT_PNG
                else:
                    row["video"] = codecs.encode_video(frames, row["fps"], self.crf, self.preset, self.threads,
                                                       encoder)
                    row["video_format"] = tables.VIDEO_FORMAT_MP4
            if not self.keep_frames or not is_active(row):
                row.pop("frames", None)
        return rows
