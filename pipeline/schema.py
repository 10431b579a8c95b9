"""The Lance contract between curation (pipeline/) and training (trainer/): tables `clips` and `sources`.

Both tables are Lance datasets written with data storage version ``LANCE_STORAGE_VERSION`` and carry
``{SCHEMA_VERSION_KEY: SCHEMA_VERSION, TABLE_KEY: <name>}`` in their schema metadata; readers call
`check_schema` before trusting the columns. Changes are additive and bump `SCHEMA_VERSION`; readers
accept older versions (a column added later is then absent: `COLUMNS_SINCE`), writers only the current.

`clips`: one row per clip or image (an image is a 1-frame clip), with a BTREE index on `clip_id` that curation
keeps current (`tables.index_clip_ids`: an edit pair's target is a point lookup). Rejected clips stay in the
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
| video | large_binary blob? | the stored media: H.264 mp4 for videos, PNG for images (`decode_video`); Lance blob |
| video_format | string? | "mp4/h264" or "png" |
| depth_frames | list<large_binary>? | one 16-bit PNG per stored frame, quantised between depth_min and depth_max |
| depth_min, depth_max | list<float32>? | per-frame range of the raw depth (`decode_depth` -> (T, H, W) float32) |
| depth_model | string? | name of the depth model (e.g. "depth-anything-v2-small") |
| text_emb | large_binary? | T5 embedding of the caption: float16, C order, (text_emb_tokens, text_emb_dim) |
| text_emb_tokens | int32? | number of kept (non-padding) tokens stored; `decode_text_embedding` pads to 77 |
| text_emb_dim | int32? | embedding width |
| text_encoder | string? | name of the text encoder |
| vae_latents | list<struct>? | optional, per resolution bucket: {bucket "HxW", shape [C,t,h,w], data float16} |
| vae_model | string? | name of the VAE that made vae_latents |
| proxies | list<struct>? | since version 2: smaller copies for low-resolution stages, smallest first (`PROXY_STRUCT`) |

A `proxies` entry is {height, width, video, depth, depth_min, depth_max}: the same frames as `video` scaled to
cover the clip's aspect-ratio bucket of a training stage (`pipeline.buckets.cover_size`: sides even, rounded
up), so the trainer only crops; `depth` is the depth scaled alike, per-frame quantised like `depth_frames` but
stored as one compressed (T, height, width) stack (`decode_depth_stack`: 5x faster to decode than PNGs), null
without depth.
| config_hash | string | sha256 prefix of the curation config that wrote the row |
| created_at | timestamp[ms, UTC] | when the row was written |

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

import functools
import io
import uuid
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = "2"
COLUMNS_SINCE = {"proxies": "2"}  # columns added after version 1 -> the version that added them
SCHEMA_VERSION_KEY = "mfm.schema_version"
TABLE_KEY = "mfm.table"
# 2.1 keeps `lance-encoding:blob` large_binary columns visible as blobs to lance.torch.data.LanceDataset.
LANCE_STORAGE_VERSION = "2.1"
CLIPS_TABLE = "clips"
SOURCES_TABLE = "sources"

ROLES = ("clip", "edit_source", "edit_target")
MEDIA_TYPES = ("video", "image")
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


# ---------------------------------------------------------------------------------------------------------
# Stored media: video / image
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            text = cpuinfo.read()
    except OSError:  # not Linux: nothing known, x264 detects for itself
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def x264_options(crf: int, preset: str, **more: str) -> dict[str, str]:
    """libx264 options: one thread (a curation task holds the cores it declares) and, where the CPU has AVX-512,
    x264's AVX2 code instead: its AVX-512 paths gave different bytes for the same frames from one encode to the
    next on this project's AMD EPYC machines (caught by the reproducibility tests); AVX2 repeats exactly."""
    options = {"crf": str(crf), "preset": preset, "threads": "1", **more}
    if "avx512bw" in _cpu_flags() and "avx2" in _cpu_flags():
        options["x264-params"] = "asm=avx2"
    return options


def encode_video(frames: np.ndarray, fps: float, crf: int = 18, preset: str = "veryfast") -> bytes:
    """uint8 frames (T, H, W, 3) RGB with even H, W -> H.264 (yuv420p) mp4 bytes."""
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even sides, got {h}x{w}")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = x264_options(crf, preset)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def encode_image(frame: np.ndarray) -> bytes:
    """uint8 RGB image (H, W, 3) -> PNG bytes."""
    import cv2

    ok, png = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return png.tobytes()


def decode_video(data: bytes, indices: list[int] | None = None) -> np.ndarray:
    """Stored media bytes (mp4 or PNG) -> uint8 frames (T, H, W, 3) RGB; an image gives T == 1.
    `indices`: only those frames, in that order (decoding stops after the last one; only they become RGB)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        import cv2

        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        frames = bgr[None, ..., ::-1]  # (1, H, W, 3)
        return (frames if indices is None else frames[indices]).copy()
    import av

    wanted = None if indices is None else set(indices)
    last = -1 if indices is None else max(indices)
    picked: dict[int, np.ndarray] = {}
    count = 0
    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            count = i + 1
            if wanted is None or i in wanted:
                picked[i] = frame.to_ndarray(format="rgb24")
            if i == last:
                break
    if indices is None:
        return np.stack([picked[i] for i in sorted(picked)])  # (T, H, W, 3)
    missing = sorted(wanted - picked.keys())
    if missing:
        raise ValueError(f"frames {missing[:4]} asked for, but the video has {count} frames")
    return np.stack([picked[i] for i in indices])  # (len(indices), H, W, 3)


def frames_to_tensor(frames: np.ndarray) -> Any:
    """uint8 (T, H, W, 3) -> float32 torch tensor (3, T, H, W) in [-1, 1] (the project's clip layout)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).float()  # (T, H, W, 3)
    return x.permute(3, 0, 1, 2).div(127.5).sub(1.0)  # (3, T, H, W)


# ---------------------------------------------------------------------------------------------------------
# Depth: one 16-bit PNG per frame, linear between the frame's min and max raw depth
# ---------------------------------------------------------------------------------------------------------


def _quantise_depth(frame: np.ndarray) -> tuple[np.ndarray, float, float]:
    """One raw depth frame (H, W) float32 -> (uint16 linear between its min and max, min, max)."""
    lo, hi = float(frame.min()), float(frame.max())
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return np.round((frame - lo) * scale).astype(np.uint16), lo, hi


def encode_depth(depth: np.ndarray) -> tuple[list[bytes], list[float], list[float]]:
    """Raw depth (T, H, W) float -> (16-bit PNG per frame, per-frame min, per-frame max)."""
    import cv2

    pngs, lows, highs = [], [], []
    for frame in np.asarray(depth, dtype=np.float32):
        q, lo, hi = _quantise_depth(frame)
        ok, png = cv2.imencode(".png", q, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise ValueError("depth PNG encoding failed")
        pngs.append(png.tobytes())
        lows.append(lo)
        highs.append(hi)
    return pngs, lows, highs


def decode_depth(frames: list[bytes], depth_min: list[float], depth_max: list[float]) -> np.ndarray:
    """`depth_frames`, `depth_min`, `depth_max` of one row -> raw depth (T, H, W) float32."""
    import cv2

    out = []
    for png, lo, hi in zip(frames, depth_min, depth_max, strict=True):
        q = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32)
        out.append(lo + q * ((hi - lo) / 65535.0))
    return np.stack(out)  # (T, H, W)


def encode_depth_stack(depth: np.ndarray) -> tuple[bytes, list[float], list[float]]:
    """Raw depth (T, H, W) -> (zstd of the quantised uint16 stack after a second-order difference along W,
    per-frame min, per-frame max). Quantised as `encode_depth`; the difference makes smooth depth compress
    about 3x better, and undoing it is two cumulative sums."""
    quantised, lows, highs = zip(*(_quantise_depth(f) for f in np.asarray(depth, dtype=np.float32)), strict=True)
    q = np.stack(quantised).astype(np.int32)  # (T, H, W) in [0, 65535]
    residual = np.diff(np.diff(q, axis=2, prepend=0), axis=2, prepend=0).astype(np.uint16)  # mod 2^16
    return pa.compress(residual.tobytes(), codec="zstd", asbytes=True), list(lows), list(highs)


def decode_depth_stack(
    data: bytes, depth_min: list[float], depth_max: list[float], height: int, width: int,
    indices: list[int] | None = None,
) -> np.ndarray:
    """A proxy's `depth`, `depth_min`, `depth_max` -> raw depth (T, H, W) float32 (only `indices` when given)."""
    t = len(depth_min)
    raw = pa.decompress(data, t * height * width * 2, codec="zstd", asbytes=True)
    pick = list(range(t)) if indices is None else indices
    residual = np.frombuffer(raw, np.uint16).reshape(t, height, width)[pick]
    q = np.cumsum(np.cumsum(residual, axis=2, dtype=np.uint16), axis=2, dtype=np.uint16)  # exact mod 2^16
    lows, highs = np.asarray(depth_min, np.float64)[pick], np.asarray(depth_max, np.float64)[pick]
    step = ((highs - lows) / 65535.0).astype(np.float32)  # as `decode_depth` computes it
    return lows.astype(np.float32)[:, None, None] + q.astype(np.float32) * step[:, None, None]


# ---------------------------------------------------------------------------------------------------------
# Text embedding: the kept tokens only, float16
# ---------------------------------------------------------------------------------------------------------


def encode_text_embedding(emb: np.ndarray, keep: np.ndarray) -> tuple[bytes, int, int]:
    """One caption's (L, D) embedding and (L,) keep mask -> (float16 bytes of the kept tokens, n, D)."""
    kept = np.asarray(emb, dtype=np.float16)[np.asarray(keep, dtype=bool)]  # (n, D)
    return kept.tobytes(), int(kept.shape[0]), int(kept.shape[1])


def decode_text_embedding(
    data: bytes, n_tokens: int, dim: int, pad_to: int | None = TEXT_MAX_TOKENS
) -> tuple[np.ndarray, np.ndarray]:
    """-> (embedding (pad_to, D) float32 zero-padded, keep mask (pad_to,) bool); pad_to=None: (n, D)."""
    emb = np.frombuffer(data, dtype=np.float16).reshape(n_tokens, dim).astype(np.float32)  # (n, D)
    length = n_tokens if pad_to is None else pad_to
    if n_tokens > length:
        raise ValueError(f"{n_tokens} tokens do not fit pad_to={pad_to}")
    out = np.zeros((length, dim), np.float32)
    out[:n_tokens] = emb
    return out, np.arange(length) < n_tokens


# ---------------------------------------------------------------------------------------------------------
# VAE latents: one struct per resolution bucket
# ---------------------------------------------------------------------------------------------------------


def encode_latents(bucket: str, latents: np.ndarray) -> dict[str, Any]:
    """(C, t, h, w) latents of one bucket ("HxW") -> a `vae_latents` list entry."""
    arr = np.asarray(latents, dtype=np.float16)
    return {"bucket": bucket, "shape": list(arr.shape), "data": arr.tobytes()}


def decode_latents(entry: dict[str, Any]) -> np.ndarray:
    """A `vae_latents` entry -> (C, t, h, w) float32."""
    return np.frombuffer(entry["data"], dtype=np.float16).reshape(entry["shape"]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Reading rows for training
# ---------------------------------------------------------------------------------------------------------

TRAIN_COLUMNS = [
    "clip_id", "media_type", "role", "caption", "motion_score", "fps", "n_frames", "video",
    "depth_frames", "depth_min", "depth_max", "text_emb", "text_emb_tokens", "text_emb_dim",
    "edit_target_clip_id", "edit_instruction",
]  # fmt: skip


def to_training_batch(batch: Any, **_: Any) -> dict[str, Any]:
    """`to_tensor_fn` for lance.torch.data.LanceDataset over `clips` (columns ⊆ TRAIN_COLUMNS + "video").

    -> dict of lists / tensors: "video" list of (3, T, H, W) float32 in [-1, 1], "depth" list of
    (1, T, H, W) float32 raw depth, "text_emb" (B, 77, D) float32 and "text_keep" (B, 77) bool, and the
    plain columns as Python lists ("motion_score" as a (B,) float32 tensor).
    """
    import torch

    cols = {name: batch[name] for name in (batch.column_names if hasattr(batch, "column_names") else batch)}
    out: dict[str, Any] = {}
    for name, col in cols.items():
        if name == "video":  # list[lance.BlobFile] through the blob API
            out["video"] = [frames_to_tensor(decode_video(blob.readall())) for blob in col]
        elif name not in ("depth_frames", "depth_min", "depth_max", "text_emb", "_rowid"):
            out[name] = col.to_pylist()
    if "depth_frames" in cols:
        rows = zip(*(cols[k].to_pylist() for k in ("depth_frames", "depth_min", "depth_max")), strict=True)
        out["depth"] = [torch.from_numpy(decode_depth(*row))[None] for row in rows]  # (1, T, H, W) each
    if "text_emb" in cols:
        rows = zip(*(cols[k].to_pylist() for k in ("text_emb", "text_emb_tokens", "text_emb_dim")), strict=True)
        embs, keeps = zip(*(decode_text_embedding(*row) for row in rows), strict=True)
        out["text_emb"] = torch.from_numpy(np.stack(embs))  # (B, 77, D)
        out["text_keep"] = torch.from_numpy(np.stack(keeps))  # (B, 77)
    if "motion_score" in out:
        out["motion_score"] = torch.tensor([m or 0.0 for m in out["motion_score"]], dtype=torch.float32)
    return out
