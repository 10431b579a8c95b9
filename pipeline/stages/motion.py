"""Motion score of each clip from the frame pairs `MotionFramesStage` decoded (motion_frames.py).

RAFT runs in an actor pool that loads the weights once (on a GPU when the stage declares one); OpenCV
Farneback runs as CPU tasks. Both give the mean flow magnitude in px/frame at the analysis size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.ops import motion
from pipeline.stages.base import Stage, is_active, rejecting_on_error
from pipeline.weights import local_weights


@dataclass
class MotionStage(Stage):
    """`motion_pairs` -> `motion_score` (px/frame) and `motion_method`; images get 0 and "image"."""

    name = "motion"
    reads = ("motion_pairs", "motion_pairs_shape", "media_type")
    writes = ("motion_score", "motion_method")

    backend: str = "farneback"  # "farneback", "raft_small" or "raft_large"
    raft_weights: str | None = None
    flow_updates: int = 12
    pair_gap: int = 1

    def __post_init__(self) -> None:
        if self.backend != "farneback" and self.backend not in motion.RAFT_VARIANTS:
            raise ValueError(f"motion backend {self.backend!r} is not farneback or one of {motion.RAFT_VARIANTS}")
        super().__post_init__()
        self._raft: motion.RaftMotion | None = None

    @property
    def loads_model(self) -> bool:
        return self.backend != "farneback"

    def setup(self) -> None:
        if self.backend == "farneback":
            return
        import torch

        device = "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"
        weights = local_weights(self.raft_weights, self.storage_options, self.cache_dir) if self.raft_weights else None
        self._raft = motion.RaftMotion(self.backend, weights, device, self.flow_updates)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            pairs_bytes, shape = row.pop("motion_pairs", None), row.pop("motion_pairs_shape", None)
            if not is_active(row):
                continue
            if row["media_type"] == "image":
                row["motion_score"], row["motion_method"] = 0.0, "image"
                continue
            if pairs_bytes is None:  # shorter than one pair
                row["motion_score"], row["motion_method"] = 0.0, self.backend
                continue
            pairs = np.asarray(pairs_bytes if isinstance(pairs_bytes, np.ndarray) else
                               np.frombuffer(pairs_bytes, np.uint8).reshape(shape))  # (N, 2, h, w, 3)
            with rejecting_on_error(row, "model_error", f"motion ({self.backend})"):
                if self._raft is None:
                    score = motion.farneback_motion(pairs, self.pair_gap)
                else:
                    score = self._raft(pairs, self.pair_gap)
                row["motion_score"], row["motion_method"] = score, self.backend
        return rows
