"""CPU decoding for the motion score: sampled frame pairs at the fixed analysis size (motion.py scores them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.ops import media, motion
from pipeline.stages.base import Stage, is_active, rejecting_on_error


@dataclass
class MotionFramesStage(Stage):
    """Clip rows -> `motion_pairs` uint8 (N, 2, h, w, 3) with h, w from `analysis_short_side`."""

    name = "motion_frames"
    reads = ("source_uri", "media_type", "frame_start", "frame_end", "source_width", "source_height")
    writes = ("motion_pairs", "motion_pairs_shape")

    n_pairs: int = 8
    pair_gap: int = 1
    analysis_short_side: int = 256

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row) or row["media_type"] == "image":
                continue
            starts = motion.pair_starts(row["frame_start"], row["frame_end"], self.n_pairs, self.pair_gap)
            if not starts:  # a clip shorter than one pair has no measurable motion
                continue
            size = motion.analysis_size(row["source_width"], row["source_height"], self.analysis_short_side)
            indices = sorted({i for s in starts for i in (s, s + self.pair_gap)})
            with rejecting_on_error(row, "decode_error", self.name):
                path = media.local_path(row["source_uri"], self.storage_options, self.cache_dir)
                frames = dict(zip(indices, media.read_frames(path, indices, size), strict=True))
                pairs = np.stack([[frames[s], frames[s + self.pair_gap]] for s in starts])  # (N, 2, h, w, 3)
                row["motion_pairs"] = pairs.tobytes()
                row["motion_pairs_shape"] = list(pairs.shape)
        return rows
