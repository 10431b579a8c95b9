"""How the contract's columns hold media and arrays: H.264 / PNG video, quantised depth, float16 text
embeddings and VAE latents, each an `encode_*` / `decode_*` pair. Curation writes with these, the trainer and the
benchmark read with them, so a stored value has one meaning."""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.contract.tables import TEXT_MAX_TOKENS

# ---------------------------------------------------------------------------------------------------------
# Stored media: video / image
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            text = cpuinfo.read()
    except OSError:  # not Linux: nothing known, x264 detects for itself
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def x264_options(crf: int, preset: str, threads: int = 1, **more: str) -> dict[str, str]:
    """libx264 options: `threads` (a curation task passes the cores it declares; x264's output is deterministic
    for a given thread count) and, where the CPU has AVX-512, x264's AVX2 code instead: its AVX-512 paths gave
    different bytes for the same frames from one encode to the next on this project's AMD EPYC machines (caught
    by the reproducibility tests); AVX2 repeats exactly."""
    options = {"crf": str(crf), "preset": preset, "threads": str(threads), **more}
    if "avx512bw" in _cpu_flags() and "avx2" in _cpu_flags():
        options["x264-params"] = "asm=avx2"
    return options


# x264's presets -> NVENC's p1 (fastest) .. p7 (best)
NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p4",
                 "medium": "p5", "slow": "p6"}  # fmt: skip


def encoder_options(encoder: str, crf: int, preset: str, threads: int = 1) -> dict[str, str]:
    """The options of `encoder` ("libx264" or "h264_nvenc") for constant quality `crf` at x264 `preset`:
    NVENC takes `crf` as its constant-quality `cq` (variable bit rate, no bit-rate cap)."""
    if encoder == "libx264":
        return x264_options(crf, preset, threads)
    if encoder == "h264_nvenc":
        return {"preset": NVENC_PRESETS[preset], "rc": "vbr", "cq": str(crf), "b": "0"}
    raise ValueError(f"encoder {encoder!r}: not libx264 or h264_nvenc")


def encode_video(frames: np.ndarray, fps: float, crf: int = 18, preset: str = "veryfast", threads: int = 1,
                 encoder: str = "libx264") -> bytes:  # fmt: skip
    """uint8 frames (T, H, W, 3) RGB with even H, W -> H.264 (yuv420p) mp4 bytes, by `encoder` (libx264 or
    h264_nvenc: ops/video_devices.py says which a process has)."""
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even sides, got {h}x{w}")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = encoder_options(encoder, crf, preset, threads)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def encode_image(frame: np.ndarray) -> bytes:
    """uint8 RGB image (H, W, 3) -> PNG bytes."""
    import cv2

    ok, png = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return png.tobytes()


def video_frames(source: bytes | str, threaded: bool = False, hwaccel: Any = None) -> Iterator[Any]:
    """The decoded frames of a video (a file path or the bytes of one), in order, as PyAV `VideoFrame`s: the
    project's one video decoder (`decode_video` and curation's source scan read through it). `threaded`:
    FFmpeg's frame and slice threads; `hwaccel`: a PyAV `HWAccel` (NVDEC: ops/video_devices.py), frames in
    host memory."""
    import av

    with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), hwaccel=hwaccel) as container:
        stream = container.streams.video[0]
        if threaded:
            stream.thread_type = "AUTO"
        yield from container.decode(stream)


def decode_video(
    source: bytes | str, indices: list[int] | None = None, max_frames: int | None = None
) -> np.ndarray:
    """A video (mp4 bytes or file path; PNG bytes for an image) -> uint8 frames (T, H, W, 3) RGB; an image gives
    T == 1. `indices`: only those frames, in that order; `max_frames`: the first ones only. Decoding stops after
    the last frame wanted, and only the frames wanted become RGB."""
    if isinstance(source, bytes) and source[:8] == b"\x89PNG\r\n\x1a\n":
        import cv2

        bgr = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_COLOR)
        frames = bgr[None, ..., ::-1]  # (1, H, W, 3)
        return (frames if indices is None else frames[indices]).copy()
    wanted = None if indices is None else set(indices)
    last = max(indices) if indices is not None else -1 if max_frames is None else max_frames - 1
    picked: dict[int, np.ndarray] = {}
    count = 0
    with contextlib.closing(video_frames(source)) as decoded:
        for i, frame in enumerate(decoded):
            count = i + 1
            if wanted is None or i in wanted:
                picked[i] = frame.to_ndarray(format="rgb24")
            if i == last:
                break
    if indices is None:
        if not picked:
            raise ValueError("the video has no frames")
        return np.stack([picked[i] for i in sorted(picked)])  # (T, H, W, 3)
    missing = sorted(wanted - picked.keys())
    if missing:
        raise ValueError(f"frames {missing[:4]} asked for, but the video has {count} frames")
    return np.stack([picked[i] for i in indices])  # (len(indices), H, W, 3)


# ---------------------------------------------------------------------------------------------------------
# Depth: one 16-bit PNG per frame, linear between the frame's min and max raw depth
# ---------------------------------------------------------------------------------------------------------


def _quantise_depth(frame: np.ndarray) -> tuple[np.ndarray, float, float]:
    """One raw depth frame (H, W) float32 -> (uint16 linear between its min and max, min, max)."""
    lo, hi = float(frame.min()), float(frame.max())
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return np.round((frame - lo) * scale).astype(np.uint16), lo, hi


def encode_depth(depth: np.ndarray) -> tuple[list[bytes], list[float], list[float]]:
    """Raw depth (T, H, W) float -> (16-bit PNG per frame, per-frame min, per-frame max)."""
    import cv2

    pngs, lows, highs = [], [], []
    for frame in np.asarray(depth, dtype=np.float32):
        q, lo, hi = _quantise_depth(frame)
        ok, png = cv2.imencode(".png", q, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise ValueError("depth PNG encoding failed")
        pngs.append(png.tobytes())
        lows.append(lo)
        highs.append(hi)
    return pngs, lows, highs


def decode_depth(frames: list[bytes], depth_min: list[float], depth_max: list[float]) -> np.ndarray:
    """`depth_frames`, `depth_min`, `depth_max` of one row -> raw depth (T, H, W) float32."""
    import cv2

    out = []
    for png, lo, hi in zip(frames, depth_min, depth_max, strict=True):
        q = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32)
        out.append(lo + q * ((hi - lo) / 65535.0))
    return np.stack(out)  # (T, H, W)


def encode_depth_stack(depth: np.ndarray) -> tuple[bytes, list[float], list[float]]:
    """Raw depth (T, H, W) -> (zstd of the quantised uint16 stack after a second-order difference along W,
    per-frame min, per-frame max). Quantised as `encode_depth`; the difference makes smooth depth compress
    about 3x better, and undoing it is two cumulative sums."""
    quantised, lows, highs = zip(*(_quantise_depth(f) for f in np.asarray(depth, dtype=np.float32)), strict=True)
    q = np.stack(quantised).astype(np.int32)  # (T, H, W) in [0, 65535]
    residual = np.diff(np.diff(q, axis=2, prepend=0), axis=2, prepend=0).astype(np.uint16)  # mod 2^16
    return pa.compress(residual.tobytes(), codec="zstd", asbytes=True), list(lows), list(highs)


def decode_depth_stack(
    data: bytes, depth_min: list[float], depth_max: list[float], height: int, width: int,
    indices: list[int] | None = None,
) -> np.ndarray:
    """A proxy's `depth`, `depth_min`, `depth_max` -> raw depth (T, H, W) float32 (only `indices` when given)."""
    t = len(depth_min)
    raw = pa.decompress(data, t * height * width * 2, codec="zstd", asbytes=True)
    pick = list(range(t)) if indices is None else indices
    residual = np.frombuffer(raw, np.uint16).reshape(t, height, width)[pick]
    q = np.cumsum(np.cumsum(residual, axis=2, dtype=np.uint16), axis=2, dtype=np.uint16)  # exact mod 2^16
    lows, highs = np.asarray(depth_min, np.float64)[pick], np.asarray(depth_max, np.float64)[pick]
    step = ((highs - lows) / 65535.0).astype(np.float32)  # as `decode_depth` computes it
    return lows.astype(np.float32)[:, None, None] + q.astype(np.float32) * step[:, None, None]


# ---------------------------------------------------------------------------------------------------------
# Text embedding: the kept tokens only, float16
# ---------------------------------------------------------------------------------------------------------


def encode_text_embedding(emb: np.ndarray, keep: np.ndarray) -> tuple[bytes, int, int]:
    """One caption's (L, D) embedding and (L,) keep mask -> (float16 bytes of the kept tokens, n, D)."""
    kept = np.asarray(emb, dtype=np.float16)[np.asarray(keep, dtype=bool)]  # (n, D)
    return kept.tobytes(), int(kept.shape[0]), int(kept.shape[1])


def decode_text_embedding(
    data: bytes, n_tokens: int, dim: int, pad_to: int | None = TEXT_MAX_TOKENS
) -> tuple[np.ndarray, np.ndarray]:
    """-> (embedding (pad_to, D) float32 zero-padded, keep mask (pad_to,) bool); pad_to=None: (n, D)."""
    emb = np.frombuffer(data, dtype=np.float16).reshape(n_tokens, dim).astype(np.float32)  # (n, D)
    length = n_tokens if pad_to is None else pad_to
    if n_tokens > length:
        raise ValueError(f"{n_tokens} tokens do not fit pad_to={pad_to}")
    out = np.zeros((length, dim), np.float32)
    out[:n_tokens] = emb
    return out, np.arange(length) < n_tokens


# ---------------------------------------------------------------------------------------------------------
# VAE latents: one struct per resolution bucket
# ---------------------------------------------------------------------------------------------------------


def encode_latents(bucket: str, latents: np.ndarray) -> dict[str, Any]:
    """(C, t, h, w) latents of one bucket ("HxW") -> a `vae_latents` list entry."""
    arr = np.asarray(latents, dtype=np.float16)
    return {"bucket": bucket, "shape": list(arr.shape), "data": arr.tobytes()}


def decode_latents(entry: dict[str, Any]) -> np.ndarray:
    """A `vae_latents` entry -> (C, t, h, w) float32."""
    return np.frombuffer(entry["data"], dtype=np.float16).reshape(entry["shape"]).astype(np.float32)

