"""Consecutive stages run as one Ray operator, rows handed from one to the next as dicts in one process.

The frames shot_split decodes reach blur, motion_frames and clip_encode as arrays (no Arrow, no object
store, no copy), and Ray's per-task cost is paid once per group instead of once per stage. Each stage keeps
its class, knobs and declared resources; a group holds the most any of its stages declares.

`group_stages` cuts the stage list: a stage that loads a model runs alone in its actor pool, except the
decoding stage (shot_split), whose process also hosts the CPU stages after it; other consecutive CPU stages,
the writer included, share one task. (Ray Data would fuse consecutive task operators itself, but a fused
operator takes the larger batch size: a writer of 32 clips behind a decoder of 1 source ran every source in
one task, one after the other. In one group each stage keeps its own batch size.)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.stages.base import Resources, Stage


@dataclass
class StageGroup:
    """Stages run one after the other on a stream of rows; `batches` also says the seconds each one spent."""

    stages: list[Stage]

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.stages)

    @property
    def resources(self) -> Resources:
        return Resources(cpus=max(s.resources.cpus for s in self.stages),
                         gpus=max(s.resources.gpus for s in self.stages))  # fmt: skip

    @property
    def actors(self) -> int:
        return max(s.actors for s in self.stages)

    @property
    def batch_size(self) -> int:
        return self.stages[0].batch_size

    @property
    def output_rows(self) -> int:
        """Rows per output batch: the largest batch a stage of the group works on."""
        return max(s.batch_size for s in self.stages)

    @property
    def output_schema(self) -> pa.Schema:
        return self.stages[-1].output_schema

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()

    def apply(self, ds: Any) -> Any | None:
        return self.stages[0].apply(ds) if len(self.stages) == 1 else None

    def batches(self, rows: Iterable[dict[str, Any]]) -> Iterator[tuple[list[dict[str, Any]], Counter[str]]]:
        """-> (up to `output_rows` rows, {stage name: seconds spent since the last batch}) as rows come out."""
        inclusive = [0.0] * len(self.stages)  # seconds inside each stage's stream, its upstream included
        stream: Iterator[dict[str, Any]] = iter(rows)
        for i, stage in enumerate(self.stages):
            stream = _timed(stage.stream(stream), inclusive, i)
        reported = Counter[str]()
        batch: list[dict[str, Any]] = []
        for row in stream:
            batch.append(row)
            if len(batch) == self.output_rows:
                yield batch, self._since(inclusive, reported)
                batch = []
        if batch:
            yield batch, self._since(inclusive, reported)

    def _since(self, inclusive: list[float], reported: Counter[str]) -> Counter[str]:
        own = Counter[str]()
        for i, stage in enumerate(self.stages):
            own[stage.name] += inclusive[i] - (inclusive[i - 1] if i else 0.0)
        delta = Counter({k: v - reported[k] for k, v in own.items()})
        reported.update(delta)
        return delta

    def describe(self) -> dict[str, Any]:
        kind = f"actors x{self.actors}" if self.actors else "tasks"
        return {"operator": self.name, "kind": kind, "cpus": self.resources.cpus, "gpus": self.resources.gpus,
                "batch_size": self.batch_size, "stages": [s.describe() for s in self.stages]}  # fmt: skip


def _timed(rows: Iterator[dict[str, Any]], seconds: list[float], i: int) -> Iterator[dict[str, Any]]:
    """`rows`, adding the time each next() takes to seconds[i]."""
    while True:
        start = time.perf_counter()
        row = next(rows, None)
        seconds[i] += time.perf_counter() - start
        if row is None:
            return
        yield row


def group_stages(stages: list[Stage]) -> list[StageGroup]:
    """The Ray operators for `stages`, in order (see the module docstring)."""
    groups: list[list[Stage]] = []
    for stage in stages:
        last = groups[-1] if groups else None
        joins = last is not None and not stage.actors and (not last[0].actors or last[0].decodes)
        if joins and last is not None:
            last.append(stage)
        else:
            groups.append([stage])
    return [StageGroup(g) for g in groups]
