"""Depth maps of every stored frame with Depth-Anything-V2, stored as 16-bit PNGs per frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.contract import codecs
from pipeline.contract.frames import frames_to_tensor
from pipeline.stages.base import Stage, is_active, rejecting_on_error, row_frames
from pipeline.weights import local_weights


@dataclass
class DepthStage(Stage):
    """`frames` (from clip_encode) -> `depth_frames`, `depth_min`, `depth_max`, `depth_model`.

    Runs in an actor pool: `setup` loads model.depth.DepthEstimator once per actor from `model_path`.
    """

    name = "depth"
    reads = ("frames", "n_frames", "height", "width")
    writes = ("depth_frames", "depth_min", "depth_max", "depth_model")

    model_path: str = ""
    model_name: str = "depth-anything-v2"
    frames_per_forward: int = 16
    precision: str = "fp32"  # or "bf16"

    def setup(self) -> None:
        import torch

        from model.depth import DepthEstimator

        self.device = "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"
        path = local_weights(self.model_path, self.storage_options, self.cache_dir)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[self.precision]
        self.model = DepthEstimator.from_pretrained(path, dtype=dtype).to(self.device).eval()

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row) or row.get("frames") is None:
                continue
            with rejecting_on_error(row, "model_error", self.name):
                depth = self._predict(row_frames(row))  # (T, H, W)
                row["depth_frames"], row["depth_min"], row["depth_max"] = codecs.encode_depth(depth)
                row["depth_model"] = self.model_name
        return rows

    def _predict(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) -> raw depth (T, H, W) float32."""
        x = frames_to_tensor(frames).permute(1, 0, 2, 3)  # (T, 3, H, W) in [-1, 1]
        depth = self.model.predict(x.to(self.device), batch_size=self.frames_per_forward)  # (T, 1, H, W)
        return depth[:, 0].cpu().numpy()
