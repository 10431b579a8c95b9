"""run_gpu.sh --dry-run names every command of the unattended GPU measurement and runs none of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_gpu_dry_run_prints_the_commands_it_would_run():
    results = ROOT / "benchmark/perf/RESULTS.md"
    before = results.read_text() if results.exists() else None
    proc = subprocess.run(["bash", "benchmark/perf/run_gpu.sh", "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "OUT": ""})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stderr.splitlines() if line.startswith("+ ")]
    assert commands[0].startswith("python3 -m pip install") and "--target /tmp/site" in commands[0]
    steps = [c for c in commands if "benchmark/perf/train_step.py" in c]
    assert [s.split("--phases ")[1].split(" --")[0] for s in steps] == ["128px 360px", "720px"]
    assert all("--roofline" in s and "--append" in s and s.startswith("timeout ") for s in steps)
    assert "--layers" not in steps[0] and "--layers 8" in steps[1]  # full depth at 128/360px
    latency = [c for c in commands if "benchmark/perf/sample_latency.py" in c]
    assert len(latency) == 2 and all("--size 2b" in c and "--append" in c for c in latency)
    models = [c for c in commands if "benchmark/perf/model_stages.py" in c]
    assert len(models) == 1 and models[0].startswith("timeout ") and "--append" in models[0]
    media = [c for c in commands if "benchmark/perf/media_codecs.py" in c]
    assert len(media) == 1 and media[0].startswith("timeout ") and "--append" in media[0]
    assert commands.index(media[0]) < commands.index(steps[0])  # curation's phases before the long ones
    assert (results.read_text() if results.exists() else None) == before  # nothing ran


def test_the_gpu_benchmark_imports_without_what_the_device_lacks():
    """The device image has torch, pyarrow, cv2 and yaml; run_gpu.sh carries DeepSpeed, pydantic and diffusers.
    Lance, Ray, PyAV and decord are not there: the benchmark must not import them."""
    absent = ["lance", "ray", "av", "decord"]
    code = (f"import sys; sys.modules.update(dict.fromkeys({absent!r})); "
            "import benchmark.perf.train_step, benchmark.perf.roofline, benchmark.perf.sample_latency, "
            "benchmark.perf.model_stages")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_sample_latency_runs_at_a_tiny_size_on_the_cpu():
    cmd = [sys.executable, "benchmark/perf/sample_latency.py", "--size", "tiny", "--frames", "9", "--height", "32",
           "--width", "48", "--steps", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tiny sample 9x32x48 (18 tokens, CFG, eager, 1 rank: sp=1):" in proc.stdout and "s/step" in proc.stdout


def test_model_stages_run_at_a_tiny_size_on_the_cpu():
    cmd = [sys.executable, "benchmark/perf/model_stages.py", "--small", "--iters", "1", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("TransNetV2", "RAFT-large", "Depth-Anything-V2-Small", "CLIP ViT-L/14 vision",
                 "T5 encoder, flan-t5-xl shape", "captioner, LLaVA-1.5-7B shape"):
        assert f"{name} (" in proc.stdout and "/s on cpu" in proc.stdout, proc.stdout


def test_media_codecs_measure_the_cpu_codecs_and_say_why_a_gpu_engine_is_not_there():
    cmd = [sys.executable, "benchmark/perf/media_codecs.py", "--frames", "6", "--size", "64x96", "--repeats", "1"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}  # no GPU visible, on any machine
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("encode libx264 veryfast crf 18, ") and "frames/s (PSNR" in line for line in lines) >= 1
    assert sum(line.startswith("decode to RGB on the CPU") and line.endswith("frames/s") for line in lines) == 2
    assert any(line.startswith("encode h264_nvenc: unavailable here (") for line in lines), lines
    assert any(line.startswith("decode with NVDEC: unavailable here (") for line in lines), lines
    assert lines[-1] == "curation's choice here (auto): encoder libx264, decoder cpu"
