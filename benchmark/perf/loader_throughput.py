"""Training-loader throughput per CPU core: condition-ready samples/s from a `clips` Lance table at each stage.

One process, one thread, no DataLoader workers: the trainer's own `ClipStream` reads rows through Lance,
decodes the stored H.264 clip, takes the stage's frame window, resizes and crops to the bucket, and
`sample_training_condition` builds the task condition (the VAE and T5 run on the GPU and are not counted).
The table holds synthetic 720p sources (`--source-size`), stored as curation stores them.

Cores per GPU = the GPU's samples/s at a given step rate over the per-core rate. Without a measured step
time the GPU's rate is an estimate: 3 × `MfM.forward_flops` per sample at `--mfu` of the bf16 peak.

    python benchmark/perf/loader_throughput.py --stages 128px 360px 720px [--append]
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
import pyarrow as pa
import torch

from benchmark.perf.roofline import H100_PEAK_BF16
from mfm import synthetic
from model.conditions import Clip
from model.mfm import build_on_meta
from model.task_sampling import sample_training_condition
from pipeline import schema
from trainer.configs import PRESETS, load_config, sample_tokens
from trainer.data import ClipStream, Sample, SampleSpec, open_clips, trainable_offsets


def write_clips_table(folder: Path, n_clips: int, frames: int, size: tuple[int, int], fps: float = 24.0) -> str:
    """A `clips` table of `n_clips` passed synthetic videos (moving textures) stored as curation stores them."""
    rows = []
    for i in range(n_clips):
        video = synthetic.moving_frames(frames, *size, speed=(3.0, 1.0), seed=i)  # (T, H, W, 3) uint8
        uri = f"synthetic://clip{i}.mp4"
        rows.append({
            "clip_id": schema.clip_id(uri, 0, frames), "source_id": schema.source_id(uri), "source_uri": uri,
            "role": "clip", "media_type": "video", "frame_start": 0, "frame_end": frames, "n_frames": frames,
            "fps": fps, "width": size[1], "height": size[0], "caption": f"a texture drifting, take {i}",
            "motion_score": 3.2, "passed": True, "video": schema.encode_video(video, fps),
            "video_format": schema.VIDEO_FORMAT_MP4,
        })  # fmt: skip
    uri = str(folder / "clips.lance")
    table = pa.Table.from_pylist(rows, schema=schema.CLIPS_SCHEMA)
    lance.write_dataset(table, uri, data_storage_version=schema.LANCE_STORAGE_VERSION)
    return uri


def per_core_rate(table: str, stage: str, samples: int) -> float:
    """Condition-ready video samples per second on one core at `stage` (image share 0)."""
    cfg = load_config(overrides={"data.table": table, "frozen.root": "unused", "data.image_share.start": 0.0,
                                 "data.image_share.end": 0.0,
                                 "data.image_share.hold_steps": 0}, preset=f"2b_{stage}")  # fmt: skip
    spec = SampleSpec.from_config(cfg.data, batch_size=1, sp=1)
    ds = open_clips(table, None, {})
    stream = ClipStream(table, ds.version, {}, trainable_offsets(ds, None), 0, 1, seed=0, spec=spec, read_batch=1)
    gen = torch.Generator().manual_seed(0)
    items = iter(stream)
    next(items)  # warm-up: opens the table and the decoder
    start = time.perf_counter()
    for item in itertools.islice(items, samples):
        assert isinstance(item, Sample), item
        frames = item.frames.float().div(127.5).sub(1.0)  # (3, T, H, W) in [-1, 1]
        sample_training_condition(Clip(frames, None, item.caption), gen, extra=item.extra)
    return samples / (time.perf_counter() - start)


def gpu_rate_estimate(stage: str, mfu: float) -> float:
    """Samples/s one H100 trains at `mfu` of the bf16 peak (3 × forward FLOPs per sample)."""
    d = load_config(overrides={"data.table": "unused", "frozen.root": "unused"}, preset=f"2b_{stage}").data
    tokens = sample_tokens(d.frames, d.height, d.width)
    return mfu * H100_PEAK_BF16 / (3 * build_on_meta("2b").forward_flops(tokens))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", choices=["128px", "360px", "720px"], default=["128px", "360px", "720px"])
    p.add_argument("--samples", type=int, default=6, help="samples timed per stage")
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--source-size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    p.add_argument("--mfu", type=float, default=0.40, help="MFU assumed for the GPU's consumption rate")
    p.add_argument("--append", action="store_true", help="append the lines to benchmark/perf/RESULTS.md")
    args = p.parse_args(argv)
    assert all(f"2b_{s}" in PRESETS for s in args.stages)
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
        table = write_clips_table(Path(tmp), args.clips, 97, tuple(args.source_size))
        lines = []
        for stage in args.stages:
            rate, gpu = per_core_rate(table, stage, args.samples), gpu_rate_estimate(stage, args.mfu)
            lines.append(
                f"loader 2b {stage} from {args.source_size[0]}p H.264 sources: {rate:.2f} samples/s per core; "
                f"one H100 at {args.mfu:.0%} MFU (estimate) takes {gpu:.2f} samples/s -> {gpu / rate:.1f} cores per GPU"
            )
            print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
