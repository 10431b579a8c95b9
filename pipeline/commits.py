"""The output tables on disk or an object store: create, open, append-commit, and resume bookkeeping.

Crash safety comes from Lance's commit protocol: fragment files are invisible until a commit names
them, and a commit is one atomic manifest write. The driver commits in this order:

1. `clips`: an Append of the fragments the workers wrote since the last commit (any mix of sources);
2. `sources`: an Append of one row per source whose clip rows are all in committed fragments.

A `sources` row is therefore the "done" marker. A run killed between 1 and 2 (or mid-source) leaves
clip rows of unfinished sources ("orphans"): `delete_orphans` removes them when the next run starts,
and that run processes those sources again; clip_ids are deterministic, so the result equals an
unbroken run.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.contract import tables


def table_uri(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}.lance"


def open_or_create(root: str, name: str, storage_options: dict[str, Any] | None = None) -> Any:
    """Open table `name` under `root` (checking its schema version), creating it empty when missing."""
    import lance

    uri = table_uri(root, name)
    try:
        ds = lance.dataset(uri, storage_options=storage_options or None)
    except ValueError as exc:
        if "not found" not in str(exc).lower():
            raise
        empty = tables.SCHEMAS[name].empty_table()
        return lance.write_dataset(
            empty, uri, schema=tables.SCHEMAS[name], mode="create",
            data_storage_version=tables.LANCE_STORAGE_VERSION, storage_options=storage_options or None,
        )  # fmt: skip
    tables.check_schema(ds.schema, name, writing=True)
    return ds


def commit_fragments(ds: Any, fragments: list[Any], storage_options: dict[str, Any] | None = None) -> Any:
    """Append written fragments to `ds` in one commit based on the version we read."""
    import lance

    return lance.LanceDataset.commit(
        ds.uri, lance.LanceOperation.Append(fragments), read_version=ds.version,
        storage_options=storage_options or None,
    )  # fmt: skip


def append_rows(ds: Any, table: pa.Table, storage_options: dict[str, Any] | None = None) -> Any:
    """Write `table` as new fragments of `ds` and commit them."""
    import lance

    fragments = lance.fragment.write_fragments(
        table, ds.uri, schema=ds.schema, mode="append", storage_options=storage_options or None
    )
    return commit_fragments(ds, fragments, storage_options)


def done_source_ids(sources_ds: Any) -> set[str]:
    """source_id of every source recorded as done (ok or failed)."""
    return set(sources_ds.to_table(columns=["source_id"]).column("source_id").to_pylist())


def delete_orphans(clips_ds: Any, done: set[str]) -> int:
    """Delete clip rows whose source has no `sources` row (left by a killed run); -> rows deleted."""
    present = set(clips_ds.to_table(columns=["source_id"]).column("source_id").unique().to_pylist())
    return delete_sources(clips_ds, present - done)


def delete_sources(clips_ds: Any, source_ids: set[str], chunk: int = 500) -> int:
    """Delete the clip rows of `source_ids` (a new version of `clips_ds`); -> rows deleted."""
    ids = sorted(source_ids)
    before = clips_ds.count_rows() if ids else 0
    for start in range(0, len(ids), chunk):
        quoted = ", ".join(f"'{sid}'" for sid in ids[start : start + chunk])  # uuids: no quoting issues
        clips_ds.delete(f"source_id IN ({quoted})")
    return before - clips_ds.count_rows() if ids else 0


def index_clip_ids(clips_ds: Any) -> Any:
    """A BTREE index on `clip_id` (created, or brought up to date with new fragments): the trainer's edit-pair
    lookup (`clip_id = '...'`) is then a point lookup, not a scan of the table."""
    if clips_ds.count_rows() == 0:
        return clips_ds
    if any(index.field_names == ["clip_id"] for index in clips_ds.describe_indices()):
        clips_ds.optimize.optimize_indices()
    else:
        clips_ds.create_scalar_index("clip_id", index_type="BTREE")
    return clips_ds
