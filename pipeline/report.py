"""`mfm curate report`: one self-contained HTML file about a curated output folder.

Histograms (inline SVG) of blur, motion, duration, size and aesthetic score; the near-duplicate count;
rejection reasons; failed sources with their errors; and a contact sheet (PNG, base64-embedded) of kept clips
beside their depth maps.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import commits
from pipeline.contract import codecs, tables

_SCALAR_COLUMNS = ["clip_id", "source_uri", "media_type", "n_frames", "duration_s", "width", "height",
                   "source_width", "source_height", "caption", "blur_score", "motion_score", "motion_method",
                   "passed", "reject_reason", "video_format"]  # fmt: skip


def task_table(clips_ds: Any) -> tuple[dict[str, int], Counter, int]:
    """(clips that qualify per task under the default quality policy, clips per quality tag, trainable clips)
    over the rows the trainer reads: passed, with media, not an edit target."""
    from model.task_sampling import qualifying_counts

    columns = ["media_type", "n_frames", "role", "edit_instruction"]
    columns += ["quality_tags"] if "quality_tags" in clips_ds.schema.names else []  # schema v3
    rows = clips_ds.to_table(columns=columns, filter="passed AND video IS NOT NULL AND role != 'edit_target'")
    rows = rows.to_pylist()
    tags = Counter(tag for row in rows for tag in row.get("quality_tags") or ())
    return qualifying_counts(rows), tags, len(rows)


def task_lines(clips_ds: Any) -> list[str]:
    """`task_table` as text lines (for `mfm curate --describe --output ...`)."""
    counts, tags, n = task_table(clips_ds)
    lines = [f"{n} trainable clips; clips that qualify per task (default tasks.quality_policy):"]
    lines += [f"  {task:<8} {count}" for task, count in counts.items()]
    lines.append("quality tags: " + (", ".join(f"{t} {tags[t]}" for t in tables.QUALITY_TAGS if tags[t]) or "none"))
    return lines


def svg_histogram(values: list[float], title: str, unit: str = "", bins: int = 20) -> str:
    """A bar chart of `values` as an inline SVG element."""
    width, height, pad = 360, 180, 28
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    head = f'<figure><figcaption>{html.escape(title)} (n={len(vals)})</figcaption>'
    if len(vals) == 0:
        return head + "<p>no values</p></figure>"
    lo, hi = float(vals.min()), float(vals.max())
    counts, edges = np.histogram(vals, bins=bins, range=(lo, hi if hi > lo else lo + 1))
    bar_w = (width - 2 * pad) / bins
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#444"/>']
    for i, count in enumerate(counts):
        h = (height - 2 * pad) * count / max(counts.max(), 1)
        x, y = pad + i * bar_w, height - pad - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" fill="#4878a8">'
                     f"<title>{edges[i]:.3g}-{edges[i + 1]:.3g}: {count}</title></rect>")  # fmt: skip
    parts.append(f'<text x="{pad}" y="{height - 8}" font-size="11">{lo:.3g}{unit}</text>')
    parts.append(f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">{hi:.3g}{unit}</text>')
    parts.append(f'<text x="{pad}" y="{pad - 8}" font-size="11">max {counts.max()}</text></svg>')
    return head + "".join(parts) + "</figure>"


def depth_to_rgb(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Raw depth (H, W) -> RGB (H, W, 3) uint8 with the inferno colour map between lo and hi."""
    import cv2

    norm = np.clip((depth - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]


def draw_text_boxes(frame: np.ndarray, boxes: list[list[float]] | None) -> np.ndarray:
    """A copy of `frame` (H, W, 3) with the OCR `text_boxes` ([x0, y0, x1, y1] in [0, 1]) outlined in red."""
    import cv2

    out = np.ascontiguousarray(frame).copy()
    h, w = out.shape[:2]
    for x0, y0, x1, y1 in boxes or []:
        cv2.rectangle(out, (round(x0 * w), round(y0 * h)), (round(x1 * w), round(y1 * h)), (255, 0, 0), 2)
    return out


def contact_sheet(clips_ds: Any, offsets: list[int], tile_height: int = 120) -> list[np.ndarray]:
    """For each row offset: its first, middle and last frame, each beside its depth map -> RGB (h, W, 3); the
    first frame shows the OCR text boxes (v3 tables)."""
    import cv2

    if not offsets:
        return []
    blobs = clips_ds.take_blobs("video", indices=offsets)
    columns = ["depth_frames", "depth_min", "depth_max"] + (["text_boxes"] if "text_boxes" in clips_ds.schema.names
                                                            else [])  # fmt: skip
    depth_rows = clips_ds.take(offsets, columns=columns).to_pylist()
    rows = []
    for blob, depth_row in zip(blobs, depth_rows, strict=True):
        frames = codecs.decode_video(blob.readall())  # (T, H, W, 3)
        frames[0] = draw_text_boxes(frames[0], depth_row.get("text_boxes"))
        depth = None
        if depth_row["depth_frames"]:
            depth = codecs.decode_depth(depth_row["depth_frames"], depth_row["depth_min"], depth_row["depth_max"])
        tiles = []
        for t in sorted({0, len(frames) // 2, len(frames) - 1}):
            tiles.append(frames[t])
            if depth is not None:
                tiles.append(depth_to_rgb(depth[t], float(depth.min()), float(depth.max())))
        scaled = [cv2.resize(x, (round(x.shape[1] * tile_height / x.shape[0]), tile_height)) for x in tiles]
        rows.append(np.concatenate([np.pad(x, ((2, 2), (2, 2), (0, 0)), constant_values=255) for x in scaled], 1))
    return rows


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Contact-sheet rows -> one image, left-aligned on white."""
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])


def _b64png(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode()


def png_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", image[..., ::-1])
    assert ok
    return data.tobytes()


def write_report(output: str, out_html: str | Path, n_clips: int = 8, storage_options: dict | None = None,
                 sheet_png: str | Path | None = None) -> Path:  # fmt: skip
    """Read the tables under `output` and write the report to `out_html` (and the sheet to `sheet_png`)."""
    clips_ds = commits.open_or_create(output, tables.CLIPS_TABLE, storage_options)
    sources_ds = commits.open_or_create(output, tables.SOURCES_TABLE, storage_options)
    extra = [c for c in ("aesthetic", "duplicate_of", "text_area", "watermark", "caption_source")
             if c in clips_ds.schema.names]  # v3 columns
    clips = clips_ds.to_table(columns=_SCALAR_COLUMNS + extra).to_pylist()
    duplicates = sum(c.get("duplicate_of") is not None for c in clips)
    sources = sources_ds.to_table(columns=["uri", "status", "error_kind", "error", "n_clips", "n_clips_passed"])
    sources = sources.to_pylist()

    kept = [i for i, c in enumerate(clips) if c["passed"] and c["video_format"]]
    reasons = Counter(r for c in clips if not c["passed"] for r in (c["reject_reason"] or "unknown").split(","))
    failed = [s for s in sources if s["status"] != "ok"]
    picks = [kept[round(i)] for i in np.linspace(0, len(kept) - 1, min(n_clips, len(kept)))] if kept else []
    sheet = contact_sheet(clips_ds, picks)
    sheet_html = "".join(
        f'<div class="clip"><img alt="clip {k}" src="data:image/png;base64,{_b64png(row)}">'
        f"<p>{html.escape(clips[i]['source_uri'])} [{clips[i]['n_frames']} frames, blur "
        f"{clips[i]['blur_score'] or 0:.0f}, motion {clips[i]['motion_score'] or 0:.2f} px/f]<br>"
        f"<i>{html.escape(clips[i]['caption'] or '')}</i>"
        f"{' (' + html.escape(clips[i]['caption_source']) + ')' if clips[i].get('caption_source') else ''}</p></div>"
        for k, (i, row) in enumerate(zip(picks, sheet, strict=True))
    ) or "<p>no kept clips</p>"
    if sheet and sheet_png:
        Path(sheet_png).write_bytes(png_bytes(stack_rows(sheet)))

    videos = [c for c in clips if c["media_type"] == "video"]
    hists = "".join([
        svg_histogram([c["blur_score"] for c in clips], "blur score (Laplacian variance)"),
        svg_histogram([c["motion_score"] for c in videos], "motion score", " px/f"),
        svg_histogram([c["duration_s"] for c in videos], "duration", " s"),
        svg_histogram([min(c["source_width"] or 0, c["source_height"] or 0) for c in clips], "size (short side)",
                      " px"),
        svg_histogram([c.get("aesthetic") for c in clips], "aesthetic score (LAION)"),
        svg_histogram([c.get("text_area") for c in clips], "text area (share of the frame)"),
        svg_histogram([c.get("watermark") for c in clips], "watermark score"),
    ])  # fmt: skip
    task_counts, tag_counts, trainable = task_table(clips_ds)
    task_rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in task_counts.items())
    tag_rows = "".join(f"<tr><td>{t}</td><td>{tag_counts[t]}</td></tr>" for t in tables.QUALITY_TAGS)
    reason_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in reasons.most_common())
    failed_rows = "".join(
        f"<tr><td>{html.escape(s['uri'])}</td><td>{html.escape(s['error_kind'] or '')}</td>"
        f"<td>{html.escape((s['error'] or '')[:300])}</td></tr>"
        for s in failed
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>mfm curate report</title>
<style>body{{font-family:sans-serif;margin:24px}} figure{{display:inline-block;margin:8px}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
img{{max-width:100%}} .clip{{display:flex;align-items:center;gap:12px}}
.clip p{{font-size:13px;margin:0}}</style></head><body>
<h1>mfm curate report</h1>
<p>{html.escape(str(output))} &middot; clips table v{clips_ds.version}, sources v{sources_ds.version}</p>
<p><b>{len(sources)}</b> sources ({len(failed)} failed) &middot; <b>{len(clips)}</b> clips:
<b>{len(kept)}</b> kept, <b>{len(clips) - sum(c['passed'] for c in clips)}</b> rejected,
<b>{duplicates}</b> near-duplicates (duplicate_of set by <code>mfm curate dedup</code>)</p>
<h2>Distributions</h2>{hists}
<h2>Tasks: clips that qualify (of {trainable} trainable; default quality policy)</h2>
<table><tr><th>task</th><th>clips</th></tr>{task_rows}</table>
<h2>Quality tags</h2><table><tr><th>tag</th><th>clips</th></tr>{tag_rows}</table>
<h2>Rejection reasons</h2><table><tr><th>reason</th><th>clips</th></tr>{reason_rows}</table>
<h2>Failed sources</h2><table><tr><th>uri</th><th>kind</th><th>error</th></tr>{failed_rows}</table>
<h2>Contact sheet: kept clips (first, middle, last frame) beside their depth maps</h2>{sheet_html}
</body></html>"""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(body, encoding="utf-8")
    return out_html
