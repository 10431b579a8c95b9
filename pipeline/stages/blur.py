"""Blur score of each clip: mean Laplacian variance over frames sampled from its stored-size frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.ops import blur
from pipeline.stages.base import Stage, is_active, rejecting_on_error, row_frames


@dataclass
class BlurStage(Stage):
    """Clip rows -> `blur_score` over `n_frames` frames spread over the clip (the frames shot_split decoded)."""

    name = "blur"
    reads = ("frames",)
    writes = ("blur_score",)

    n_frames: int = 5

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row):
                continue
            with rejecting_on_error(row, "decode_error", self.name):
                frames = row_frames(row)  # (T, H, W, 3)
                row["blur_score"] = blur.blur_score(frames[blur.sample_indices(0, len(frames), self.n_frames)])
        return rows
