"""Reading sources: fetch through fsspec, probe with PyAV (ops/source_pass.py decodes them, once).

Every failure becomes a `MediaError` whose `kind` is one of the contract's `tables.ERROR_KINDS`, so a bad input is
recorded in `sources` with its reason instead of stopping the job.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class MediaError(Exception):
    """A source that cannot be used; `kind` is one of tables.ERROR_KINDS."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def media_type_of(uri: str) -> str:
    """"image" for image file suffixes, else "video"."""
    return "image" if Path(uri.split("?")[0]).suffix.lower() in IMAGE_EXTENSIONS else "video"


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str, storage_options: dict[str, Any] | None, cache_dir: str) -> str:
    """A local file with the bytes of `uri`: local paths as they are, remote files fetched once per node."""
    import fsspec

    try:
        if is_local(uri):
            path = uri.removeprefix("file://")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no such file: {path}")
            return path
        target = Path(cache_dir) / (hashlib.sha256(uri.encode()).hexdigest()[:32] + Path(uri).suffix)
        if not target.exists():  # several stages on one node share the fetched copy
            target.parent.mkdir(parents=True, exist_ok=True)
            fs, remote = fsspec.core.url_to_fs(uri, **(storage_options or {}))
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
            os.close(fd)
            fs.get_file(remote, tmp)
            os.replace(tmp, target)  # atomic: a half-fetched file is never seen
        return str(target)
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - any storage failure is "unreadable" for this source
        raise MediaError("unreadable", f"{uri}: {type(exc).__name__}: {exc}") from exc


def fit_size(width: int, height: int, max_side: int, multiple: int = 2) -> tuple[int, int]:
    """(width, height) scaled down to fit `max_side`, rounded to `multiple` (never up-scaled)."""
    scale = min(1.0, max_side / max(width, height))
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return w, h


# ---------------------------------------------------------------------------------------------------------
# Probe
# ---------------------------------------------------------------------------------------------------------


def probe(path: str, media_type: str) -> dict[str, Any]:
    """-> {size_bytes, container, codec, fps, n_frames, width, height, duration_s}; raises MediaError."""
    size = os.path.getsize(path)
    if size == 0:
        raise MediaError("empty", f"{path} has 0 bytes")
    info = _probe_image(path) if media_type == "image" else _probe_video(path)
    return {"size_bytes": size, **info}


def _probe_image(path: str) -> dict[str, Any]:
    frame = read_image(path)
    h, w = frame.shape[:2]
    return {"container": Path(path).suffix.lstrip(".").lower(), "codec": "image", "fps": 0.0,
            "n_frames": 1, "width": w, "height": h, "duration_s": 0.0}  # fmt: skip


def _probe_video(path: str) -> dict[str, Any]:
    import av

    try:
        container = av.open(path)
    except av.error.FFmpegError as exc:
        raise MediaError(_open_error_kind(exc), f"{path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise MediaError("not_media", f"{path}: no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise MediaError("unsupported_codec", f"{path}: no decoder for its video stream")
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        width, height = stream.codec_context.width, stream.codec_context.height
        if fps <= 0 or width <= 0 or height <= 0:
            raise MediaError("decode_error", f"{path}: no frame rate or frame size ({fps} fps, {width}x{height})")
        n_frames = int(stream.frames or 0)
        if n_frames == 0:  # containers without a frame count: count packets (no decoding)
            n_frames = sum(1 for p in container.demux(stream) if p.size)
        duration = float(stream.duration * stream.time_base) if stream.duration else (n_frames / fps if fps else 0.0)
        return {"container": container.format.name.split(",")[0], "codec": stream.codec_context.name,
                "fps": fps, "n_frames": n_frames, "width": width, "height": height, "duration_s": duration}  # fmt: skip


def _open_error_kind(exc: Exception) -> str:
    text = str(exc).lower()
    if "moov atom not found" in text or "end of file" in text:
        return "truncated"
    if "no such file" in text or "protocol not found" in text or "permission" in text:
        return "unreadable"
    return "not_media"


# ---------------------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------------------


def read_image(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB, optionally resized to size=(W, H)."""
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError("not_media", f"{path}: not a readable image")
    if size and (bgr.shape[1], bgr.shape[0]) != size:
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return bgr[..., ::-1].copy()
