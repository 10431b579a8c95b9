"""Probe each source: fetch it when remote, read size, container, codec, fps, frame count and frame size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.ops import media
from pipeline.stages.base import Stage


@dataclass
class ProbeStage(Stage):
    """Source row -> the same row with `src_*` probe fields; a failure sets src_status "failed"."""

    name = "probe"
    reads = ("source_uri", "media_type", "caption_uri")
    writes = ("src_status", "src_error_kind", "src_error", "src_size_bytes", "src_container", "src_codec",
              "src_fps", "src_n_frames", "src_width", "src_height", "src_duration_s", "caption",
              "caption_source")  # fmt: skip


    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self._probe(row) for row in rows]

    def _probe(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            path = media.local_path(row["source_uri"], self.storage_options, self.cache_dir)
            info = media.probe(path, row["media_type"])
        except media.MediaError as exc:
            return {**row, "src_status": "failed", "src_error_kind": exc.kind, "src_error": exc.message}
        except Exception as exc:  # noqa: BLE001 - anything else unexpected is still this source's failure
            return {**row, "src_status": "failed", "src_error_kind": "decode_error",
                    "src_error": f"{row['source_uri']}: {type(exc).__name__}: {exc}"}  # fmt: skip
        out = {**row, "src_status": "ok", **{f"src_{k}": v for k, v in info.items()}}
        if row.get("caption") is None:
            out["caption"] = self._sidecar_caption(row.get("caption_uri"))
        if not row.get("caption_source"):  # "manifest" set by inputs.source_row
            out["caption_source"] = "sidecar" if out["caption"] else ""
        return out

    def _sidecar_caption(self, uri: str | None) -> str:
        if not uri:
            return ""
        try:
            with open(media.local_path(uri, self.storage_options, self.cache_dir), encoding="utf-8") as f:
                return f.read().strip()
        except (media.MediaError, OSError, UnicodeDecodeError):
            return ""
