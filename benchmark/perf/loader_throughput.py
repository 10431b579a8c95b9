"""Training-loader throughput per CPU core: condition-ready samples/s from a `clips` Lance table at each phase.

One process, one thread, no DataLoader workers: the trainer's own `ClipStream` reads rows through Lance,
decodes the media (the stored clip, or with `proxies` the smallest stored proxy that covers the sample), takes
the phase's frame window with its depth, resizes and crops to the bucket, and `sample_training_condition`
builds the task condition (the VAE and T5 run on the GPU and are not counted). The table holds synthetic
sharp 720p clips (`--source-size`) with depth maps and proxies, stored as curation stores them.

Cores per GPU = the samples/s one H100 takes at the attainable step time over the per-core rate. Without a GPU
the attainable step is the estimate of `roofline.estimated_attainable_seconds` (this workplace's measured H100
matmul and attention rates over the model's exact FLOPs).

    python benchmark/perf/loader_throughput.py --phases 128px 360px 720px [--append]
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import tempfile
import time
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import torch

from benchmark.perf.roofline import estimated_attainable_seconds
from mfm import synthetic
from model.conditions import Clip
from model.mfm import MFM_CONFIGS
from model.task_sampling import sample_training_condition
from pipeline.contract import codecs, tables
from pipeline.contract.buckets import parse_size
from pipeline.contract.frames import to_signed
from pipeline.stages.proxies import make_proxies, proxy_sizes
from trainer.configs import PRESETS, load_config
from trainer.data import ClipStream, Sample, SampleSpec, open_clips, trainable_offsets


def synthetic_depth(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth raw depth (T, H, W) float32: a tilted plane with a drifting bump (what a depth model gives)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    plane = 2.0 + 8.0 * y / height
    out = [plane - 1.5 * np.exp(-((x - width * (0.3 + 0.004 * t)) ** 2 + (y - height / 2) ** 2) / (0.02 * width**2))
           for t in range(frames)]  # fmt: skip
    return np.stack(out) + seed


def write_clips_table(
    folder: Path, n_clips: int, frames: int, size: tuple[int, int], proxy_phases: list[tuple[int, int]],
    fps: float = 24.0,
) -> str:
    """A `clips` table of `n_clips` passed synthetic videos (sharp moving textures: a Laplacian variance above
    curation's blur threshold) with depth maps and proxies, stored as curation stores them."""
    rows = []
    for i in range(n_clips):
        video = synthetic.moving_frames(frames, *size, speed=(3.0, 1.0), seed=i, sigma=1.0)  # (T, H, W, 3) uint8
        depth = synthetic_depth(frames, *size, seed=i)  # (T, H, W)
        depth_frames, depth_min, depth_max = codecs.encode_depth(depth)
        uri = f"synthetic://clip{i}.mp4"
        rows.append({
            "clip_id": tables.clip_id(uri, 0, frames), "source_id": tables.source_id(uri), "source_uri": uri,
            "role": "clip", "media_type": "video", "frame_start": 0, "frame_end": frames, "n_frames": frames,
            "fps": fps, "width": size[1], "height": size[0], "caption": f"a texture drifting, take {i}",
            "motion_score": 3.2, "passed": True, "video": codecs.encode_video(video, fps),
            "video_format": tables.VIDEO_FORMAT_MP4, "depth_frames": depth_frames, "depth_min": depth_min,
            "depth_max": depth_max, "proxies": make_proxies(video, fps, proxy_sizes(*size, proxy_phases), depth),
        })  # fmt: skip
    uri = str(folder / "clips.lance")
    table = pa.Table.from_pylist(rows, schema=tables.CLIPS_SCHEMA)
    lance.write_dataset(table, uri, data_storage_version=tables.LANCE_STORAGE_VERSION)
    return uri


def per_core_rate(table: str, phase: str, samples: int, proxies: bool) -> float:
    """Condition-ready video samples per second on one core at `phase` (image share 0)."""
    cfg = load_config(overrides={"data.table": table, "frozen.root": "unused", "data.image_share.start": 0.0,
                                 "data.image_share.end": 0.0, "data.image_share.hold_steps": 0,
                                 "data.proxies": proxies}, preset=f"2b_{phase}")  # fmt: skip
    spec = SampleSpec.from_config(cfg.data, batch_size=1, sp=1)
    ds = open_clips(table, None, {})
    stream = ClipStream(table, ds.version, {}, trainable_offsets(ds, None), 0, 1, seed=0, spec=spec, read_batch=1)
    gen = torch.Generator().manual_seed(0)
    items = iter(stream)
    next(items)  # warm-up: opens the table and the decoder
    start = time.perf_counter()
    for item in itertools.islice(items, samples):
        assert isinstance(item, Sample), item
        frames = to_signed(item.frames)  # (3, T, H, W) in [-1, 1]
        depth = None if item.depth is None else item.depth.float()
        sample_training_condition(Clip(frames, depth, item.caption), gen, extra=item.extra)
    return samples / (time.perf_counter() - start)


def gpu_rate(phase: str) -> float:
    """Samples/s one H100 trains `2b` at `phase` at the attainable step time (estimated from kernel rates)."""
    seconds, batch = estimated_attainable_seconds(MFM_CONFIGS["2b"], phase)
    return batch / seconds


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", nargs="+", choices=["128px", "360px", "720px"], default=["128px", "360px", "720px"])
    p.add_argument("--samples", type=int, default=6, help="samples timed per phase")
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--source-size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    p.add_argument("--proxy-phases", nargs="*", default=["128x224", "352x640"],
                   help="phase sizes HxW the table stores proxies for (curation's proxies.phases); none: no proxies")
    p.add_argument("--append", action="store_true", help="append the lines to benchmark/perf/RESULTS.md")
    args = p.parse_args(argv)
    assert all(f"2b_{s}" in PRESETS for s in args.phases)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per core
    try:
        lines = measure(args)
    finally:
        torch.set_num_threads(threads)
    if args.append:
        from benchmark.perf.results import append_results

        append_results(None, lines, command="python benchmark/perf/loader_throughput.py " + shlex.join(argv))
    return 0


def measure(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        phases = [parse_size(phase) for phase in args.proxy_phases]
        table = write_clips_table(Path(tmp), args.clips, 97, tuple(args.source_size), phases)
        lines = []
        for phase in args.phases:
            gpu = gpu_rate(phase)
            for proxies in (False, True) if phases else (False,):
                rate = per_core_rate(table, phase, args.samples, proxies)
                media = f"proxies for {' '.join(args.proxy_phases)}" if proxies else "stored clips"
                lines.append(
                    f"loader 2b {phase} from {args.source_size[0]}p clips, reading {media}: {rate:.2f} samples/s "
                    f"per core; one H100 at the attainable step (estimate) takes {gpu:.2f} samples/s -> "
                    f"{gpu / rate:.1f} cores per GPU"
                )
                print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
