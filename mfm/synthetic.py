"""Synthetic media with known content for the demo (and any test): smooth textures, moving at a known speed.

Everything is deterministic for a seed and needs no data or network.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.contract.codecs import x264_options


def texture(height: int, width: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """A smooth random RGB texture (H, W, 3) uint8 stretched to full contrast (sharp for a blur filter,
    trackable for optical flow)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    lo, hi = smooth.min(), smooth.max()
    return ((smooth - lo) / (hi - lo) * 255).astype(np.uint8)


def moving_frames(
    n_frames: int,
    height: int,
    width: int,
    speed: tuple[float, float] = (2.0, 0.0),
    seed: int = 0,
    sigma: float = 2.0,
) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of a texture (smoothed by `sigma` px) translating by `speed` = (dx, dy)
    px/frame. Sharpness: sigma 1 gives a Laplacian variance of about 600, sigma 2 about 50."""
    dx, dy = speed
    pad_x, pad_y = int(np.ceil(abs(dx) * n_frames)) + 2, int(np.ceil(abs(dy) * n_frames)) + 2
    canvas = texture(height + pad_y, width + pad_x, seed, sigma)
    frames = []
    for i in range(n_frames):
        ox = i * dx if dx >= 0 else pad_x - 2 + i * dx
        oy = i * dy if dy >= 0 else pad_y - 2 + i * dy
        shift = np.float32([[1, 0, -ox], [0, 1, -oy]])
        frames.append(cv2.warpAffine(canvas, shift, (width, height), flags=cv2.INTER_LINEAR))
    return np.stack(frames)


def transition_frames(
    shots: list[int], dissolves: dict[int, int] | None = None, height: int = 108, width: int = 192,
    speed: tuple[float, float] = (1.5, 0.0), seed: int = 0,
) -> np.ndarray:
    """Frames (T, H, W, 3) of consecutive panning shots of different textures, `shots` frames each.

    Between shot k and k+1 the cut is hard (shot k+1 starts at frame sum(shots[:k+1])) unless
    `dissolves[k] = d`: then the last `d` frames of shot k cross-dissolve into shot k+1, weight
    (j + 1) / (d + 1) on the new shot at dissolve frame j. One shot is one continuous pan.
    """
    dissolves = dissolves or {}
    rng = np.random.default_rng(seed)
    clips = []
    for k, n in enumerate(shots):  # each shot: its own texture, scale and colour cast, like a new scene
        frames = moving_frames(n + dissolves.get(k - 1, 0), height, width, speed, seed + k, sigma=3.0 + 3 * (k % 3))
        tint = rng.uniform(0, 255, 3).astype(np.float32)
        clips.append(0.55 * frames + 0.45 * tint)
    out = clips[0]
    for k, nxt in enumerate(clips[1:]):
        d = dissolves.get(k, 0)
        if d:
            w = (np.arange(1, d + 1, dtype=np.float32) / (d + 1))[:, None, None, None]
            out[-d:] = out[-d:] * (1 - w) + nxt[:d] * w
        out = np.concatenate([out, nxt[d:]])
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 24.0, crf: int = 12) -> Path:
    """uint8 frames (T, H, W, 3) RGB, even H and W -> H.264 mp4 at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, h, w, _ = frames.shape
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = x264_options(crf, "veryfast", g="12")
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: str | Path, size: tuple[int, int] = (96, 128), seed: int = 0) -> Path:
    """A textured still (PNG or JPEG by suffix); size = (H, W)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), texture(*size, seed=seed, sigma=1.5)[..., ::-1])
    return path


def draw_text(frame: np.ndarray, text: str, xy: tuple[int, int], size: int = 24, plate: bool = True) -> np.ndarray:
    """A copy of an RGB frame (H, W, 3) with black `text` at `xy` (left, top), on a white plate when `plate`
    (PIL's bundled font: no font files needed)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    if plate:
        x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
        draw.rectangle((x0 - 4, y0 - 4, x1 + 4, y1 + 4), fill=(255, 255, 255))
    draw.text(xy, text, fill=(0, 0, 0), font=font)
    return np.asarray(image).copy()
