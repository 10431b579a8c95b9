"""`mfm tasks list` and `mfm tasks show`: the 16 tasks, and a picture of a task's condition.

    mfm tasks show --task vinp --input clip.mp4 --out grid.png [--mode benchmark|train|generate]
        [--seed N] [--depth-model PATH | --depth-from zeros|luma] [--max-frames 97] [--size HxW]

`benchmark` (default) and `train` build the condition from one clip or image the way the benchmark
and training do (image tasks take a clip's first frame; editing shows the input as its own source);
`generate` builds it from the user's files as `mfm generate` would (`--input` once or twice, `--mask`).
`--task-plugin MODULE` (or MFM_TASK_PLUGINS) adds tasks of your own to both commands (`model.task_plugins`).
Depth maps come from a Depth-Anything-V2 checkpoint with `--depth-model`; without one the depth row
shows a labelled stand-in (zeros, or the frames' luma), so pixels and mask can still be checked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from model.condition_grid import condition_grid
from model.conditions import Clip, benchmark_condition, build_condition, draw_params
from model.geometry import coded_length, floor_size, size_problem
from model.task_inputs import DEFAULT_FRAMES, condition_from_files, read_media_file
from model.task_plugins import TaskRegistrationError, add_plugin_argument, load_plugins_from_argv
from model.tasks import TASKS, Task, get_task
from pipeline.contract.frames import cover_crop_tensor

DepthFn = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, H, W) [-1, 1] -> (N, 1, H, W)


def list_tasks() -> str:
    wid = max(7, *(len(t.id) + 1 for t in TASKS.values()))  # columns widen for a task of your own
    wkind = max(15, *(len(t.condition) + 1 for t in TASKS.values()))
    wname = max(28, *(len(t.prompt_name) + 1 for t in TASKS.values()))
    lines = [f"{'id':<{wid}}{'media':<7}{'kind':<{wkind}}{'role':<13}{'weight':<8}{'prompt name':<{wname}}given"]
    for task in TASKS.values():
        role = "generation" if task.generation else "manipulation"
        lines.append(
            f"{task.id:<{wid}}{task.media:<7}{task.condition:<{wkind}}{role:<13}{task.weight:<8g}"
            f"{task.prompt_name:<{wname}}{task.given}"
        )
    return "\n".join(lines)


def _luma_depth(frames: torch.Tensor) -> torch.Tensor:
    """Stand-in depth: the frames' luma in [0, 1] (N, 3, H, W) -> (N, 1, H, W). Not a depth model."""
    r, g, b = (frames * 0.5 + 0.5).unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b)[:, None]


def depth_source(model_path: str | None, stand_in: str) -> tuple[DepthFn | None, str]:
    """The depth function and the note the grid prints about it."""
    if model_path:
        from model.depth import DepthEstimator  # imported only when asked: it loads transformers

        return DepthEstimator.from_pretrained(model_path).predict, f"Depth-Anything-V2 from {model_path}"
    if stand_in == "luma":
        return _luma_depth, "STAND-IN (frame luma), no depth model given"
    return None, "STAND-IN (zeros), no depth model given"


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 352x640; got {text!r}") from None
    if problem := size_problem(h, w):
        raise argparse.ArgumentTypeError(problem)
    return h, w


def clip_from_file(task: Task, path: str, args: argparse.Namespace, depth_fn: DepthFn | None) -> Clip:
    """One file -> the clip the benchmark/training builders take: frames cropped to multiples of 16,
    T = 4k+1 frames (or the first frame for an image task), depth maps, the caption."""
    frames = read_media_file(path, args.max_frames)  # (3, T, H, W)
    if task.is_video and frames.shape[1] == 1:
        raise ValueError(f"task {task.id} ({task.prompt_name}) shows a video condition: --input must be a video")
    h, w = frames.shape[-2:]
    frames = cover_crop_tensor(frames, args.size or floor_size(h, w))
    frames = frames[:, : coded_length(frames.shape[1])] if task.is_video else frames[:, :1]
    depth = None
    if depth_fn is not None and task.generation:
        with torch.no_grad():
            depth = depth_fn(frames.transpose(0, 1)).transpose(0, 1)  # (1, T, H, W)
    source = frames if task.is_edit else None
    return Clip(frames, depth, args.caption, source=source, instruction=args.caption)


def show(args: argparse.Namespace) -> str:
    task = get_task(args.task)
    depth_fn, depth_note = depth_source(args.depth_model, args.depth_from)
    if args.mode == "generate":
        cond = condition_from_files(
            task, args.input, args.caption, args.mask, num_frames=args.max_frames, size=args.size, depth_fn=depth_fn
        )
    else:
        if len(args.input) != 1 or args.mask:
            raise ValueError(f"--mode {args.mode} takes one --input (a clip or an image) and no --mask")
        clip = clip_from_file(task, args.input[0], args, depth_fn)
        if args.mode == "benchmark":
            cond = benchmark_condition(task, clip, args.seed)
        else:
            cond = build_condition(task, clip, draw_params(task, clip, torch.Generator().manual_seed(args.seed)))
    mode = "generate mode" if args.mode == "generate" else f"{args.mode} mode, seed {args.seed}"
    condition_grid(cond, f"{depth_note} ({mode})", args.columns).save(args.out)
    given = float(cond.mask.mean())
    return f"wrote {args.out}: {task.id} ({task.prompt_name}), condition {tuple(cond.pixels.shape)}, {given:.1%} given"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfm tasks", description="The 16 MfM tasks and their conditions.")
    add_plugin_argument(p)
    sub = p.add_subparsers(dest="command", required=True)
    add_plugin_argument(sub.add_parser("list", help="the task table: id, media, condition kind, role, weight, "
                                                    "prompt name"))  # fmt: skip
    s = sub.add_parser("show", help="draw a task's condition (pixels / depth / mask over frames) as a PNG")
    add_plugin_argument(s)
    s.add_argument("--task", required=True, help=f"task id: {', '.join(TASKS)}")
    s.add_argument("--input", action="append", default=[], help="a clip or image; twice for flf2v/flc2v (generate)")
    s.add_argument("--mask", help="generate mode: mask image or video, white = keep")
    s.add_argument("--out", required=True, help="the PNG to write")
    s.add_argument("--mode", choices=["benchmark", "train", "generate"], default="benchmark")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--caption", default="", help="caption (the instruction for editing tasks)")
    s.add_argument("--depth-model", help="Depth-Anything-V2 checkpoint (local path) for the depth row")
    s.add_argument("--depth-from", choices=["zeros", "luma"], default="zeros", help="stand-in without a model")
    s.add_argument("--max-frames", type=int, default=DEFAULT_FRAMES, help="frames to read (and generate)")
    s.add_argument("--size", type=_size, help="HxW, multiples of 16 (default: the input's, floored)")
    s.add_argument("--columns", type=int, default=8, help="most frames to show")
    return p


def main(argv: list[str]) -> int:
    try:
        load_plugins_from_argv(argv)  # first: the parser's help lists the tasks
    except TaskRegistrationError as e:
        print(f"mfm tasks: error: {e}", file=sys.stderr)
        return 2
    args = parser().parse_args(argv)
    if args.command == "list":
        print(list_tasks())
        return 0
    try:
        print(show(args))
    except ValueError as e:
        print(f"mfm tasks show: error: {e}", file=sys.stderr)
        return 2
    return 0
