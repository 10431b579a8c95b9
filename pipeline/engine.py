"""Run curation: list inputs, resume, stream the stages through Ray Data, commit as sources complete.

Stateless stages are Ray tasks (`map_batches` with a function), stages that load a model are actor
pools (`map_batches` with a class: `setup()` once per actor); both declare fractional CPUs and GPUs.
The last stage writes Lance fragments on the workers; this driver commits them (commits.py explains the
order and why a killed run resumes without losing or duplicating a clip). Commit granularity: whenever
`run.commit_every` sources have completed since the last commit, or `run.commit_interval_s` has passed,
and once at the end.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import commits
from pipeline.config import CurateConfig
from pipeline.contract import tables
from pipeline.inputs import list_sources
from pipeline.progress import CurateProgress
from pipeline.stages import build_stages
from pipeline.stages.base import rows_to_table
from pipeline.stages.group import StageGroup, group_stages

log = logging.getLogger("mfm.curate")
MAX_INPUT_BLOCKS = 1024  # sources are spread over this many blocks at most: parallel, yet few tasks


@dataclass
class RunSummary:
    inputs: int = 0  # listed
    skipped_done: int = 0  # already in `sources` from an earlier run
    orphans_deleted: int = 0  # clip rows of unfinished sources removed before starting
    sources_ok: int = 0
    sources_failed: Counter[str] = field(default_factory=Counter)
    clips_kept: int = 0
    clips_rejected: Counter[str] = field(default_factory=Counter)
    incomplete: int = 0  # sources this run did not finish (a rerun picks them up)
    error: str | None = None  # what stopped the run early
    seconds: float = 0.0
    clips_per_s: float = 0.0
    frames_per_s: float = 0.0
    clips_version: int = 0
    sources_version: int = 0
    stage_seconds: Counter[str] = field(default_factory=Counter)  # busy seconds per stage, summed over workers

    @property
    def all_failed(self) -> bool:
        finished = self.sources_ok + sum(self.sources_failed.values())
        return finished > 0 and self.sources_ok == 0

    def lines(self) -> list[str]:
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.sources_failed.items())) or "none"
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(self.clips_rejected.items())) or "none"
        out = [
            f"inputs: {self.inputs} listed, {self.skipped_done} already done, {self.sources_ok} ok, "
            f"failed: {failed}",
            f"clips: {self.clips_kept} kept, rejected: {rejected}",
            f"tables: clips v{self.clips_version}, sources v{self.sources_version}; {self.seconds:.1f} s, "
            f"{self.clips_per_s:.2f} clips/s, {self.frames_per_s:.1f} frames/s",
        ]
        busy = sum(self.stage_seconds.values())
        if busy:
            shares = ", ".join(f"{name} {seconds / busy:.0%} ({seconds:.1f} s)"
                               for name, seconds in self.stage_seconds.most_common())  # fmt: skip
            out.append(f"time per stage (share of {busy:.1f} s busy in the stages over all workers, "
                       f"{self.seconds:.1f} s wall): {shares}")  # fmt: skip
        if self.orphans_deleted:
            out.append(f"resumed: removed {self.orphans_deleted} clip rows of sources an earlier run left unfinished")
        if self.incomplete:
            out.append(f"incomplete: {self.incomplete} sources not finished; rerun the same command to finish them")
        if self.error:
            out.append(f"stopped early: {self.error}")
        return out


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Connect to `address` (a cluster, or "auto") or start a local Ray; keep an existing connection."""
    import ray

    if ray.is_initialized():
        return
    # Ray starts its processes with fork+exec, which is safe; lance warns on any fork after import
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def apply_stage(ds: Any, group: StageGroup) -> Any:
    """One group of stages as a Ray Data operator: tasks, or an actor pool when a stage loads a model."""
    import ray.data

    own = group.apply(ds)
    if own is not None:
        return own
    common = {"batch_format": "pyarrow", "batch_size": group.batch_size, "num_cpus": group.resources.cpus}
    if group.resources.gpus:
        common["num_gpus"] = group.resources.gpus
    if group.actors:
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=group.actors)
        return ds.map_batches(_GroupActor, fn_constructor_args=(group,), compute=pool, **common)
    return ds.map_batches(_run_group, fn_kwargs={"group": group}, **common)


def _run_group(batch: pa.Table, group: StageGroup) -> Iterator[pa.Table]:
    """Rows through the group's stages; each output batch carries the stage seconds spent on it (and those the
    operators before spent on its input, on its first row)."""
    rows = batch.to_pylist()
    carried: Counter[str] = Counter()
    for row in rows:
        carried.update(json.loads(row.pop("stage_seconds", None) or "{}"))
    for out, seconds in group.batches(rows):
        out[0]["stage_seconds"] = json.dumps(dict(carried + seconds))
        carried = Counter()
        yield rows_to_table(out, group.output_schema)


class _GroupActor:
    """Holds one group whose stages' `setup` ran once, in this actor."""

    def __init__(self, group: StageGroup):
        group.setup()
        self.group = group

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        yield from _run_group(batch, self.group)


class Committer:
    """Collects receipts from the write stage and commits fragments, then `sources` rows, in batches."""

    def __init__(self, clips_ds: Any, sources_ds: Any, cfg: CurateConfig, progress: CurateProgress):
        self.clips_ds, self.sources_ds = clips_ds, sources_ds
        self.storage = cfg.storage.lance_options
        self.config_hash = cfg.content_hash()
        self.every, self.interval = cfg.run.commit_every, cfg.run.commit_interval_s
        self.progress = progress
        self.fragments: list[Any] = []
        self.received: Counter[str] = Counter()
        self.passed: Counter[str] = Counter()
        self.closing: dict[str, dict[str, Any]] = {}  # closing rows of sources whose clips are not all in yet
        self.completed: list[dict[str, Any]] = []  # closing rows of sources whose clips are all written
        self.finished: list[dict[str, Any]] = []  # committed source summaries
        self.stage_seconds: Counter[str] = Counter()  # summed over every worker
        self.last_commit = time.monotonic()

    def add(self, receipt: dict[str, Any]) -> None:
        """A write receipt: its fragments wait for the next commit; a source is complete once its closing row
        (shot_split's last row of it, `is_clip` False) and all `src_n_clips` clip rows it announces are in."""
        from lance.fragment import FragmentMetadata

        self.fragments += [FragmentMetadata.from_json(json.dumps(f)) for f in json.loads(receipt["fragments"])]
        self.stage_seconds.update(json.loads(receipt.get("stage_seconds") or "{}"))
        rows = json.loads(receipt["rows"])
        self.progress.add_clips(rows)
        for row in rows:
            sid = row["source_id"]
            if row["is_clip"]:
                self.received[sid] += 1
                self.passed[sid] += bool(row["passed"])
            else:
                self.closing[sid] = row
            closing = self.closing.get(sid)
            if closing is not None and self.received[sid] == (closing["src_n_clips"] or 0):
                self.completed.append(self.closing.pop(sid))
        if len(self.completed) >= self.every or time.monotonic() - self.last_commit >= self.interval:
            self.commit()

    def commit(self) -> None:
        """Fragments first, then the clips of sources that failed after sending some are deleted, then the
        `sources` rows: a source is done only once its clips are final (commits.py)."""
        if self.fragments:
            self.clips_ds = commits.commit_fragments(self.clips_ds, self.fragments, self.storage)
            self.fragments = []
        failed = {r["source_id"] for r in self.completed if r["src_status"] != "ok" and self.received[r["source_id"]]}
        if failed:  # e.g. truncated: its decode broke off after some windows were already out
            commits.delete_sources(self.clips_ds, failed)  # moves clips_ds to the new version
            for sid in failed:
                self.progress.clips_kept -= self.passed[sid]
                self.received[sid] = self.passed[sid] = 0
        if self.completed:
            table = rows_to_table([self._source_row(r) for r in self.completed], tables.SOURCES_SCHEMA)
            self.sources_ds = commits.append_rows(self.sources_ds, table, self.storage)
            self.progress.add_sources(self.completed)
            self.finished += self.completed
            self.completed = []
        self.last_commit = time.monotonic()

    def _source_row(self, r: dict[str, Any]) -> dict[str, Any]:
        import datetime

        src = {k.removeprefix("src_"): v for k, v in r.items() if k.startswith("src_")}
        return {**src, "source_id": r["source_id"], "uri": r["source_uri"], "role": r["role"],
                "media_type": r["media_type"] if src["status"] == "ok" else "unknown",
                "caption": r["caption"], "edit_target_uri": r["edit_target_uri"],
                "edit_instruction": r["edit_instruction"], "n_clips": self.received[r["source_id"]],
                "n_clips_passed": self.passed[r["source_id"]], "config_hash": self.config_hash,
                "created_at": datetime.datetime.now(datetime.UTC)}  # fmt: skip


def curate(input_uri: str, output: str, cfg: CurateConfig, address: str | None = None,
           progress: CurateProgress | None = None) -> RunSummary:  # fmt: skip
    """Curate `input_uri` into `output` (tables `clips` and `sources`); resumes an earlier run there."""
    import ray.data

    t0 = time.monotonic()
    storage = cfg.storage.lance_options
    listed = list_sources(input_uri, cfg.inputs, cfg.storage.options)  # InputError: nothing started yet
    clips_ds = commits.open_or_create(output, tables.CLIPS_TABLE, storage)
    sources_ds = commits.open_or_create(output, tables.SOURCES_TABLE, storage)
    done = commits.done_source_ids(sources_ds)
    summary = RunSummary(inputs=len(listed), skipped_done=sum(s["source_id"] in done for s in listed))
    summary.orphans_deleted = commits.delete_orphans(clips_ds, done)  # moves clips_ds to the new version
    pending = [s for s in listed if s["source_id"] not in done]
    progress = progress or CurateProgress(len(pending))
    committer = Committer(clips_ds, sources_ds, cfg, progress)
    if pending:
        init_ray(address, cfg.run.num_cpus)
        _quiet_ray_data()
        resources = ray.cluster_resources()
        stages = build_stages(cfg, commits.table_uri(output, tables.CLIPS_TABLE), cfg.content_hash(),
                              float(resources.get("GPU", 0.0)), float(resources.get("CPU", 1.0)))  # fmt: skip
        ds = ray.data.from_items(pending, override_num_blocks=min(len(pending), MAX_INPUT_BLOCKS))
        for group in group_stages(stages):
            ds = apply_stage(ds, group)
        with progress:
            try:
                for receipt in ds.iter_rows():
                    committer.add(receipt)
            except Exception as exc:  # noqa: BLE001 - keep what finished, report, let a rerun do the rest
                summary.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                log.exception("curation stopped early")
            finally:
                committer.commit()
                committer.clips_ds = commits.index_clip_ids(committer.clips_ds)
    for row in committer.finished:
        if row["src_status"] == "ok":
            summary.sources_ok += 1
        else:
            summary.sources_failed[row["src_error_kind"] or "unknown"] += 1
    summary.clips_per_s, summary.frames_per_s = progress.rates()
    summary.clips_kept = progress.clips_kept
    summary.clips_rejected = progress.rejected
    summary.incomplete = len(pending) - len(committer.finished)
    summary.stage_seconds = committer.stage_seconds
    summary.clips_version = committer.clips_ds.version
    summary.sources_version = committer.sources_ds.version
    summary.seconds = time.monotonic() - t0

    return summary


def _quiet_ray_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # CurateProgress shows ours
    ctx.execution_options.preserve_order = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
