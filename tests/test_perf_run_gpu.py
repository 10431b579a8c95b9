"""run_gpu.sh --dry-run names every command of the unattended GPU measurement and runs none of them."""

from __future__ import annotations

import subprocess
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
    assert [s.split("--stages ")[1].split(" --")[0] for s in steps] == ["128px 360px", "720px"]
    assert all("--roofline" in s and "--append" in s and s.startswith("timeout ") for s in steps)
    assert "--layers" not in steps[0] and "--layers 8" in steps[1]  # full depth at 128/360px
    assert (results.read_text() if results.exists() else None) == before  # nothing ran
