"""Model weights from a local path or an object store, fetched once per node into a local cache."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.ops.media import is_local


def local_weights(uri: str, storage_options: dict[str, Any] | None, cache_dir: str) -> str:
    """A local file or folder with the weights at `uri` (s3://, gs://, ... are copied once per node)."""
    if is_local(uri):
        path = uri.removeprefix("file://")
        if not os.path.exists(path):
            raise FileNotFoundError(f"weights not found: {path}")
        return path
    import fsspec

    target = Path(cache_dir) / "weights" / hashlib.sha256(uri.encode()).hexdigest()[:32] / Path(uri).name
    if target.exists():
        return str(target)
    fs, remote = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".part-"))
    try:
        fs.get(remote, str(staging / target.name), recursive=fs.isdir(remote))
        os.replace(staging / target.name, target)  # atomic: actors on the node see all or nothing
    except OSError:
        if not target.exists():  # another actor on this node won the race: use its copy
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
