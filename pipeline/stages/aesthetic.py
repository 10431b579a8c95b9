"""LAION aesthetic score and the CLIP image embedding of a few sampled frames per clip (model/aesthetic.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.stages.base import Stage, is_active, rejecting_on_error, row_frames
from pipeline.weights import local_weights


@dataclass
class AestheticStage(Stage):
    """`frames` -> `aesthetic` (mean LAION score of `n_frames` sampled frames), `clip_emb`, `clip_model`.

    `clip_emb` is the L2-normalised mean of the sampled frames' unit CLIP embeddings (`mfm curate dedup`).
    Runs in an actor pool: `setup` loads model.aesthetic.AestheticPredictor once per actor.
    """

    name = "aesthetic"
    reads = ("frames", "n_frames", "height", "width")
    writes = ("aesthetic", "clip_emb", "clip_model")

    model_path: str = ""  # transformers CLIP vision folder
    head_path: str = ""  # LAION linear head (.pth / .safetensors)
    model_name: str = "clip-vit-l-14"
    n_frames: int = 4

    def setup(self) -> None:
        import torch

        from model.aesthetic import AestheticPredictor

        device = "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"
        clip = local_weights(self.model_path, self.storage_options, self.cache_dir)
        head = local_weights(self.head_path, self.storage_options, self.cache_dir)
        self.predictor = AestheticPredictor(clip, head, device)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row) or row.get("frames") is None:
                continue
            with rejecting_on_error(row, "model_error", self.name):
                score, emb = self._score(sample_frames(row_frames(row), self.n_frames))
                row["aesthetic"], row["clip_emb"], row["clip_model"] = score, emb, self.model_name
        return rows

    def _score(self, frames: np.ndarray) -> tuple[float, list[float]]:
        """uint8 (N, H, W, 3) -> (mean aesthetic score, unit mean CLIP embedding)."""
        import torch
        import torch.nn.functional as F

        from model.clip_image import clip_pixels, image_embeds

        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
        emb = image_embeds(self.predictor.clip, clip_pixels(x))  # (N, D), unit norm
        head = self.predictor.head
        scores = head(emb.to(head.weight.device)).squeeze(-1).cpu()  # (N,)
        return float(scores.mean()), F.normalize(emb.mean(0), dim=0).tolist()


def sample_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """`n` frames evenly spaced over the clip, first and last included (fewer when the clip is shorter)."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))
    return frames[idx]
