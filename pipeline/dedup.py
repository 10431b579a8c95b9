"""`mfm curate dedup`: mark near-duplicate clips in `duplicate_of` with Lance's vector search over `clip_emb`.

Index design: `clip_emb` is a variable-length list in the contract, and Lance's vector indexes need a
FixedSizeList column, so each run rewrites a side dataset `<output>/clip_emb.lance` (clip_id, rank, vector
FixedSizeList<float32, D>) from the clips table; it is derived data, never the source of truth. With at least
`index_min_rows` rows it gets an IVF_FLAT cosine index (approximate); below that, IVF training on a handful of
rows is pointless or refused, so the search is Lance's exact (flat) `nearest` scan.

Rule: clips are ranked by (created_at, clip_id). A clip whose nearest earlier neighbour (among its `k`
nearest) has cosine >= threshold gets `duplicate_of` = that neighbour's canonical clip (the first of its
group). Rows are never deleted: `duplicate_of` is set (or cleared) in one `merge_insert` commit of just the
changed rows, and a rerun with the same rows and threshold changes nothing (no commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import commits
from pipeline.contract import tables

EMB_TABLE = "clip_emb"


@dataclass
class DedupSummary:
    clips: int = 0  # rows with a clip_emb
    duplicates: int = 0  # rows now marked
    changed: int = 0  # rows whose duplicate_of this run set or cleared
    indexed: bool = False  # IVF index (else exact flat search)
    version: int = 0  # clips table version after the run

    def lines(self) -> list[str]:
        search = "IVF_FLAT cosine index" if self.indexed else "exact flat search (too few rows for an index)"
        return [f"dedup: {self.clips} clips with clip_emb, {self.duplicates} marked duplicate_of "
                f"({self.changed} changed), {search}; clips v{self.version}"]  # fmt: skip


def find_duplicates(ds: Any, threshold: float, k: int = 10) -> dict[str, str]:
    """clip_id -> canonical clip_id for each near-duplicate in the vector dataset `ds` (clip_id, rank, vector)."""
    meta = ds.to_table(columns=["clip_id", "rank", "vector"]).sort_by("rank")
    ids = meta["clip_id"].to_pylist()
    vectors = np.asarray(meta["vector"].combine_chunks().flatten(), np.float32).reshape(len(ids), -1)
    rank = {cid: i for i, cid in enumerate(ids)}
    canonical: dict[str, str] = {}
    for i, (cid, vec) in enumerate(zip(ids, vectors, strict=True)):
        if i == 0:
            continue
        hits = ds.to_table(nearest={"column": "vector", "q": vec, "k": min(k + 1, len(ids)), "metric": "cosine",
                                    "nprobes": 32, "refine_factor": 4},
                           columns=["clip_id"], filter=f"rank < {i}", prefilter=True)  # fmt: skip
        for other, dist in zip(hits["clip_id"].to_pylist(), hits["_distance"].to_pylist(), strict=True):
            if other != cid and rank[other] < i and 1.0 - dist >= threshold:
                canonical[cid] = canonical.get(other, other)  # earlier rows are resolved already
                break
    return canonical


def dedup(output: str, threshold: float = 0.95, k: int = 10, index_min_rows: int = 5000,
          storage_options: dict[str, Any] | None = None) -> DedupSummary:  # fmt: skip
    """Mark near-duplicates in `<output>/clips.lance` (see the module docstring); -> what it did."""
    import lance

    if not 0 < threshold <= 1:
        raise ValueError(f"threshold is a cosine in (0, 1], got {threshold}")
    clips_ds = lance.dataset(commits.table_uri(output, tables.CLIPS_TABLE), storage_options=storage_options or None)
    tables.check_schema(clips_ds.schema, tables.CLIPS_TABLE, writing=True)  # v3: has clip_emb, duplicate_of
    rows = clips_ds.to_table(columns=["clip_id", "clip_emb", "clip_model", "duplicate_of", "created_at"],
                             filter="clip_emb IS NOT NULL").to_pylist()  # fmt: skip
    summary = DedupSummary(clips=len(rows), version=clips_ds.version)
    models = {r["clip_model"] for r in rows}
    dims = {len(r["clip_emb"]) for r in rows}
    if len(models) > 1 or len(dims) > 1:
        raise ValueError(f"clip_emb from different models {sorted(models)} / sizes {sorted(dims)}: not comparable")
    if not rows:
        return summary
    rows.sort(key=lambda r: (r["created_at"], r["clip_id"]))
    dim = dims.pop()
    vectors = pa.FixedSizeListArray.from_arrays(pa.array([x for r in rows for x in r["clip_emb"]], pa.float32()), dim)
    side = pa.table({"clip_id": [r["clip_id"] for r in rows], "rank": pa.array(range(len(rows)), pa.int64()),
                     "vector": vectors})  # fmt: skip
    emb_ds = lance.write_dataset(side, commits.table_uri(output, EMB_TABLE), mode="overwrite",
                                 storage_options=storage_options or None)  # fmt: skip
    if len(rows) >= index_min_rows:
        emb_ds.create_index("vector", index_type="IVF_FLAT", metric="cosine",
                            num_partitions=max(1, int(np.sqrt(len(rows)))))  # fmt: skip
        summary.indexed = True
    marks = find_duplicates(emb_ds, threshold, k)
    summary.duplicates = len(marks)
    changed = [(r["clip_id"], marks.get(r["clip_id"])) for r in rows if r["duplicate_of"] != marks.get(r["clip_id"])]
    summary.changed = len(changed)
    if changed:
        update = pa.table({"clip_id": [c for c, _ in changed], "duplicate_of": pa.array([d for _, d in changed],
                                                                                       pa.string())})  # fmt: skip
        clips_ds.merge_insert("clip_id").when_matched_update_all().execute(update)
        clips_ds = commits.index_clip_ids(lance.dataset(clips_ds.uri, storage_options=storage_options or None))
    summary.version = clips_ds.version
    return summary
