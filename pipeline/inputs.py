"""Listing the inputs of a curation run through fsspec: a folder or a manifest, local or remote.

- folder (`/data/raw`, `s3://bucket/raw`): every video and image below it; the caption is the text of the
  sidecar `<stem>.txt` beside the file (read later, in the probe stage).
- manifest (`.csv`, `.jsonl`, `.parquet`): one row per input with `uri` (or `path`) and optional
  `caption`; an edit pair adds `edit_target` (the edited file) and `instruction`. Relative uris are
  relative to the manifest.

Each input becomes one dict with the `sources` key fields (`source_row`), in listing order, without
duplicates. An edit pair lists two sources: the original ("edit_source") and its edit ("edit_target").
"""

from __future__ import annotations

import io
import os
import posixpath
from typing import Any

from pipeline.config import InputConfig
from pipeline.contract import tables
from pipeline.ops.media import is_local

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
URI_COLUMNS = ("uri", "path")


class InputError(ValueError):
    """The input itself (folder or manifest) cannot be listed."""


def normalize_uri(uri: str, base: str | None = None) -> str:
    """Local paths -> absolute paths (relative ones against `base`); URLs unchanged."""
    uri = uri.strip()
    if not is_local(uri):
        return uri
    path = uri.removeprefix("file://")
    if base is not None and not os.path.isabs(path):
        if not is_local(base):
            return posixpath.join(base, path)
        path = os.path.join(base, path)
    return os.path.abspath(path)


def source_row(uri: str, role: str = "clip", caption: str | None = None, caption_uri: str | None = None,
               edit_target_uri: str | None = None, edit_instruction: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The fields of one input known before probing."""
    from pipeline.ops.media import media_type_of

    return {"source_uri": uri, "source_id": tables.source_id(uri), "role": role,
            "media_type": media_type_of(uri), "caption": caption, "caption_uri": caption_uri,
            "caption_source": "manifest" if caption else None,  # None: the probe reads the sidecar
            "edit_target_uri": edit_target_uri, "edit_instruction": edit_instruction}  # fmt: skip


def list_sources(input_uri: str, cfg: InputConfig, storage_options: dict[str, Any] | None = None) -> list[dict]:
    """All inputs under a folder or in a manifest; raises InputError when the input cannot be listed."""
    import fsspec

    uri = normalize_uri(input_uri)
    try:
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        if uri.lower().endswith(MANIFEST_SUFFIXES):
            rows = _manifest_rows(fs, path, uri)
        elif fs.isdir(path):
            rows = _folder_rows(fs, path, cfg)
        else:
            raise InputError(f"{input_uri}: not a folder or a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the input as a whole is unusable: say which and why
        raise InputError(f"{input_uri}: cannot list inputs: {type(exc).__name__}: {exc}") from exc
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["source_uri"] not in seen:
            seen.add(row["source_uri"])
            unique.append(row)
    return unique


def _folder_rows(fs: Any, root: str, cfg: InputConfig) -> list[dict]:
    files = sorted(fs.find(root))
    names = set(files)
    suffixes = tuple(s.lower() for s in (*cfg.video_extensions, *cfg.image_extensions))
    rows = []
    for path in files:
        if not path.lower().endswith(suffixes):
            continue
        sidecar = posixpath.splitext(path)[0] + ".txt"
        caption_uri = _full(fs, sidecar) if cfg.captions_from_sidecar and sidecar in names else None
        rows.append(source_row(_full(fs, path), caption_uri=caption_uri))
    return rows


def _full(fs: Any, path: str) -> str:
    """A path from `fs` as the uri we store: absolute local path or protocol://path."""
    full = fs.unstrip_protocol(path)
    return full.removeprefix("file://") if full.startswith("file://") else full


def _manifest_rows(fs: Any, path: str, uri: str) -> list[dict]:
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    data = fs.cat_file(path)
    lower = uri.lower()
    if lower.endswith(".csv"):
        table = pcsv.read_csv(io.BytesIO(data))
    elif lower.endswith(".jsonl"):
        table = pjson.read_json(io.BytesIO(data))
    else:
        table = pq.read_table(io.BytesIO(data))
    uri_col = next((c for c in URI_COLUMNS if c in table.column_names), None)
    if uri_col is None:
        raise InputError(f"{uri}: manifest needs a column named one of {URI_COLUMNS}; has {table.column_names}")
    base = uri.rsplit("/", 1)[0] if not is_local(uri) else os.path.dirname(uri)
    rows = []
    for n, record in enumerate(table.to_pylist()):
        if not record.get(uri_col):
            raise InputError(f"{uri}: row {n} has an empty {uri_col!r}")
        source = normalize_uri(str(record[uri_col]), base)
        caption = _text(record.get("caption"))
        target = _text(record.get("edit_target"))
        instruction = _text(record.get("instruction"))
        if target is None:
            rows.append(source_row(source, caption=caption))
            continue
        target = normalize_uri(target, base)
        rows.append(source_row(source, "edit_source", caption, None, target, instruction))
        rows.append(source_row(target, "edit_target", None, None, None, instruction))
    return rows


def _text(value: Any) -> str | None:
    """A manifest cell as text; empty cells (None, NaN, "") are None."""
    if value is None or (isinstance(value, float) and value != value) or not str(value).strip():
        return None
    return str(value)
