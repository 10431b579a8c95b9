"""Throughput of the curation stages: clips/s and frames/s per CPU stage, and RAFT / depth frames/s on a GPU.

The CPU stages run in this process, one after the other, on synthetic videos (a texture moving at
3 px/frame: every clip passes the filters, so every stage does its full work). With `--ray` the whole
`curate` job also runs end to end on a local Ray (Farneback, no models). On a CUDA device RAFT-large and
Depth-Anything-V2-Small (their real architectures, random weights: speed does not depend on the values)
are timed on batches at the analysis and stored sizes.

    python benchmark/perf/curate_throughput.py [--videos 4] [--frames 97] [--size 480x848] [--ray] [--append]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.inputs import source_row
from pipeline.stages.base import Stage
from pipeline.stages.blur import BlurStage
from pipeline.stages.clip_encode import ClipEncodeStage
from pipeline.stages.filter import FilterStage
from pipeline.stages.motion import MotionStage
from pipeline.stages.motion_frames import MotionFramesStage
from pipeline.stages.probe import ProbeStage
from pipeline.stages.shot_split import ShotSplitStage


def write_videos(folder: Path, n: int, frames: int, height: int, width: int) -> list[Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    import video_fixtures as vf

    return [vf.write_moving_pattern(folder / f"v{k}.mp4", frames, (height, width), (3.0, 1.0), seed=k)
            for k in range(n)]  # fmt: skip


def time_cpu_stages(paths: list[Path], frames: int, cache: str) -> list[str]:
    cfg = load_config(overrides={"clip.min_frames": frames, "clip.max_frames": frames})
    io = {"cache_dir": cache}
    stages: list[Stage] = [
        ProbeStage(**io),
        ShotSplitStage(min_frames=frames, max_frames=frames, max_side=cfg.clip.max_side, **io),
        BlurStage(n_frames=cfg.blur.n_frames, **io),
        MotionFramesStage(n_pairs=cfg.motion.n_pairs, analysis_short_side=cfg.motion.analysis_short_side, **io),
        MotionStage(backend="farneback", **io),
        FilterStage(blur_threshold=0.0, motion_threshold=0.0),
        ClipEncodeStage(crf=cfg.clip.crf, preset=cfg.clip.preset, **io),
    ]
    rows = [source_row(str(p)) for p in paths]
    lines, total = [], 0.0
    for stage in stages:
        start = time.perf_counter()
        rows = stage.process(rows)
        seconds = time.perf_counter() - start
        total += seconds
        clips = sum(bool(r.get("is_clip")) for r in rows) or len(rows)
        n_frames = sum(r.get("n_frames") or r.get("src_n_frames") or 0 for r in rows)
        lines.append(f"{stage.name}: {clips / seconds:.2f} clips/s, {n_frames / seconds:.1f} frames/s")
    bad = [r.get("error") or r.get("reject_reason") for r in rows if not r.get("passed")]
    assert not bad, f"synthetic clips should all pass: {bad[:3]}"
    n_frames = sum(r["n_frames"] for r in rows)
    lines.append(f"all CPU stages, one process: {len(rows) / total:.2f} clips/s, {n_frames / total:.1f} frames/s")
    return lines


def time_ray_job(folder: Path, frames: int, cache: str) -> str:
    from pipeline.engine import curate

    cfg = load_config(overrides={"clip.min_frames": frames, "clip.max_frames": frames, "run.cache_dir": cache,
                                 "blur.threshold": 0.0, "motion.threshold": 0.0})  # every clip does all stages
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = curate(str(folder), out, cfg)
        seconds = time.perf_counter() - start
    n_clips = summary.clips_kept + sum(summary.clips_rejected.values())
    return (f"curate job on local Ray (incl. start-up, {n_clips} clips): {n_clips / seconds:.2f} clips/s, "
            f"{n_clips * frames / seconds:.1f} frames/s")  # fmt: skip


def time_gpu_models(height: int, width: int, repeats: int = 5) -> list[str]:
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    from model.depth import DepthEstimator
    from pipeline.ops.motion import RaftMotion, analysis_size

    def rate(fn, items: int) -> float:
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        return items * repeats / (time.perf_counter() - start)

    aw, ah = analysis_size(width, height, 256)
    raft = RaftMotion("raft_large", None, "cuda", flow_updates=12)
    pairs = np.random.default_rng(0).integers(0, 255, (8, 2, ah, aw, 3), dtype=np.uint8)
    lines = [f"RAFT-large ({ah}x{aw}, 12 updates, 8 pairs/call): {rate(lambda: raft(pairs), 8):.1f} pairs/s"]

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                            image_size=518, out_features=["stage3", "stage6", "stage9", "stage12"],
                            reshape_hidden_states=False)  # fmt: skip
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64)
    processor = DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14)
    depth = DepthEstimator(DepthAnythingForDepthEstimation(config), processor).cuda()
    frames = torch.rand(16, 3, height, width, device="cuda") * 2 - 1
    for dtype in (torch.float32, torch.bfloat16):
        depth.model.to(dtype)
        fps = rate(lambda: depth.predict(frames, batch_size=16), 16)
        lines.append(f"Depth-Anything-V2-Small ({height}x{width} -> 518, {dtype}, 16 frames/call): {fps:.1f} frames/s")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=97)
    p.add_argument("--size", default="480x848", help="HxW of the synthetic sources")
    p.add_argument("--ray", action="store_true", help="also time the whole job on a local Ray")
    p.add_argument("--append", nargs="?", const="", default=None, help="append to RESULTS.md (or this file)")
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp) / "videos", str(Path(tmp) / "cache")
        folder.mkdir()
        paths = write_videos(folder, args.videos, args.frames, height, width)
        lines = [f"{args.videos} videos x {args.frames} frames at {height}x{width}"]
        lines += time_cpu_stages(paths, args.frames, cache)
        if args.ray:
            lines.append(time_ray_job(folder, args.frames, cache))
    import torch

    if torch.cuda.is_available():
        lines += time_gpu_models(height, width)
    else:
        lines.append("GPU models (RAFT, depth): not measured, no CUDA device")
    print("\n".join(lines))
    if args.append is not None:
        from benchmark.perf.results import append_results

        command = "python benchmark/perf/curate_throughput.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        append_results(args.append or None, lines, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
