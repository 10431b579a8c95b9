"""What a curation stage is: a dataclass of knobs with declared resources, `setup()` and `process(rows)`.

Rows are plain dicts whose keys are `WORK_SCHEMA` columns: the `clips` columns plus the probe results of
the row's source (`src_*`) and transient columns (`motion_pairs`, `frames`) that later stages consume.
A stage never raises for a bad clip: it records `error` and a reject reason and passes the row on.
Stages run without Ray in tests (`stage.setup(); stage.process(rows)`); pipeline/engine.py runs them
as Ray Data operators.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from pipeline.contract import tables
from pipeline.ops import media

_SOURCE_FIELDS = [
    pa.field("caption_uri", pa.string()),
    pa.field("edit_target_uri", pa.string()),
    pa.field("src_status", pa.string()),
    pa.field("src_error_kind", pa.string()),
    pa.field("src_error", pa.string()),
    pa.field("src_size_bytes", pa.int64()),
    pa.field("src_container", pa.string()),
    pa.field("src_codec", pa.string()),
    pa.field("src_fps", pa.float32()),
    pa.field("src_n_frames", pa.int32()),
    pa.field("src_width", pa.int32()),
    pa.field("src_height", pa.int32()),
    pa.field("src_duration_s", pa.float32()),
    pa.field("src_n_shots", pa.int32()),
    pa.field("src_n_clips", pa.int32()),  # clip rows made from the source (0: one placeholder row)
    pa.field("is_clip", pa.bool_()),  # False: the placeholder row of a source without clips
]
_TRANSIENT_FIELDS = [
    pa.field("motion_pairs", pa.large_binary()),  # uint8 (N, 2, h, w, 3), C order
    pa.field("motion_pairs_shape", pa.list_(pa.int32())),
    pa.field("frames", pa.large_binary()),  # uint8 (T, H, W, 3) of the stored clip, C order
    pa.field("stage_seconds", pa.string()),  # JSON {stage: seconds} the operators before spent, on one row
]
# Everything that flows between stages; before shot_split a row is a source (clip fields null).
WORK_SCHEMA = pa.schema(
    [f.with_nullable(True) for f in tables.CLIPS_SCHEMA] + _SOURCE_FIELDS + _TRANSIENT_FIELDS
)
TRANSIENT_COLUMNS = tuple(f.name for f in _TRANSIENT_FIELDS)


@dataclass(frozen=True)
class Resources:
    """What one task or actor of a stage holds: fractional CPUs, GPUs (fractional to share one)."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.cpus <= 0:
            raise ValueError(f"cpus must be > 0, got {self.cpus}")
        if self.gpus < 0 or (self.gpus > 1 and self.gpus != int(self.gpus)):
            raise ValueError(f"gpus must be a fraction <= 1 or a whole number, got {self.gpus}")


@dataclass
class Stage:
    """One step of curation. Subclasses set `name`, `reads`, `writes` and implement `process`."""

    name: ClassVar[str] = "stage"
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    output_schema: ClassVar[pa.Schema] = WORK_SCHEMA
    decodes: ClassVar[bool] = False  # True: decodes the sources; the CPU stages after it share its process

    resources: Resources = field(default_factory=Resources)
    batch_size: int = 4
    actors: int = 0  # 0: stateless Ray tasks; n >= 1: a pool of n actors, each calling setup() once
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # fsspec/Lance; may hold credentials
    cache_dir: str = "/tmp/mfm-curate-cache"  # node-local copies of remote sources and weights

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"{self.name}: batch_size must be >= 1, got {self.batch_size}")
        if self.loads_model and self.actors < 1:  # a task may hold a GPU share that loads nothing (NVENC, NVDEC)
            raise ValueError(f"{self.name}: a stage that loads a model runs in an actor pool; set actors >= 1")

    @property
    def loads_model(self) -> bool:
        """True when `setup` loads something: the stage then runs in an actor pool."""
        return type(self).setup is not Stage.setup

    def setup(self) -> None:
        """Load models; called once per actor, never per batch."""

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def stream(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """`process` on `batch_size` rows at a time, as they come; a stage that emits rows while it works
        (shot_split, as the decode of a source goes on) overrides this."""
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == self.batch_size:
                yield from self.process(batch)
                batch = []
        if batch:
            yield from self.process(batch)

    def apply(self, ds: Any) -> Any | None:
        """A stage that is its own Ray Data operator (e.g. `ray.data.llm`) returns the new dataset; None: map."""
        return None

    def describe(self) -> dict[str, Any]:
        kind = f"actors x{self.actors}" if self.actors else "tasks"
        return {"stage": self.name, "kind": kind, "cpus": self.resources.cpus, "gpus": self.resources.gpus,
                "batch_size": self.batch_size, "reads": list(self.reads), "writes": list(self.writes)}  # fmt: skip


def is_active(row: dict[str, Any]) -> bool:
    """A clip row not yet rejected or broken: the rows scoring stages work on."""
    return bool(row.get("is_clip")) and not row.get("error") and row.get("reject_reason") is None


def reject(row: dict[str, Any], reason: str, error: str | None = None) -> None:
    """Add a reject reason (and error text) to a row."""
    reasons = [r for r in (row.get("reject_reason") or "").split(",") if r]
    if reason not in reasons:
        reasons.append(reason)
    row["reject_reason"] = ",".join(reasons)
    row["passed"] = False
    if error:
        row["error"] = error if not row.get("error") else f"{row['error']}; {error}"


@contextmanager
def rejecting_on_error(rows: dict[str, Any] | list[dict[str, Any]], reason: str, stage: str) -> Iterator[None]:
    """A failure inside the block rejects the clip row(s) with `reason` and the error text; the job goes on.
    A `MediaError` keeps its own message; anything else is prefixed with the stage and exception type."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - a failure on one clip must not stop the job
        text = exc.message if isinstance(exc, media.MediaError) else f"{stage}: {type(exc).__name__}: {exc}"
        for row in rows if isinstance(rows, list) else [rows]:
            reject(row, reason, text)


def row_frames(row: dict[str, Any]) -> np.ndarray:
    """The stored-size frames of a clip row, uint8 (T, H, W, 3): the array shot_split decoded (same process) or
    the bytes of the `frames` column (from an earlier operator)."""
    frames = row.get("frames")
    if frames is None:
        raise ValueError(f"clip {row.get('clip_id')}: no frames (the stage reads the frames shot_split decodes)")
    if isinstance(frames, np.ndarray):
        return frames
    return np.frombuffer(frames, np.uint8).reshape(row["n_frames"], row["height"], row["width"], 3)


def rows_to_table(rows: list[dict[str, Any]], schema_: pa.Schema = WORK_SCHEMA) -> pa.Table:
    """Rows -> an Arrow table with exactly `schema_` (missing keys are null, extra keys dropped). Arrays that
    stages hand each other in one process (`frames`, `motion_pairs`) become their C-order bytes here."""
    names = set(schema_.names)
    rows = [{k: v.tobytes() if isinstance(v, np.ndarray) and k in names else v for k, v in row.items()}
            for row in rows]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema_)
