"""The video codecs curation can use on this machine, as it calls them (pipeline.contract.codecs,
pipeline.ops.video_devices): frames/s of decoding an H.264 source to RGB on the CPU (one thread, FFmpeg's
threads) and with NVDEC, and of encoding it with libx264 (one thread, one per core) and NVENC.

A GPU engine that does not open is reported with why (an H100 or H200 has NVDEC but no NVENC). NVDEC's frames
are compared with the CPU decoder's (largest RGB difference: H.264 decoding is exact, so 0 but for the
colour conversion), NVENC's output by its PSNR to the source, beside libx264's.

    python benchmark/perf/media_codecs.py [--frames 240] [--size 720x1280] [--append]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable

import numpy as np

from mfm.synthetic import moving_frames
from pipeline.contract import codecs
from pipeline.ops import video_devices


def rate(n: int, work: Callable[[], object], repeats: int) -> tuple[float, object]:
    """-> (best frames/s of `repeats` calls of `work` over `n` frames, the last result)."""
    best, out = 0.0, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = work()
        best = max(best, n / (time.perf_counter() - start))
    return best, out


def decode_rgb(video: bytes, threaded: bool = False, hwaccel: object = None) -> np.ndarray:
    return np.stack([f.to_ndarray(format="rgb24") for f in codecs.video_frames(video, threaded, hwaccel)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def measure(n_frames: int, height: int, width: int, repeats: int) -> list[str]:
    frames = moving_frames(n_frames, height, width, speed=(3.0, 1.0), sigma=1.5)  # (T, H, W, 3)
    cores = os.cpu_count() or 1
    size = f"{n_frames} frames of {height}x{width}"
    lines = []
    x264 = {}
    for threads in sorted({1, cores}):
        fps, video = rate(n_frames, lambda t=threads: codecs.encode_video(frames, 25.0, 18, "veryfast", t), repeats)
        x264[threads] = video
        lines.append(f"encode libx264 veryfast crf 18, {threads} thread(s), {size}: {fps:.1f} frames/s "
                     f"(PSNR {psnr(decode_rgb(video), frames):.1f} dB)")  # fmt: skip
    if (why := video_devices.nvenc_error()) is None:
        fps, video = rate(n_frames, lambda: codecs.encode_video(frames, 25.0, 18, "veryfast", encoder="h264_nvenc"),
                          repeats)  # fmt: skip
        lines.append(f"encode h264_nvenc {codecs.NVENC_PRESETS['veryfast']} cq 18, {size}: {fps:.1f} frames/s "
                     f"(PSNR {psnr(decode_rgb(video), frames):.1f} dB, {len(video) / len(x264[1]):.2f}x libx264's "
                     "bytes)")  # fmt: skip
    else:
        lines.append(f"encode h264_nvenc: unavailable here ({why})")
    source = x264[1]
    cpu_fps, cpu_rgb = rate(n_frames, lambda: decode_rgb(source), repeats)
    lines.append(f"decode to RGB on the CPU, 1 thread, {size}: {cpu_fps:.1f} frames/s")
    fps, _ = rate(n_frames, lambda: decode_rgb(source, threaded=True), repeats)
    lines.append(f"decode to RGB on the CPU, FFmpeg threads ({cores} cores), {size}: {fps:.1f} frames/s")
    if (why := video_devices.nvdec_error()) is None:
        fps, rgb = rate(n_frames, lambda: decode_rgb(source, hwaccel=video_devices.cuda_hwaccel()), repeats)
        diff = int(np.abs(rgb.astype(np.int16) - cpu_rgb.astype(np.int16)).max())
        lines.append(f"decode to RGB with NVDEC (frames downloaded), {size}: {fps:.1f} frames/s "
                     f"({fps / cpu_fps:.1f}x one CPU thread; largest RGB difference from the CPU's: {diff})")
    else:
        lines.append(f"decode with NVDEC: unavailable here ({why})")
    lines.append(f"curation's choice here (auto): encoder {video_devices.h264_encoder('auto')}, decoder "
                 f"{'cuda' if video_devices.decode_hwaccel('auto') is not None else 'cpu'}")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--size", default="720x1280", help="HxW")
    p.add_argument("--repeats", type=int, default=2, help="the best counts")
    p.add_argument("--append", nargs="?", const="", default=None, help="append to RESULTS.md (or this file)")
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    lines = measure(args.frames, height, width, args.repeats)
    print("\n".join(lines), flush=True)
    if args.append is not None:
        from benchmark.perf.results import append_results

        command = "python benchmark/perf/media_codecs.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        append_results(args.append or None, lines, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
