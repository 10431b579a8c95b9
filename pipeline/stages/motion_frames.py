"""Frame pairs for the motion score, from the clip's frames at the fixed analysis size (motion.py scores them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.contract.frames import resize_frames
from pipeline.ops import motion
from pipeline.stages.base import Stage, is_active, rejecting_on_error, row_frames


@dataclass
class MotionFramesStage(Stage):
    """Clip rows -> `motion_pairs` uint8 (N, 2, h, w, 3) with h, w from `analysis_short_side`."""

    name = "motion_frames"
    reads = ("frames", "media_type", "n_frames", "source_width", "source_height")
    writes = ("motion_pairs", "motion_pairs_shape")

    n_pairs: int = 8
    pair_gap: int = 1
    analysis_short_side: int = 256

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row) or row["media_type"] == "image":
                continue
            starts = motion.pair_starts(0, row["n_frames"], self.n_pairs, self.pair_gap)
            if not starts:  # a clip shorter than one pair has no measurable motion
                continue
            width, height = motion.analysis_size(row["source_width"], row["source_height"], self.analysis_short_side)
            with rejecting_on_error(row, "decode_error", self.name):
                frames = row_frames(row)  # (T, H, W, 3)
                firsts = resize_frames(frames[starts], height, width)  # (N, h, w, 3)
                seconds = resize_frames(frames[[s + self.pair_gap for s in starts]], height, width)
                pairs = np.stack([firsts, seconds], axis=1)  # (N, 2, h, w, 3)
                row["motion_pairs"] = pairs
                row["motion_pairs_shape"] = list(pairs.shape)
        return rows
