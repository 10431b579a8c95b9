"""Workers write the clip rows of each batch as Lance fragment files; the driver commits them (engine.py).

Writing a fragment does not change the table: until the driver commits, the files are invisible, so a
killed run leaves the last committed version intact. The stage returns a receipt per batch: the
fragment metadata and a small summary of every row, from which the driver builds the `sources` rows.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.contract import tables
from pipeline.stages.base import TRANSIENT_COLUMNS, Stage, rows_to_table

RECEIPT_SCHEMA = pa.schema([pa.field("fragments", pa.string()), pa.field("rows", pa.string()),
                            pa.field("stage_seconds", pa.string())])  # JSON {stage: seconds} of these rows
SUMMARY_KEYS = (
    "source_id", "source_uri", "role", "media_type", "caption", "edit_target_uri", "edit_instruction",
    "src_status", "src_error_kind", "src_error", "src_size_bytes", "src_container", "src_codec", "src_fps",
    "src_n_frames", "src_width", "src_height", "src_duration_s", "src_n_shots", "src_n_clips",
    "is_clip", "clip_id", "passed", "reject_reason", "n_frames", "blur_score", "motion_score",
)  # fmt: skip


@dataclass
class WriteStage(Stage):
    """Clip rows -> one uncommitted fragment of `clips_uri` per batch -> a receipt row."""

    name = "write"
    reads = tuple(f.name for f in tables.CLIPS_SCHEMA)
    writes = ("<fragment files>",)
    output_schema = RECEIPT_SCHEMA

    clips_uri: str = ""
    config_hash: str = ""

    def stream(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Batches of `batch_size` rows, each row without its transient arrays (`frames`) while it waits."""
        yield from super().stream({k: v for k, v in row.items() if k not in TRANSIENT_COLUMNS} for row in rows)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import lance

        now = datetime.datetime.now(datetime.UTC)
        clips = [{**row, "config_hash": self.config_hash, "created_at": now} for row in rows if row.get("is_clip")]
        fragments = []
        if clips:
            table = rows_to_table(clips, tables.CLIPS_SCHEMA)
            written = lance.fragment.write_fragments(
                table, self.clips_uri, schema=tables.CLIPS_SCHEMA, mode="append",
                storage_options=self.storage_options or None,
            )  # fmt: skip
            fragments = [frag.to_json() for frag in written]
        summary = [{k: row.get(k) for k in SUMMARY_KEYS} for row in rows]
        return [{"fragments": json.dumps(fragments), "rows": json.dumps(summary)}]
