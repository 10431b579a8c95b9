"""`mfm demo`: the README's main job, the whole chain on embedded defaults, on a laptop CPU in a few minutes.

1. a few synthetic videos with captions (sharp moving textures) and tiny random frozen models (VAE, T5,
   Depth-Anything) written to disk;
2. `mfm curate`: local Ray, Lance `clips` + `sources` tables (shots, blur, motion, depth, T5);
3. `mfm train`: a few DeepSpeed steps of the tiny MfM on the curated table, one process;
4. `mfm generate`: an image-to-video sample from the trained checkpoint;
5. `mfm benchmark build|run|eval`: one sample per task, generated and scored, with an HTML report.

Every step runs its `mfm` command through the command table (`mfm.cli.run`) and prints that command. The
frozen models and the metric networks (Inception, LPIPS, VBench's) are random-init stand-ins: the numbers show the
machinery works, not image quality. Sizes are tiny (33 frames at 32x48) so it fits a CPU.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import time
from pathlib import Path

from mfm.cli import run
from mfm.synthetic import moving_frames, write_image, write_video

MARKER = ".mfm-demo"  # an --out folder holding this was made by the demo and may be replaced
N_VIDEOS = 4
VIDEO_FRAMES = 33  # the fewest the benchmark's FLC2V (8 + 8 given frames) allows
VIDEO_SIZE = (96, 128)
BENCH_SIZE = (32, 48)
TRAIN_STEPS = 4
SAMPLE_STEPS = 4
CAPTIONS = (
    "a colourful mosaic slides slowly to the right",
    "a field of coloured pebbles drifts past the camera",
    "an abstract painted texture pans from left to right",
    "a close-up of a woven carpet moving across the frame",
)


def _step(title: str, command: str, argv: list[str]) -> None:
    """Print the `mfm` command, run it through the command table, fail loudly on a non-zero status."""
    print(f"\n[demo] {title}\n[demo] $ mfm {command} {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    status = run(command, argv)
    if status:
        raise SystemExit(f"[demo] `mfm {command}` failed with status {status}")
    print(f"[demo] {title}: done in {time.perf_counter() - start:.1f}s", flush=True)


def prepare_out(out: Path) -> None:
    """Use `out` if empty or made by an earlier demo (then start over); refuse any other folder."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SystemExit(f"[demo] {out} is not empty and not a demo folder: choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by `mfm demo`; the next demo run into this folder replaces it\n")


def make_inputs(out: Path, seed: int) -> tuple[Path, Path]:
    """Synthetic captioned videos (folder) and tiny random frozen models (pipeline-like root)."""
    from model.tiny_pretrained import write_tiny_pretrained

    raw = out / "raw_videos"
    for i in range(N_VIDEOS):
        frames = moving_frames(VIDEO_FRAMES, *VIDEO_SIZE, speed=(6.0 + 2 * i, 1.0 + i), seed=seed + i, sigma=1.0)
        write_video(raw / f"video_{i}.mp4", frames)
        (raw / f"video_{i}.txt").write_text(CAPTIONS[i % len(CAPTIONS)])
    return raw, write_tiny_pretrained(out / "frozen_models", seed)["root"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mfm demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="folder for everything the demo makes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    prepare_out(out)

    print("[demo] 1/5 synthetic videos and tiny random frozen models", flush=True)
    raw, frozen = make_inputs(out, args.seed)
    curated, train_dir, bench = out / "curated", out / "train", out / "benchmark.lance"

    import ray

    _step("2/5 curate on local Ray into Lance", "curate", [
        "--input", str(raw), "--output", str(curated),
        "--set", f"clip.min_frames={VIDEO_FRAMES}", "--set", f"clip.max_frames={VIDEO_FRAMES}",
        "--set", f"depth.model={frozen / 'depth'}", "--set", f"text.model={frozen}",
    ])  # fmt: skip
    ray.shutdown()

    _step("3/5 train the tiny MfM (DeepSpeed, one process)", "train", [
        "--preset", "tiny", "--set", f"data.table={curated / 'clips.lance'}", "--set", f"frozen.root={frozen}",
        "--set", f"run_dir={train_dir}", "--set", f"steps={TRAIN_STEPS}", "--set", f"checkpoint.every={TRAIN_STEPS}",
        "--set", "data.frames=9", "--set", f"data.height={BENCH_SIZE[0]}", "--set", f"data.width={BENCH_SIZE[1]}",
        "--set", "data.num_workers=0", "--set", "log.every=1",
    ])  # fmt: skip
    checkpoint = train_dir / "checkpoints" / f"step_{TRAIN_STEPS:08d}" / "model"
    parts = ["--checkpoint", str(checkpoint), "--vae", str(frozen), "--text-encoder", str(frozen),
             "--depth-model", str(frozen / "depth"), "--steps", str(SAMPLE_STEPS)]

    video = out / "generated" / "i2v.mp4"
    first_frame = write_image(out / "inputs" / "first_frame.png", VIDEO_SIZE, seed=args.seed + 100)
    _step("4/5 generate image-to-video from the trained checkpoint", "generate", [
        "--task", "i2v", "--prompt", CAPTIONS[0], "--image", str(first_frame), "--out", str(video),
        "--frames", "9", "--height", str(VIDEO_SIZE[0] // 2), "--width", str(VIDEO_SIZE[1] // 2), *parts,
    ])  # fmt: skip

    from benchmark.metrics import write_random_feature_weights
    from benchmark.vbench.random_weights import write_random_vbench_weights

    _step("5/5 benchmark: build", "benchmark", [
        "build", "--clips", str(curated / "clips.lance"), "--out", str(bench), "--per-task", "1",
        "--frames", str(VIDEO_FRAMES), "--height", str(BENCH_SIZE[0]), "--width", str(BENCH_SIZE[1]),
    ])  # fmt: skip
    _step("5/5 benchmark: run", "benchmark", ["run", "--bench", str(bench), "--out", str(out / "runs" / "tiny"),
                                              *parts])
    weights = write_random_feature_weights(out / "metric_networks_random", args.seed)
    vbench_weights = write_random_vbench_weights(out / "metric_networks_random" / "vbench", args.seed)
    report = out / "report"
    _step("5/5 benchmark: eval", "benchmark", [
        "eval", "--bench", str(bench), "--outputs", str(out / "runs" / "tiny"), "--out", str(report),
        "--inception-weights", str(weights["inception"]), "--lpips-weights", str(weights["lpips"]),
        "--fid-frames", "2", "--method", "tiny (4 steps)",
        "--metrics", "vbench", "--metric-weights", *(f"{k}={p}" for k, p in vbench_weights.items()),
        "--metric-tasks", "t2v", "i2v",  # RAFT (dynamic degree) is slow on CPU; the paper adds 4 more tasks
    ])  # fmt: skip

    print(f"\n[demo] finished in {time.perf_counter() - start:.0f}s")
    print(f"[demo] generated video:  {video}")
    print(f"[demo] benchmark table:  {report / 'results.md'}")
    print(f"[demo] benchmark report: {report / 'report.html'}")
    return 0
