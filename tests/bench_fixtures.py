"""Fixtures for the generation and benchmark tests: a tiny pipeline root and a `clips` table built with the
contract's own encoders (pipeline.contract), with known blur / motion scores and frame counts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import torch

from mfm.synthetic import moving_frames
from model.mfm import MFM_CONFIGS, MfM
from model.tiny_pretrained import write_tiny_pretrained
from pipeline.contract import codecs, tables


def randomize(model: MfM, seed: int = 0, std: float = 0.05) -> MfM:
    """Every weight random (a fresh MfM's zero-init output layers make it predict zero whatever its input)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_pipeline(root: Path, seed: int = 0) -> Path:
    """A pipeline root (transformer/ vae/ text_encoder/ tokenizer/ depth/) of tiny random models."""
    write_tiny_pretrained(root, seed)
    randomize(MfM(MFM_CONFIGS["tiny"]), seed).save_pretrained(root / "transformer")
    return root


def clip_row(uri: str, frames: np.ndarray, caption: str, blur: float, motion: float, fps: float = 24.0,
             passed: bool = True, media_type: str = "video") -> dict:
    """One `clips` row (every contract column) for uint8 frames (T, H, W, 3)."""
    t, h, w, _ = frames.shape
    video = codecs.encode_video(frames, fps) if t > 1 else codecs.encode_image(frames[0])
    return {
        "clip_id": tables.clip_id(uri, 0, t), "source_id": tables.source_id(uri), "source_uri": uri,
        "role": "clip", "media_type": media_type, "frame_start": 0, "frame_end": t, "n_frames": t,
        "fps": fps, "duration_s": t / fps, "source_width": w, "source_height": h, "width": w, "height": h,
        "caption": caption, "edit_target_clip_id": None, "edit_instruction": None, "blur_score": blur,
        "motion_score": motion, "motion_method": "farneback", "passed": passed,
        "reject_reason": None if passed else "low_motion", "error": None,
        "video": video if passed else None, "video_format": tables.VIDEO_FORMAT_MP4 if passed else None,
        "depth_frames": None, "depth_min": None, "depth_max": None, "depth_model": None, "text_emb": None,
        "text_emb_tokens": None, "text_emb_dim": None, "text_encoder": None, "vae_latents": None, "vae_model": None,
        "config_hash": "test", "created_at": datetime.now(UTC),
    }  # fmt: skip


def write_clips_table(uri: str | Path, rows: list[dict]) -> str:
    table = pa.Table.from_pylist(rows, schema=tables.CLIPS_SCHEMA)
    lance.write_dataset(table, str(uri), schema=tables.CLIPS_SCHEMA, data_storage_version=tables.LANCE_STORAGE_VERSION)
    return str(uri)


def moving_clips(folder: Path, n: int, frames: int = 33, size: tuple[int, int] = (40, 56)) -> list[dict]:
    """`n` passing clips of textures moving at different speeds (scores as curation would give them)."""
    return [
        clip_row(str(folder / f"src{i}.mp4"), moving_frames(frames, *size, speed=(1.0 + i, 0.5), seed=i),
                 f"a textured wall slides to the right, clip {i}", blur=500.0 + i, motion=6.0 + i)
        for i in range(n)
    ]
