"""Pass / reject from the scores: rejects stay in the table with their reasons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.stages.base import Stage, is_active, reject


@dataclass
class FilterStage(Stage):
    """`blur_score` < blur_threshold -> "too_blurry"; `motion_score` < motion_threshold -> "low_motion".

    Images are not judged on motion. Edit-pair halves are scored but not rejected on scores: they are
    curated as pairs upstream, and rejecting one half would orphan the other. `score_only` rejects nothing.
    """

    name = "filter"
    reads = ("blur_score", "motion_score", "media_type", "role")
    writes = ("passed", "reject_reason")

    blur_threshold: float = 200.0
    motion_threshold: float = 5.0
    score_only: bool = False

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row) or self.score_only or row["role"] != "clip":
                continue
            if row.get("blur_score") is not None and row["blur_score"] < self.blur_threshold:
                reject(row, "too_blurry")
            motion = row.get("motion_score")
            if row["media_type"] == "video" and motion is not None and motion < self.motion_threshold:
                reject(row, "low_motion")
        return rows
