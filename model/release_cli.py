"""`mfm release infer ARGS...`: the release's `infer_mfm_pipeline.py` command line, run on `MfMPipeline`.

    mfm release infer --pipeline_path MfM-2B --depth_model Depth-Anything-V2-Small-hf --task i2v \\
        --i2v_inputs inputs.jsonl --output_dir outputs --seed 0

It takes the release CLI's arguments verbatim (same names, defaults and meanings) and writes what the release
writes: `OUTPUT_DIR/TASK/TASK_NNN_PROMPT.mp4` (or `.png` when --num_frames <= 16), and beside each a
`.safetensors` holding the float frames (key `frames`, (T, H, W, 3) in [0, 1]) that the release converts to
uint8. As in the release: a user's files come through the per-task list files (`--i2v_inputs a.jsonl`: lines
`{"prompt", "image"|"video", "mask"}`, "a;b" for itrans/vtrans; a prompt .txt for t2i/t2v; a folder of
files; a csv), image tasks make one frame at motion score 0, t2i/icolor run at 1024x1024 and isr at 1280x1280
whatever --height/--width say, colorization and super-resolution swap in their own added and negative
prompts (colorization also CFG 7), the scheduler's shift comes from the folder (`--infer_shift` is read and
unused, as `--compile` is), and an output of 4k frames loses its first 3.

Where it differs: the release's list options default to its benchmark files, so its `--input/--mask/--prompt`
are never read; here they are used when no `--<task>_inputs` is given (else the release's default lists are
read, relative to the working folder). One process only; `--depth_model` must be a local folder (no hub at
run time). Refused by name: --use_parallel_inference (use torchrun with `mfm generate`), --refine_prompt (it
calls an online LLM), --use_t_schedule, --num_samples other than 1, --noise_aug_strength other than 0 and
--ext .gif.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from model.output_files import write_frames, write_media
from model.pipeline import NEGATIVE_PROMPT, MfMPipeline, SamplingOptions, negative_prompt_for, unit_frames
from model.tasks import get_task

RELEASE_TASKS = ("t2v", "i2v", "vexd", "itrans", "vtrans", "vsr", "vcolor", "vinp", "voutp", "vedit", "t2i", "isr",
                 "icolor", "ioutp", "iinp")
IMAGE_TASKS = ("t2i", "isr", "icolor", "iinp", "ioutp")
PROMPT_TASKS = ("t2i", "t2v")
# the release's default input lists (its benchmarks folder), per task
DEFAULT_INPUTS = {
    "t2i": ["benchmarks/t2i/generation_prompts.txt"],
    "t2v": ["benchmarks/t2v/inference_moviegen.txt", "benchmarks/t2v/inference_nvidia.txt",
            "benchmarks/t2v/inference_t2v.txt"],
    "i2v": ["benchmarks/i2v/I2V_prompts_rewrite.jsonl", "benchmarks/i2v/vbench.jsonl"],
    "isr": ["benchmarks/isr/test.jsonl", "benchmarks/isr/set14", "benchmarks/isr/RealSRSet"],
    "icolor": ["benchmarks/icolor/test.jsonl", "benchmarks/icolor/old"],
    "iinp": ["benchmarks/iinp/place2.jsonl"],
    "ioutp": ["benchmarks/ioutp/place2.jsonl"],
    "itrans": ["benchmarks/itrans/test.jsonl"],
    "vtrans": ["benchmarks/vtrans/test.jsonl"],
    "vexd": ["benchmarks/vexd/davis.jsonl"],
    "vsr": ["benchmarks/vsr/valid.jsonl"],
    "vcolor": ["benchmarks/vcolor/davis"],
    "vinp": ["benchmarks/vinp/test.jsonl"],
    "voutp": ["benchmarks/voutp/test.jsonl"],
    "vedit": ["benchmarks/vedit/davis.jsonl"],
}
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    """The release CLI's arguments, names and defaults as it declares them."""
    p = argparse.ArgumentParser(prog="mfm release infer", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline_path", required=True, help="a released pipeline folder")
    p.add_argument("--depth_model", default="depth-anything/Depth-Anything-V2-Small-hf",
                   help="Depth-Anything-V2 folder (local)")
    p.add_argument("--output_dir", default="outputs")
    p.add_argument("--mixed_precision", default="bf16", choices=tuple(DTYPES))
    p.add_argument("--input")
    p.add_argument("--mask")
    p.add_argument("--prompt")
    p.add_argument("--added_prompt", default="#FPS: 16.")
    p.add_argument("--num_inference_steps", type=int, default=25)
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--num_frames", type=int, default=97)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--guidance_scale", type=float, default=6)
    p.add_argument("--fps", type=float, default=24)
    p.add_argument("--motion_score", type=float, default=5)
    p.add_argument("--infer_shift", type=int, default=12, help="read and unused, as in the release")
    p.add_argument("--upscale", type=int, default=4)
    p.add_argument("--noise_aug_strength", type=float, default=0.0)
    p.add_argument("--ext", choices=(".gif", ".mp4"), default=".mp4")
    p.add_argument("--compile", action="store_true", help="read and unused, as in the release")
    p.add_argument("--task", choices=RELEASE_TASKS, default="i2v")
    for task in RELEASE_TASKS:
        p.add_argument(f"--{task}_inputs", metavar="N", nargs="*",
                       help=f"list files (default: the release's {' '.join(DEFAULT_INPUTS[task])})")
    p.add_argument("--refine_prompt", action="store_true")
    p.add_argument("--negative_prompt", default=NEGATIVE_PROMPT)
    p.add_argument("--seed", type=int)
    p.add_argument("--crop_type", default="keep_ratio")
    p.add_argument("--use_simple_name", action="store_true")
    p.add_argument("--use_t_schedule", action="store_true")
    p.add_argument("--use_parallel_inference", action="store_true")
    return p


def refused(args: argparse.Namespace) -> list[str]:
    """The release arguments given that this drop-in does not support."""
    checks = {
        "--use_parallel_inference": args.use_parallel_inference,
        "--refine_prompt": args.refine_prompt,
        "--use_t_schedule": args.use_t_schedule,
        f"--num_samples {args.num_samples}": args.num_samples != 1,
        f"--noise_aug_strength {args.noise_aug_strength}": args.noise_aug_strength != 0,
        "--ext .gif": args.ext == ".gif",
    }
    return [name for name, given in checks.items() if given]


def read_list_inputs(lists: list[str], key: str) -> list[tuple[str, str | None, str | None]]:
    """The release's input lists (jsonl, csv, or a folder of files) -> (prompt, path, mask) per item."""
    items: list[tuple[str, str | None, str | None]] = []
    for entry in lists:
        path = Path(entry)
        if path.is_dir():
            files = sorted(str(f) for f in path.glob("*.*"))
            masks = sorted(str(f) for f in path.glob("*_mask.*"))
            items += [("", f, m) for f, m in zip(files, masks or [None] * len(files))]
        elif entry.endswith(".jsonl"):
            for n, line in enumerate(_read_text(path).splitlines()):
                if line.strip():
                    info = json.loads(line)
                    if "prompt" not in info or key not in info:
                        raise ValueError(f"{entry}:{n + 1}: a line needs the keys 'prompt' and {key!r}")
                    items.append((info["prompt"].strip(), info[key], info.get("mask")))
        elif entry.endswith(".csv"):
            rows = list(csv.reader(_read_text(path).splitlines()))[1:]
            items += [(row[0].strip(), row[1], row[2]) for row in rows]
        else:
            raise ValueError(f"{entry}: an input list is a .jsonl, a .csv or a folder")
    return items


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"input list {path}: no such file")
    return path.read_text()


def collect_items(args: argparse.Namespace) -> list[tuple[str, str | None, str | None]]:
    """(prompt, input path, mask path) per sample, as the release reads them."""
    lists = getattr(args, f"{args.task}_inputs")
    if lists is None and (args.input or args.prompt):
        return [(args.prompt or "", args.input, args.mask)]
    lists = DEFAULT_INPUTS[args.task] if lists is None else lists
    if args.task in PROMPT_TASKS:
        return [(line.strip(), None, None) for f in lists for line in _read_text(Path(f)).splitlines() if line.strip()]
    return read_list_inputs(lists, "image" if args.task.startswith("i") else "video")


def infer(args: argparse.Namespace) -> list[Path]:
    """Run every sample the arguments name; the files written."""
    task = get_task(args.task)
    seed = args.seed if args.seed is not None else int(torch.randint(0, 2**32 - 1, (1,)))
    items = collect_items(args)
    depth = Path(args.depth_model)
    if not depth.is_dir():
        raise FileNotFoundError(f"--depth_model {args.depth_model}: not a local folder (no hub at run time)")
    num_frames, height, width = (args.num_frames, args.height, args.width) if args.height and args.width \
        else (97, None, None)
    motion, added, negative, guidance = args.motion_score, args.added_prompt, args.negative_prompt, args.guidance_scale
    if args.task in IMAGE_TASKS:
        num_frames, motion = 1, 0
        if args.task in ("t2i", "icolor", "isr"):
            height = width = None  # the pipeline's release boxes: 1024 x 1024, isr 1280 x 1280
    if task.condition in ("grayscale", "downsample"):  # colorization and SR: their own prompts (and CFG 7)
        added, negative = task.generate_extra, negative_prompt_for(task)
        guidance = 7 if task.condition == "grayscale" else guidance
    is_video = num_frames > 16
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = MfMPipeline.from_pretrained(args.pipeline_path, depth_model=depth, device=device,
                                       dtype=DTYPES[args.mixed_precision])
    options = SamplingOptions(args.num_inference_steps, guidance, motion, negative)
    out_dir = Path(args.output_dir) / args.task
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for n, (prompt, path, mask) in enumerate(items):
        inputs = path.split(";") if path else []
        out = pipe(task, prompt, inputs, mask, seed=seed, options=options, num_frames=num_frames,
                   height=height, width=width, upscale=args.upscale, crop_type=args.crop_type,
                   framing="release", extra=added)
        video = out.video[:, 3:] if out.video.shape[1] % 4 == 0 else out.video  # (3, T, H, W)
        name = f"{args.task}_{n:03d}"
        name = name if args.use_simple_name else f"{name}_{prompt.replace(' ', '_')[:200]}"
        if not is_video:
            video = video.mean(1, keepdim=True)  # the release writes the mean frame (before clamping) as a png
        frames = unit_frames(video)  # (T, H, W, 3)
        media = out_dir / f"{name}{'.png' if not is_video else args.ext}"
        written += [write_media(frames, media, args.fps), write_frames(frames, media.with_suffix(".safetensors"))]
        print(f"{n}: {prompt_for_log(prompt)} -> {media}")
    return written


def prompt_for_log(prompt: str) -> str:
    return prompt if len(prompt) <= 60 else prompt[:57] + "..."


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "infer":
        print("usage: mfm release infer ARGS...  (the release's infer_mfm_pipeline.py arguments; "
              "`mfm release infer --help`)", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv[1:])
    if names := refused(args):
        print(f"mfm release infer: not supported here: {', '.join(names)}", file=sys.stderr)
        return 2
    try:
        infer(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"mfm release infer: {e}", file=sys.stderr)
        return 2
    return 0
