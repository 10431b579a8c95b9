"""Live progress of a curation run: inputs done, clips kept and rejected by reason, throughput."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


class CurateProgress:
    """Counts what the driver sees; renders a live table on a terminal, a line every `every_s` otherwise."""

    def __init__(self, total_sources: int, console: Console | None = None, every_s: float = 10.0):
        self.total = total_sources
        self.console = console or Console(stderr=True)
        self.every_s = every_s
        self.start = time.monotonic()
        self.sources_done = 0
        self.sources_failed: Counter[str] = Counter()
        self.clips_kept = 0
        self.rejected: Counter[str] = Counter()
        self.frames = 0
        self._live: Live | None = None
        self._last_line = 0.0

    def __enter__(self) -> CurateProgress:
        if self.console.is_terminal:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
        else:
            self.console.print(self.line(), highlight=False)

    def add_clips(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if not row.get("is_clip"):
                continue
            self.frames += row.get("n_frames") or 0
            if row.get("passed"):
                self.clips_kept += 1
            else:
                for reason in (row.get("reject_reason") or "unknown").split(","):
                    self.rejected[reason] += 1
        self._refresh()

    def add_sources(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.sources_done += 1
            if row["src_status"] != "ok":
                self.sources_failed[row.get("src_error_kind") or "unknown"] += 1
        self._refresh()

    @property
    def clips(self) -> int:
        return self.clips_kept + sum(self.rejected.values())

    def rates(self) -> tuple[float, float]:
        """(clips/s, frames/s) since the start."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return self.clips / elapsed, self.frames / elapsed

    def line(self) -> str:
        clips_s, frames_s = self.rates()
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.sources_failed.items())) or "none"
        return (f"inputs {self.sources_done}/{self.total} (failed: {failed}) | clips kept {self.clips_kept}, "
                f"rejected: {rejected} | {clips_s:.2f} clips/s, {frames_s:.1f} frames/s")  # fmt: skip

    def render(self) -> Table:
        clips_s, frames_s = self.rates()
        table = Table(title="mfm curate", show_header=False)
        table.add_row("inputs done", f"{self.sources_done} / {self.total}")
        for kind, n in sorted(self.sources_failed.items()):
            table.add_row(f"  failed: {kind}", str(n))
        table.add_row("clips kept", str(self.clips_kept))
        for reason, n in sorted(self.rejected.items()):
            table.add_row(f"  rejected: {reason}", str(n))
        table.add_row("throughput", f"{clips_s:.2f} clips/s, {frames_s:.1f} frames/s")
        return table

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
        elif time.monotonic() - self._last_line >= self.every_s:
            self._last_line = time.monotonic()
            self.console.print(self.line(), highlight=False)
