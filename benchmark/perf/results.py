"""Append measured numbers to benchmark/perf/RESULTS.md with the device, date, command and versions."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def device_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def append_results(path: str | Path | None, lines: list[str], command: str) -> None:
    """One dated section: device, command, torch version, then the result lines."""
    path = Path(path) if path else RESULTS
    if not path.exists():
        path.write_text("# Measured performance\n\nEach section: date, device, command, versions, results.\n")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = [f"\n## {stamp} — {device_description()}", f"`{command}` (torch {torch.__version__})", ""]
    with path.open("a") as f:
        f.write("\n".join(section + [f"- {line}" for line in lines]) + "\n")
