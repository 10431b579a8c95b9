"""Blur score of each clip: mean Laplacian variance over frames sampled at the source size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.ops import blur, media
from pipeline.stages.base import Stage, is_active, rejecting_on_error


@dataclass
class BlurStage(Stage):
    """Clip rows -> `blur_score` (decord reads `n_frames` sampled frames; images read whole)."""

    name = "blur"
    reads = ("source_uri", "media_type", "frame_start", "frame_end")
    writes = ("blur_score",)

    n_frames: int = 5

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row):
                continue
            with rejecting_on_error(row, "decode_error", self.name):
                row["blur_score"] = blur.blur_score(self._frames(row))
        return rows

    def _frames(self, row: dict[str, Any]):
        path = media.local_path(row["source_uri"], self.storage_options, self.cache_dir)
        if row["media_type"] == "image":
            return media.read_image(path)[None]  # (1, H, W, 3)
        indices = blur.sample_indices(row["frame_start"], row["frame_end"], self.n_frames)
        return media.read_frames(path, indices)  # (N, H, W, 3)
