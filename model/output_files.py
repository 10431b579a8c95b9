"""Writing samples: mp4 for videos, png for images, and the float frames as safetensors (key `frames`)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from model.pipeline import PipelineOutput
from model.tasks import Task
from pipeline.contract.codecs import encode_video

FRAMES_KEY = "frames"  # the float frames' key in a .safetensors output


def media_suffix(task: Task) -> str:
    return ".mp4" if task.is_video else ".png"


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) in [0, 1] -> uint8, rounded."""
    return torch.round(frames.clamp(0.0, 1.0) * 255).to(torch.uint8)


def write_media(frames: torch.Tensor, path: str | Path, fps: float) -> Path:
    """Frames (T, H, W, 3) in [0, 1] -> mp4 (T > 1) or png (T == 1), written atomically (a partial file never
    has the final name, so a resumed run can trust any file it finds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = to_uint8(frames).numpy()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix == ".png":
        if rgb.shape[0] != 1:
            raise ValueError(f"{path}: a png holds one frame; got {rgb.shape[0]} (write .mp4)")
        Image.fromarray(rgb[0]).save(tmp)
    elif path.suffix == ".mp4":
        tmp.write_bytes(encode_video(rgb, fps))
    else:
        raise ValueError(f"{path}: output must end in .mp4 or .png")
    tmp.replace(path)
    return path


def write_frames(frames: torch.Tensor, path: str | Path) -> Path:
    """Float frames (T, H, W, 3) in [0, 1] -> `path` (.safetensors) under the key `frames`, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    save_file({FRAMES_KEY: frames.float().contiguous()}, tmp)
    tmp.replace(path)
    return path


def write_output(out: PipelineOutput, path: str | Path, task: Task) -> list[Path]:
    """The sample as mp4/png at `path`; for a `.safetensors` path also the float frames there, with the
    mp4/png beside it."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return [write_media(out.frames, path, out.fps)]
    media = write_media(out.frames, path.with_suffix(media_suffix(task)), out.fps)
    return [write_frames(out.frames, path), media]
