"""The tables of the Lance contract between curation (pipeline/) and training (trainer/): `clips` and `sources`.

Both tables are Lance datasets written with data storage version ``LANCE_STORAGE_VERSION`` and carry
``{SCHEMA_VERSION_KEY: SCHEMA_VERSION, TABLE_KEY: <name>}`` in their schema metadata; readers call
`check_schema` before trusting the columns. Changes are additive and bump `SCHEMA_VERSION`; readers
accept older versions (a column added later is then absent: `COLUMNS_SINCE`), writers only the current.

`clips`: one row per clip or image (an image is a 1-frame clip), with a BTREE index on `clip_id` that curation
keeps current (`pipeline.commits.index_clip_ids`: an edit pair's target is a point lookup). Rejected clips stay in the
table with `passed = False` and a `reject_reason`, and carry no media.

| column | type | meaning |
| --- | --- | --- |
| clip_id | string | uuid5 of `source_uri` + frame span (`clip_id()`): a rerun never duplicates a clip |
| source_id | string | uuid5 of `source_uri` (`source_id()`), the key of `sources` |
| source_uri | string | the input file (local absolute path or `s3://`, `gs://`, ... URL) |
| role | string | `ROLES`: "clip" (ordinary), "edit_source" / "edit_target" (the two halves of an edit pair) |
| media_type | string | `MEDIA_TYPES`: "video" or "image" |
| frame_start, frame_end | int32 | frame span in the source, end exclusive; an image is [0, 1) |
| n_frames | int32 | frame_end - frame_start |
| fps | float32 | frames per second of source and stored clip (0 for images) |
| duration_s | float32 | n_frames / fps (0 for images) |
| source_width, source_height | int32 | size of the source frames |
| width, height | int32 | size of the stored media (source scaled to fit the configured max size, even sides) |
| caption | string | the caption (manifest column or sidecar .txt); "" when none |
| edit_target_clip_id | string? | role "edit_source": clip_id of the edited clip (same span in the target file) |
| edit_instruction | string? | for edit pairs: the instruction that turns source into target |
| blur_score | float32? | mean variance of the Laplacian over sampled grey frames at source size (higher = sharper) |
| motion_score | float32? | mean optical-flow magnitude in px/frame at the analysis size (0 for images) |
| motion_method | string? | what made motion_score: "raft_small", "raft_large", "farneback" or "image" |
| passed | bool | True when the clip passed every filter (always True in a `--score-only` run unless broken) |
| reject_reason | string? | comma-joined `REJECT_REASONS` codes, null when passed |
| error | string? | error text when the clip could not be processed (reason "decode_error" / "model_error") |
| video | large_binary blob? | the stored media: H.264 mp4 (videos) or PNG (images), `codecs.decode_video`; Lance blob |
| video_format | string? | "mp4/h264" or "png" |
| depth_frames | list<large_binary>? | one 16-bit PNG per stored frame, quantised between depth_min and depth_max |
| depth_min, depth_max | list<float32>? | per-frame range of the raw depth (`codecs.decode_depth`: (T, H, W) float32) |
| depth_model | string? | name of the depth model (e.g. "depth-anything-v2-small") |
| text_emb | large_binary? | T5 embedding of the caption: float16, C order, (text_emb_tokens, text_emb_dim) |
| text_emb_tokens | int32? | number of kept (non-padding) tokens stored; `codecs.decode_text_embedding` pads to 77 |
| text_emb_dim | int32? | embedding width |
| text_encoder | string? | name of the text encoder |
| vae_latents | list<struct>? | optional, per resolution bucket: {bucket "HxW", shape [C,t,h,w], data float16} |
| vae_model | string? | name of the VAE that made vae_latents |
| proxies | list<struct>? | since version 2: smaller copies for low-resolution phases, smallest first (`PROXY_STRUCT`) |
| text_area | float32? | since 3: mean share of the frame covered by detected text (PP-OCR detector), sampled frames |
| text_boxes | list<list<float32>>? | since 3: the text boxes of the first sampled frame, [x0, y0, x1, y1] in [0, 1] |
| watermark | float32? | since 3: 0-1 score of overlays that stay put near the borders across the sampled frames |
| aesthetic | float32? | since 3: LAION aesthetic predictor score (about 1-10) on CLIP image embeddings |
| clip_emb | list<float32>? | since 3: L2-normalised mean CLIP image embedding of the sampled frames (dedup, search) |
| clip_model | string? | since 3: the CLIP model behind clip_emb and aesthetic |
| caption_source | string? | since 3: `CAPTION_SOURCES`: "sidecar", "manifest", "model", or "" (no caption) |
| caption_model | string? | since 3: the captioning model when caption_source is "model" |
| quality_tags | list<string>? | since 3: `QUALITY_TAGS` the clip carries (thresholds in the curation config) |
| duplicate_of | string? | since 3: clip_id of the clip this one near-duplicates (`mfm curate dedup`); never deleted |
| config_hash | string | sha256 prefix of the curation config that wrote the row |
| created_at | timestamp[ms, UTC] | when the row was written |

A `proxies` entry is {height, width, video, depth, depth_min, depth_max}: the same frames as `video` scaled to
cover the clip's aspect-ratio bucket of a training phase (`buckets.cover_size`: sides even, rounded up), so
the trainer only crops; `depth` is the depth scaled alike, per-frame quantised like `depth_frames` but stored as
one compressed (T, height, width) stack (`codecs.decode_depth_stack`: 5x faster to decode than PNGs), null
without depth.

`sources`: one row per input file, written after all its clips are committed (it is the "done" marker a
rerun reads); failures are rows too, never fatal and never silently dropped.

| column | type | meaning |
| --- | --- | --- |
| source_id | string | uuid5 of uri |
| uri | string | the input file |
| role, media_type | string | as in `clips` (media_type "unknown" when probing failed) |
| caption, edit_target_uri, edit_instruction | string? | from the manifest / sidecar |
| status | string | "ok" or "failed" |
| error_kind | string? | `ERROR_KINDS`: empty, truncated, not_media, unsupported_codec, unreadable, decode_error |
| error | string? | the error text |
| size_bytes | int64? | file size |
| container, codec | string? | probe results |
| fps | float32? | average frame rate |
| n_frames | int32? | frame count (counted when the container does not say) |
| width, height | int32? | frame size |
| duration_s | float32? | duration |
| n_shots, n_clips, n_clips_passed | int32 | shot and clip counts |
| config_hash | string | as in clips |
| created_at | timestamp[ms, UTC] | when the row was written |
"""

from __future__ import annotations

import uuid

import pyarrow as pa

SCHEMA_VERSION = "3"
COLUMNS_SINCE = {
    "proxies": "2",
    **dict.fromkeys(("text_area", "text_boxes", "watermark", "aesthetic", "clip_emb", "clip_model", "caption_source",
                     "caption_model", "quality_tags", "duplicate_of"), "3"),
}  # columns added after version 1 -> the version that added them
SCHEMA_VERSION_KEY = "mfm.schema_version"
TABLE_KEY = "mfm.table"
# 2.1 keeps `lance-encoding:blob` large_binary columns visible as blobs to lance.torch.data.LanceDataset.
LANCE_STORAGE_VERSION = "2.1"
CLIPS_TABLE = "clips"
SOURCES_TABLE = "sources"

ROLES = ("clip", "edit_source", "edit_target")
MEDIA_TYPES = ("video", "image")
CAPTION_SOURCES = ("sidecar", "manifest", "model", "")
QUALITY_TAGS = ("low_res", "watermarked", "text_heavy", "short_caption", "low_aesthetic")
REJECT_REASONS = ("too_short", "too_blurry", "low_motion", "decode_error", "model_error")
ERROR_KINDS = ("empty", "truncated", "not_media", "unsupported_codec", "unreadable", "decode_error")
TEXT_MAX_TOKENS = 77
VIDEO_FORMAT_MP4 = "mp4/h264"
VIDEO_FORMAT_PNG = "png"

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/mfm/clips")
_BLOB = {"lance-encoding:blob": "true"}
_TIMESTAMP = pa.timestamp("ms", tz="UTC")

LATENT_STRUCT = pa.struct(
    [
        pa.field("bucket", pa.string()),
        pa.field("shape", pa.list_(pa.int32())),
        pa.field("data", pa.large_binary()),
    ]
)


PROXY_STRUCT = pa.struct(
    [
        pa.field("height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("video", pa.large_binary()),
        pa.field("depth", pa.large_binary()),
        pa.field("depth_min", pa.list_(pa.float32())),
        pa.field("depth_max", pa.list_(pa.float32())),
    ]
)


def _metadata(table: str) -> dict[str, str]:
    return {SCHEMA_VERSION_KEY: SCHEMA_VERSION, TABLE_KEY: table}


CLIPS_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("media_type", pa.string(), nullable=False),
        pa.field("frame_start", pa.int32(), nullable=False),
        pa.field("frame_end", pa.int32(), nullable=False),
        pa.field("n_frames", pa.int32(), nullable=False),
        pa.field("fps", pa.float32()),
        pa.field("duration_s", pa.float32()),
        pa.field("source_width", pa.int32()),
        pa.field("source_height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("caption", pa.string()),
        pa.field("edit_target_clip_id", pa.string()),
        pa.field("edit_instruction", pa.string()),
        pa.field("blur_score", pa.float32()),
        pa.field("motion_score", pa.float32()),
        pa.field("motion_method", pa.string()),
        pa.field("passed", pa.bool_(), nullable=False),
        pa.field("reject_reason", pa.string()),
        pa.field("error", pa.string()),
        pa.field("video", pa.large_binary(), metadata=_BLOB),
        pa.field("video_format", pa.string()),
        pa.field("depth_frames", pa.list_(pa.large_binary())),
        pa.field("depth_min", pa.list_(pa.float32())),
        pa.field("depth_max", pa.list_(pa.float32())),
        pa.field("depth_model", pa.string()),
        pa.field("text_emb", pa.large_binary()),
        pa.field("text_emb_tokens", pa.int32()),
        pa.field("text_emb_dim", pa.int32()),
        pa.field("text_encoder", pa.string()),
        pa.field("vae_latents", pa.list_(LATENT_STRUCT)),
        pa.field("vae_model", pa.string()),
        pa.field("proxies", pa.list_(PROXY_STRUCT)),
        pa.field("text_area", pa.float32()),
        pa.field("text_boxes", pa.list_(pa.list_(pa.float32()))),
        pa.field("watermark", pa.float32()),
        pa.field("aesthetic", pa.float32()),
        pa.field("clip_emb", pa.list_(pa.float32())),
        pa.field("clip_model", pa.string()),
        pa.field("caption_source", pa.string()),
        pa.field("caption_model", pa.string()),
        pa.field("quality_tags", pa.list_(pa.string())),
        pa.field("duplicate_of", pa.string()),
        pa.field("config_hash", pa.string()),
        pa.field("created_at", _TIMESTAMP),
    ],
    metadata=_metadata(CLIPS_TABLE),
)

SOURCES_SCHEMA = pa.schema(
    [
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("media_type", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("edit_target_uri", pa.string()),
        pa.field("edit_instruction", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_kind", pa.string()),
        pa.field("error", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("container", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("fps", pa.float32()),
        pa.field("n_frames", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("duration_s", pa.float32()),
        pa.field("n_shots", pa.int32()),
        pa.field("n_clips", pa.int32()),
        pa.field("n_clips_passed", pa.int32()),
        pa.field("config_hash", pa.string()),
        pa.field("created_at", _TIMESTAMP),
    ],
    metadata=_metadata(SOURCES_TABLE),
)

SCHEMAS = {CLIPS_TABLE: CLIPS_SCHEMA, SOURCES_TABLE: SOURCES_SCHEMA}


# ---------------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------------


def source_id(uri: str) -> str:
    """Deterministic id of an input file."""
    return str(uuid.uuid5(_NAMESPACE, uri))


def clip_id(source_uri: str, frame_start: int, frame_end: int) -> str:
    """Deterministic id of the clip [frame_start, frame_end) of `source_uri`."""
    return str(uuid.uuid5(_NAMESPACE, f"{source_uri}#{int(frame_start)}:{int(frame_end)}"))


def check_schema(schema: pa.Schema, table: str, writing: bool = False) -> str:
    """The schema version of our `table` with every contract column of that version; raise ValueError when not.
    Readers accept versions 1..SCHEMA_VERSION, `writing` only SCHEMA_VERSION (fragments are written with it)."""
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    version = meta.get(SCHEMA_VERSION_KEY, "")
    known = [str(v) for v in range(1, int(SCHEMA_VERSION) + 1)]
    if meta.get(TABLE_KEY) != table or version not in known:
        raise ValueError(
            f"not an MfM {table!r} table at schema version {', '.join(known)}: metadata "
            f"{TABLE_KEY}={meta.get(TABLE_KEY)!r}, {SCHEMA_VERSION_KEY}={version or None!r}"
        )
    if writing and version != SCHEMA_VERSION:
        raise ValueError(
            f"{table!r} table is at schema version {version}; this version of curation writes {SCHEMA_VERSION} "
            f"(adds {[c for c, v in COLUMNS_SINCE.items() if int(v) > int(version)]}): write to a new output"
        )
    expected = [n for n in SCHEMAS[table].names if int(COLUMNS_SINCE.get(n, "1")) <= int(version)]
    missing = [name for name in expected if name not in schema.names]
    if missing:
        raise ValueError(f"{table!r} table lacks columns {missing}")
    return version

