"""Optional: VAE latents of each passed video clip at every configured resolution bucket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import schema
from pipeline.stages.base import Stage, is_active, rejecting_on_error
from pipeline.stages.clip_encode import row_frames
from pipeline.weights import local_weights


def fit_bucket(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to cover (height, width), then centre-crop: (T, H, W, 3) -> (T, height, width, 3)."""
    import cv2

    t, h, w, _ = frames.shape
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    y0, x0 = (rh - height) // 2, (rw - width) // 2
    return np.stack([cv2.resize(f, (rw, rh), interpolation=cv2.INTER_AREA)[y0 : y0 + height, x0 : x0 + width]
                     for f in frames])  # fmt: skip


@dataclass
class VaeLatentStage(Stage):
    """`frames` -> `vae_latents` (one entry per bucket "HxW"), `vae_model`; videos use the first 4k+1 frames."""

    name = "vae_latents"
    reads = ("frames", "n_frames", "height", "width")
    writes = ("vae_latents", "vae_model")

    model_path: str = ""
    model_name: str = "cogvideox-vae"
    buckets: tuple[str, ...] = ("480x848",)

    def setup(self) -> None:
        import torch

        from model.vae import VideoVAE

        self.device = "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"
        self.vae = VideoVAE.from_pretrained(local_weights(self.model_path, self.storage_options, self.cache_dir))
        self.vae.to(self.device)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row) or row.get("frames") is None:
                continue
            frames = row_frames(row)
            frames = frames[: (len(frames) - 1) // 4 * 4 + 1]  # CogVideoX: 1 or 4k+1 frames
            with rejecting_on_error(row, "model_error", self.name):
                row["vae_latents"] = [self._encode(frames, bucket) for bucket in self.buckets]
                row["vae_model"] = self.model_name
        return rows

    def _encode(self, frames: np.ndarray, bucket: str) -> dict[str, Any]:
        import torch

        height, width = (int(v) for v in bucket.split("x"))
        video = schema.frames_to_tensor(fit_bucket(frames, height, width))[None]  # (1, 3, T, h, w)
        with torch.inference_mode():
            latents = self.vae.encode(video.to(self.device))[0]  # (16, t, h/8, w/8)
        return schema.encode_latents(bucket, latents.cpu().numpy())
