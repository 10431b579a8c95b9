"""Optional: VAE latents of each passed video clip at every configured resolution bucket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.geometry import coded_length
from pipeline.contract import codecs
from pipeline.contract.buckets import parse_size
from pipeline.contract.frames import cover_crop, frames_to_tensor
from pipeline.stages.base import Stage, is_active, rejecting_on_error, row_frames
from pipeline.weights import local_weights


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
            frames = frames[: coded_length(len(frames))]  # CogVideoX: 1 or 4k+1 frames
            with rejecting_on_error(row, "model_error", self.name):
                row["vae_latents"] = [self._encode(frames, bucket) for bucket in self.buckets]
                row["vae_model"] = self.model_name
        return rows

    def _encode(self, frames: np.ndarray, bucket: str) -> dict[str, Any]:
        import torch

        height, width = parse_size(bucket)
        video = frames_to_tensor(cover_crop(frames, height, width))[None]  # (1, 3, T, h, w)
        with torch.inference_mode():
            latents = self.vae.encode(video.to(self.device))[0]  # (16, t, h/8, w/8)
        return codecs.encode_latents(bucket, latents.cpu().numpy())
