"""Synthetic media with known content, written as real H.264 mp4 files (PyAV libx264); reusable by any test.

- `write_moving_pattern`: a smooth random texture translating at a known speed (px/frame).
- `write_cuts_video`: shots of different textures with hard cuts at known frames.
- `write_blurred_copy`: the same video, Gaussian-blurred frame by frame.
- `write_image`: a textured PNG/JPEG still.
- `write_broken_zoo`: zero bytes, truncated, not a video, unsupported codec, unreadable URL.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from mfm import synthetic

SIGMA = 1.0  # texture smoothing: sharp enough (Laplacian variance ~ 700) to pass the paper's blur threshold of 200


def texture(height: int, width: int, seed: int = 0, sigma: float = SIGMA) -> np.ndarray:
    return synthetic.texture(height, width, seed, sigma)


def moving_frames(
    n_frames: int, height: int, width: int, speed: tuple[float, float] = (2.0, 0.0), seed: int = 0
) -> np.ndarray:
    return synthetic.moving_frames(n_frames, height, width, speed, seed, sigma=SIGMA)


def write_moving_pattern(
    path: str | Path,
    n_frames: int = 33,
    size: tuple[int, int] = (96, 128),
    speed: tuple[float, float] = (2.0, 0.0),
    fps: float = 24.0,
    seed: int = 0,
) -> Path:
    """mp4 of a texture moving at `speed` = (dx, dy) px/frame; size = (H, W). Motion truth: hypot(dx, dy)."""
    return synthetic.write_video(path, moving_frames(n_frames, *size, speed=speed, seed=seed), fps)


_TINTS = [(255, 40, 40), (40, 255, 40), (40, 40, 255), (255, 255, 40), (255, 40, 255), (40, 255, 255)]


def write_cuts_video(
    path: str | Path,
    n_frames: int = 60,
    cuts: tuple[int, ...] = (20, 41),
    size: tuple[int, int] = (96, 128),
    speed: tuple[float, float] = (1.0, 0.0),
    fps: float = 24.0,
) -> Path:
    """mp4 whose shots start at frame 0 and at each of `cuts` (a hard cut = first frame of a new shot)."""
    bounds = [0, *cuts, n_frames]
    shots = []
    for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        frames = moving_frames(end - start, *size, speed=speed, seed=100 + k)
        tint = np.array(_TINTS[k % len(_TINTS)], np.float32)
        shots.append((0.7 * frames + 0.3 * tint).astype(np.uint8))
    return synthetic.write_video(path, np.concatenate(shots), fps)


def write_blurred_copy(src: str | Path, dst: str | Path, sigma: float = 4.0) -> Path:
    """A Gaussian-blurred copy of the video at `src` (same frames, fps and size)."""
    with av.open(str(src)) as container:
        fps = float(container.streams.video[0].average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])
    return synthetic.write_video(dst, blurred, fps)


def write_image(path: str | Path, size: tuple[int, int] = (96, 128), seed: int = 0) -> Path:
    """A textured still (PNG or JPEG by suffix)."""
    path = Path(path)
    cv2.imwrite(str(path), texture(*size, seed=seed)[..., ::-1])
    return path


def write_broken_zoo(folder: str | Path, good_video: str | Path) -> dict[str, tuple[str, str]]:
    """Broken inputs next to a good video -> {name: (uri, expected `sources.error_kind`)}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good = Path(good_video).read_bytes()
    zoo: dict[str, tuple[str, str]] = {}

    (folder / "zero_bytes.mp4").write_bytes(b"")
    zoo["zero_bytes"] = (str(folder / "zero_bytes.mp4"), "empty")

    # faststart: the index is whole but the frames stop at 40% of the file
    (folder / "truncated.mp4").write_bytes(good[: int(len(good) * 0.4)])
    zoo["truncated"] = (str(folder / "truncated.mp4"), "truncated")

    (folder / "not_a_video.mp4").write_text("this is a text file, not a video\n" * 20)
    zoo["not_a_video"] = (str(folder / "not_a_video.mp4"), "not_media")

    # an unknown sample entry (fourcc) in place of H.264's avc1: no decoder exists for it
    assert good.count(b"avc1") >= 1
    (folder / "unsupported_codec.mp4").write_bytes(good.replace(b"avc1", b"zq9x"))
    zoo["unsupported_codec"] = (str(folder / "unsupported_codec.mp4"), "unsupported_codec")

    zoo["missing_file"] = (str(folder / "no_such_dir" / "missing.mp4"), "unreadable")
    zoo["unknown_protocol"] = ("nosuchproto://bucket/clip.mp4", "unreadable")
    return zoo
