"""`mfm benchmark build`: the MfM-Benchmark (paper §4.1, Appendix A) from a curated `clips` table.

    mfm benchmark build --clips out/clips.lance --out bench.lance [--per-task 30] [--seed 0]

Appendix A: source videos with at least 97 frames, blur score (variance of the Laplacian) >= 200 and RAFT
motion score >= 5, each standardized to 97 frames (here also to 352x640, the generation size: scaled to
cover, centre-cropped), then split among the 16 tasks, 30 each = 480 samples. Every sample's condition is
`benchmark_condition(task, ground truth, seed)`: I2V the first frame, VEXT the first 8 frames, FLF2V first
and last, FLC2V the first and last 8, inpainting a seeded interior hole (1/9-1/4 of the pixels),
outpainting a seeded border (1/8-1/4), colorization grayscale, super-resolution a seeded 2-6x
down-sampling; image tasks take the first frame; VEDIT/IEDIT replace the caption with a style instruction
("change the video to oil painting style"). Each task gets distinct source clips when there are enough;
with fewer eligible clips than samples, clips are shared between tasks (and a note says so).

Tasks of your own (`--task-plugin MODULE`, `model.task_plugins`) join the 16: `per-task` samples each,
after the built-in ones; the build record lists the tasks and which came from plugins (run and eval need
the same plugins to read those rows).

The thresholds, frame count and size are options, for small test tables. The output is a Lance dataset
(`benchmark.table`); building again into the same path with --overwrite writes a new table version.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lance
import pyarrow as pa
import torch

from benchmark.table import encode_media, params_to_json, schema_with_build
from model.conditions import Clip, benchmark_condition
from model.geometry import size_problem
from model.task_plugins import plugin_tasks
from model.tasks import TASKS, Task
from pipeline.contract.codecs import decode_video
from pipeline.contract.frames import cover_crop, frames_to_tensor
from pipeline.contract.tables import CLIPS_TABLE, LANCE_STORAGE_VERSION, check_schema

PER_TASK = 30
FRAMES = 97
SIZE = (352, 640)
MIN_BLUR = 200.0
MIN_MOTION = 5.0
ROWS_PER_BATCH = 8

STYLES = (
    "oil painting", "watercolor", "pencil sketch", "anime", "pixel art", "Van Gogh", "ukiyo-e woodblock print",
    "cyberpunk neon", "claymation", "charcoal drawing", "pop art", "stained glass", "Chinese ink painting",
    "comic book", "low-poly 3D render",
)  # fmt: skip

_SELECT_COLUMNS = ["clip_id", "source_uri", "media_type", "role", "passed", "n_frames", "blur_score",
                   "motion_score", "caption", "fps"]


@dataclass(frozen=True)
class Selection:
    """Appendix A's source filter."""

    frames: int = FRAMES
    min_blur: float = MIN_BLUR
    min_motion: float = MIN_MOTION


def sample_seed(seed: int, task: str, index: int) -> int:
    """A sample's seed: a stable 31-bit hash of (build seed, task, index)."""
    digest = hashlib.sha256(f"{seed}:{task}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def style_instruction(task: Task, seed: int) -> str:
    """The editing prompt of Appendix A: "change the video to <style> style" (image for IEDIT)."""
    return f"change the {task.media} to {STYLES[seed % len(STYLES)]} style"


def eligible_clips(clips: pa.Table, selection: Selection) -> tuple[list[int], dict[str, int]]:
    """Rows of `clips` (sorted by clip_id) that pass Appendix A's filter, and how many each rule removed."""
    rows = clips.to_pylist()
    rules = {
        "not a passed video clip": lambda r: r["media_type"] != "video" or r["role"] != "clip" or not r["passed"],
        f"fewer than {selection.frames} frames": lambda r: r["n_frames"] < selection.frames,
        f"blur score < {selection.min_blur:g} (or missing)": lambda r: (r["blur_score"] or 0) < selection.min_blur,
        f"motion score < {selection.min_motion:g} (or missing)":
            lambda r: (r["motion_score"] or 0) < selection.min_motion,
    }  # fmt: skip
    removed = dict.fromkeys(rules, 0)
    keep = []
    for i, row in enumerate(rows):
        failed = [name for name, rule in rules.items() if rule(row)]
        for name in failed[:1]:  # count each clip under the first rule it fails
            removed[name] += 1
        if not failed:
            keep.append(i)
    return sorted(keep, key=lambda i: rows[i]["clip_id"]), removed


def assign_clips(n_eligible: int, per_task: int, seed: int) -> dict[str, list[int]]:
    """Task id -> positions in the eligible list: a seeded permutation cut into 16 runs of `per_task`
    (distinct clips while they last, then reused in the same order)."""
    order = torch.randperm(n_eligible, generator=torch.Generator().manual_seed(seed)).tolist()
    return {
        task_id: [order[(k * per_task + i) % n_eligible] for i in range(per_task)]
        for k, task_id in enumerate(TASKS)
    }


def standardize(video: bytes, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Stored clip media -> its first `frames` frames at `size` (cover + centre crop), (3, T, H, W) [-1, 1]."""
    rgb = decode_video(video)[:frames]  # (T, h, w, 3) uint8
    if rgb.shape[0] < frames:
        raise ValueError(f"clip decodes to {rgb.shape[0]} frames; {frames} needed")
    return frames_to_tensor(cover_crop(rgb, *size))


def _sample_row(task: Task, index: int, seed: int, clip_row: dict, gt: torch.Tensor) -> dict:
    instruction = style_instruction(task, seed) if task.is_edit else ""
    gt = gt if task.is_video else gt[:, :1]
    clip = Clip(gt, caption=clip_row["caption"] or "", source=gt if task.is_edit else None, instruction=instruction)
    cond = benchmark_condition(task, clip, seed, extra=task.generate_extra)
    fps = float(clip_row["fps"] or 0.0) or 16.0
    shown = cond.pixels * cond.mask  # not-given pixels are 0 = mid-grey
    return {
        "sample_id": f"{task.id}-{index:03d}", "task": task.id, "task_name": task.prompt_name,
        "media_type": task.media, "index": index, "seed": seed, "clip_id": clip_row["clip_id"],
        "source_uri": clip_row["source_uri"], "caption": clip_row["caption"] or "", "instruction": instruction,
        "prompt": cond.prompt, "params": params_to_json(cond.params), "n_frames": gt.shape[1],
        "height": gt.shape[2], "width": gt.shape[3], "fps": fps, "gt": encode_media(gt, fps),
        "input": encode_media(shown, fps), "mask": encode_media(cond.mask.expand(3, -1, -1, -1) * 2 - 1, fps),
    }  # fmt: skip


def build_benchmark(
    clips_uri: str,
    out_uri: str,
    per_task: int = PER_TASK,
    seed: int = 0,
    selection: Selection = Selection(),
    size: tuple[int, int] = SIZE,
    overwrite: bool = False,
    log=print,
) -> lance.LanceDataset:
    """Select, standardize and condition the samples; write them as one commit of a Lance dataset."""
    if per_task < 1:
        raise ValueError(f"--per-task must be >= 1; got {per_task}")
    if problem := size_problem(*size):
        raise ValueError(f"--height and --width: {problem}")
    too_short = [t.id for t in TASKS.values() if t.min_frames > selection.frames]
    if too_short:
        need = max(t.min_frames for t in TASKS.values())
        raise ValueError(f"--frames {selection.frames} is too few for tasks {too_short}: {need} or more needed")
    if (selection.frames - 1) % 4:
        raise ValueError(f"--frames must be 4k+1 (the VAE's frame counts); got {selection.frames}")
    if Path(out_uri).exists() and not overwrite:
        raise FileExistsError(f"{out_uri} exists: pass --overwrite to write a new version of it")

    clips = lance.dataset(clips_uri)
    check_schema(clips.schema, CLIPS_TABLE)
    meta = clips.to_table(columns=_SELECT_COLUMNS)
    eligible, removed = eligible_clips(meta, selection)
    log(f"{clips_uri} (version {clips.version}): {meta.num_rows} clips, {len(eligible)} eligible; removed: "
        + ", ".join(f"{n} {why}" for why, n in removed.items()))
    if not eligible:
        raise ValueError(f"no clip of {clips_uri} passes the benchmark filter ({selection}); removed: {removed}")
    n_samples = per_task * len(TASKS)
    if len(eligible) < n_samples:
        log(f"note: {len(eligible)} eligible clips for {n_samples} samples: clips are shared between tasks")
    assignment = assign_clips(len(eligible), per_task, seed)
    rows = meta.to_pylist()

    def batches() -> Iterator[pa.RecordBatch]:
        buffer: list[dict] = []
        cache: dict[int, torch.Tensor] = {}  # the last clip decoded (shared clips repeat across tasks)
        for task_id, positions in assignment.items():
            task = TASKS[task_id]
            for index, pos in enumerate(positions):
                row_id = eligible[pos]
                if row_id not in cache:
                    blob = clips.take_blobs("video", indices=[row_id])[0]
                    cache = {row_id: standardize(blob.readall(), selection.frames, size)}
                buffer.append(_sample_row(task, index, sample_seed(seed, task_id, index), rows[row_id],
                                          cache[row_id]))
                if len(buffer) == ROWS_PER_BATCH:
                    yield pa.RecordBatch.from_pylist(buffer, schema=schema)
                    buffer = []
            log(f"  {task_id}: {len(positions)} samples")
        if buffer:
            yield pa.RecordBatch.from_pylist(buffer, schema=schema)

    build = {
        "clips_uri": str(clips_uri), "clips_version": clips.version, "per_task": per_task, "seed": seed,
        "frames": selection.frames, "min_blur": selection.min_blur, "min_motion": selection.min_motion,
        "height": size[0], "width": size[1], "eligible_clips": len(eligible),
        "tasks": list(assignment), "task_plugins": plugin_tasks(),
    }  # fmt: skip
    schema = schema_with_build(build)
    reader = pa.RecordBatchReader.from_batches(schema, batches())
    ds = lance.write_dataset(reader, out_uri, schema=schema, mode="overwrite" if overwrite else "create",
                             data_storage_version=LANCE_STORAGE_VERSION)
    log(f"wrote {ds.count_rows()} samples to {out_uri} (version {ds.version})")
    return ds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clips", required=True, help="curated `clips` Lance table (e.g. OUT/clips.lance)")
    p.add_argument("--out", required=True, help="benchmark Lance table to write")
    p.add_argument("--per-task", type=int, default=PER_TASK, help="samples per task (paper: 30, 480 in all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=FRAMES, help="frames per sample (paper: 97)")
    p.add_argument("--height", type=int, default=SIZE[0])
    p.add_argument("--width", type=int, default=SIZE[1])
    p.add_argument("--min-blur", type=float, default=MIN_BLUR, help="Laplacian-variance threshold (paper: 200)")
    p.add_argument("--min-motion", type=float, default=MIN_MOTION, help="RAFT motion threshold (paper: 5)")
    p.add_argument("--overwrite", action="store_true", help="write a new version of an existing table")


def main(args: argparse.Namespace) -> int:
    try:
        build_benchmark(args.clips, args.out, args.per_task, args.seed,
                        Selection(args.frames, args.min_blur, args.min_motion), (args.height, args.width),
                        args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"mfm benchmark build: {e}", file=sys.stderr)
        return 2
    return 0

