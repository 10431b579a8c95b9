"""Which H.264 encoder and which decoder a process uses: NVENC and NVDEC (FFmpeg's CUDA hwaccel) where the
process sees a GPU that has them, libx264 and FFmpeg's software decoders otherwise.

"auto" is settled once per process by opening the device on a tiny clip: a Ray worker sees a GPU only when
its task or actor holds a share of one (Ray empties CUDA_VISIBLE_DEVICES for the others), and not every GPU
has both engines (an H100 or H200 decodes with NVDEC but has no NVENC). A device asked for by name that does
not open is an error that says why.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pipeline.contract import codecs

ENCODERS = ("auto", "libx264", "h264_nvenc")
DECODERS = ("auto", "cpu", "cuda")


def cuda_hwaccel() -> Any:
    """FFmpeg's CUDA decoding (NVDEC), frames downloaded to host memory; a stream NVDEC cannot decode falls back
    to the software decoder."""
    from av.codec.hwaccel import HWAccel

    return HWAccel(device_type="cuda", allow_software_fallback=True)


@functools.cache
def nvenc_error() -> str | None:
    """None when h264_nvenc encodes in this process, else why it does not."""
    import av

    if "h264_nvenc" not in av.codecs_available:
        return "this FFmpeg build has no h264_nvenc"
    try:  # NVENC's smallest frame is about 145x49: probe above it
        codecs.encode_video(np.zeros((2, 256, 256, 3), np.uint8), 25.0, encoder="h264_nvenc")
    except av.error.FFmpegError as exc:
        return f"h264_nvenc does not open: {exc}"
    return None


@functools.cache
def nvdec_error() -> str | None:
    """None when FFmpeg's CUDA decoding opens in this process, else why it does not."""
    import av

    if "cuda" not in av.codec.hwaccel.hwdevices_available():
        return "this FFmpeg build has no CUDA hwaccel"
    sample = codecs.encode_video(np.zeros((2, 64, 64, 3), np.uint8), 25.0)
    try:
        decoded = sum(1 for _ in codecs.video_frames(sample, hwaccel=cuda_hwaccel()))
    except av.error.FFmpegError as exc:
        return f"CUDA decoding does not open: {exc}"
    return None if decoded == 2 else f"CUDA decoding gave {decoded} of 2 frames"


def h264_encoder(requested: str) -> str:
    """`requested` (auto, libx264 or h264_nvenc) -> the encoder this process uses (auto: NVENC when it opens)."""
    if requested not in ENCODERS:
        raise ValueError(f"encoder {requested!r}: not one of {ENCODERS}")
    if requested == "libx264":
        return requested
    error = nvenc_error()
    if error is None:
        return "h264_nvenc"
    if requested == "auto":
        return "libx264"
    raise RuntimeError(f"clip.encoder 'h264_nvenc': {error}; use 'auto' (NVENC where it opens) or 'libx264'")


def decode_hwaccel(requested: str) -> Any | None:
    """`requested` (auto, cpu or cuda) -> the `hwaccel` of `codecs.video_frames` this process uses; None: CPU."""
    if requested not in DECODERS:
        raise ValueError(f"decoder {requested!r}: not one of {DECODERS}")
    if requested == "cpu":
        return None
    error = nvdec_error()
    if error is None:
        return cuda_hwaccel()
    if requested == "auto":
        return None
    raise RuntimeError(f"run.decoder 'cuda': {error}; use 'auto' (NVDEC where it opens) or 'cpu'")
