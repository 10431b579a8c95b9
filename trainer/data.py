"""The training stream: curated `clips` rows -> decoded, resized samples -> batches (buckets or NaViT packs).

Rows are read with Lance's torch integration (`lance.torch.data.LanceDataset`, its blob API for the video
bytes) in spawned DataLoader workers (Lance is not fork-safe), through `OffsetSampler`, a Lance `Sampler`
that takes the row offsets `ClipStream` plans for a data-parallel (DP) rank:

- every epoch is a seeded permutation of the trainable rows (`passed`, with media, plus `data.filter`, minus
  the validation hold-out); its first `per_epoch` = dp·⌊rows/dp⌋ entries are dealt round-robin, DP rank r
  reading global indices r, r+dp, r+2dp, ... (the remainder of an epoch is left out), so every rank has
  the same number of samples per epoch and the stream never ends: no rank waits at an epoch boundary;
- ranks of one sequence-parallel group share their DP rank, so they read the same rows in the same order
  and draw the same per-sample randomness (seeded by seed, DP rank, epoch and index, never the SP rank).

Why not `ShardedFragmentSampler` / `ShardedBatchSampler`: with a `passed` filter the first gives shares
that differ by whole fragments (a one-fragment table leaves rank 1 empty), and the second scans every
projected column of every row on every rank and shuffles only inside a small reservoir seeded through the
global `random` module. Offsets give an exact, equal, fully shuffled share and a resume point that is
two integers.

A sample's position is (epoch, global index in the epoch's permutation): the same row whatever the world
size. The main process batches samples (`Batcher`)
and its state (the next position, the positions still waiting in buckets, the skip counts) is all a
checkpoint needs: `ClipStream` replays the waiting positions, then continues, so a resumed run sees the
same batches as an unbroken one.

The data rule across a change of world size (`reshard_streams`), counted in samples: the new ranks start
at the global frontier (the furthest position any old rank reached), and every position before it that no
old rank consumed (the samples waiting in buckets, and the positions between a slower rank's frontier and
the global one) is dealt round-robin to the new ranks as pending positions, read first. So every position
is trained or skipped at most once, and none before the frontier is left out.

A held-out share of the rows (`validation.holdout`, by a hash of `clip_id`: `is_held_out`) is never trained
on; `holdout_offsets` gives them to validation. A clip that fails to decode becomes a `Skipped` item (counted, logged)
and the batch is filled from the next rows.

Per sample: the media is the smallest stored proxy (`proxies`, schema v2) that covers the sample size without
up-scaling, else the stored clip, so a 128px sample decodes a 128x228 proxy rather than the 720p clip. A video
row is trained as one of its frames with the probability of the image-share schedule (§3.3) at the step its
position would be read at (position / batch size). The phase's window of `data.frames` is drawn at a seeded
random offset from any clip with at least that many frames; a shorter video clip is skipped (a `TooShort`
count in the loader's skip log; packed phases train it at its own length). Frames are taken at the stride
nearest `target_fps`, resized to cover the nearest aspect-ratio bucket and centre-cropped; depth maps from the
table follow the same frames and crop.
Every process keeps the trainable row offsets (8 bytes a row).

Edit pairs (VEDIT/IEDIT): an `edit_source` row is read together with its `edit_target` row (looked up by
`edit_target_clip_id` through the table's clip_id index); the sample's frames are the target's, and the
source's frames, taken at the same indices and crop, ride along with the instruction, so the task sampler can
draw the editing tasks. Target rows are not trainable rows of their own: each pair is one sample.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import torch
from lance.sampler import Sampler
from lance.torch.data import LanceDataset
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model.geometry import SIZE_MULTIPLE, coded_length, frames_within, sample_tokens
from model.tasks import DEFAULT_EXTRA
from pipeline.contract.buckets import nearest_bucket
from pipeline.contract.codecs import decode_depth, decode_depth_stack, decode_video
from pipeline.contract.frames import cover_crop
from pipeline.contract.tables import CLIPS_TABLE, check_schema
from trainer.configs import DataConfig, ImageShareConfig

log = logging.getLogger(__name__)

DEPTH_COLUMNS = ["depth_frames", "depth_min", "depth_max"]
READ_COLUMNS = [
    "clip_id", "media_type", "caption", "fps", "motion_score", "n_frames", "height", "width", "video", "role",
    "edit_target_clip_id", "edit_instruction",
]  # fmt: skip  (+ "proxies" when the table has them, else DEPTH_COLUMNS: the stored clip's depth is big)
TARGET_COLUMNS = ["caption", "n_frames", "height", "width", *DEPTH_COLUMNS]  # of an edit target; video: take_blobs
Position = tuple[int, int]  # (epoch, global index in the epoch's permutation)


def open_clips(uri: str, version: int | None, storage_options: dict[str, str]) -> lance.LanceDataset:
    """The `clips` table at `version` (None: latest), checked against the schema contract."""
    ds = lance.dataset(uri, version=version, storage_options=storage_options or None)
    check_schema(ds.schema, CLIPS_TABLE)
    return ds


def is_held_out(clip_id: str, share: float) -> bool:
    """Whether `clip_id` is in the validation hold-out: a stable hash (blake2b, not Python's salted `hash`)
    of the id, as a fraction of 2^64, below `share`. The same on every rank, run and table version."""
    digest = hashlib.blake2b(clip_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64


def _usable_rows(ds: lance.LanceDataset, extra_filter: str | None) -> tuple[np.ndarray, list[str]]:
    """Offsets and clip ids of passed rows with media (plus `extra_filter`), not marked near-duplicates
    (`duplicate_of`, schema v3); edit targets are read with their source row, not on their own."""
    where = "passed AND video IS NOT NULL AND role != 'edit_target'"
    if "duplicate_of" in ds.schema.names:
        duplicates = ds.count_rows(filter=f"{where} AND duplicate_of IS NOT NULL")
        if duplicates:
            log.info("skipping %d near-duplicate clips (duplicate_of set by mfm curate dedup)", duplicates)
        where += " AND duplicate_of IS NULL"
    where += f" AND ({extra_filter})" if extra_filter else ""
    every = ds.to_table(columns=[], with_row_id=True)["_rowid"].to_numpy()
    chosen = ds.to_table(columns=["clip_id"], filter=where, with_row_id=True)
    ids = dict(zip(chosen["_rowid"].to_numpy().tolist(), chosen["clip_id"].to_pylist()))
    offsets = np.flatnonzero(np.isin(every, chosen["_rowid"].to_numpy()))
    return offsets, [ids[int(every[o])] for o in offsets]


def trainable_offsets(ds: lance.LanceDataset, extra_filter: str | None, holdout: float = 0.0) -> np.ndarray:
    """Row offsets (what `LanceDataset.take` reads) of the training rows, in table order: passed, with media,
    `extra_filter`, and not held out for validation (`is_held_out`)."""
    offsets, ids = _usable_rows(ds, extra_filter)
    return offsets[[not is_held_out(c, holdout) for c in ids]] if holdout else offsets


def holdout_offsets(ds: lance.LanceDataset, extra_filter: str | None, holdout: float) -> np.ndarray:
    """Row offsets of the validation hold-out (the rows `trainable_offsets` leaves out), in table order."""
    offsets, ids = _usable_rows(ds, extra_filter)
    return offsets[[is_held_out(c, holdout) for c in ids]] if holdout else offsets[:0]


# ---------------------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One decoded training sample, resized to its bucket (or, packed, its own size)."""

    position: Position
    clip_id: str
    frames: torch.Tensor  # (3, T, H, W) uint8 RGB
    depth: torch.Tensor | None  # (1, T, H, W) float16 raw depth, None when the table has none
    caption: str
    extra: str  # prompt words between caption and task ("#FPS: 16.")
    motion_score: float  # 0 for images
    source: torch.Tensor | None = None  # (3, T, H, W) uint8: an edit pair's source, same frames and crop
    instruction: str = ""  # an edit pair's instruction
    quality_tags: tuple[str, ...] = ()  # the row's quality_tags (schema v3; () for older tables)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.frames.shape[1:])  # type: ignore[return-value]

    @property
    def tokens(self) -> int:
        return sample_tokens(*self.shape)


@dataclass
class Skipped:
    """A row that gave no sample (decode error, unusable size): counted and logged, never fatal."""

    position: Position
    clip_id: str
    reason: str


class TooShort(ValueError):
    """A video clip shorter than the phase's window (`data.frames`): the loader skips it and counts it."""


@dataclass(frozen=True)
class SampleSpec:
    """How rows become samples in this phase (plain values, picklable for the workers)."""

    frames: int  # T of a video sample
    buckets: tuple[tuple[int, int], ...]  # (H, W) of the fixed-size phase; unused when packing
    target_fps: float
    default_motion: float
    image_share: ImageShareConfig
    samples_per_step: int  # batch size: turns a position into the step the image share is read at
    proxies: bool = True  # read the smallest covering proxy when the table has them
    packing: bool = False
    max_area: int = 0  # packing: H·W at most (the phase size)
    max_sample_tokens: int = 0  # packing: tokens of one sample at most
    size_multiple: int = SIZE_MULTIPLE  # packing: sides are multiples of this (16·sp keeps tokens divisible by sp)

    @classmethod
    def from_config(cls, cfg: DataConfig, batch_size: int, sp: int) -> SampleSpec:
        p = cfg.packing
        return cls(
            frames=cfg.frames, buckets=tuple(cfg.buckets()), target_fps=cfg.target_fps,
            default_motion=cfg.default_motion, image_share=cfg.image_share, samples_per_step=batch_size,
            proxies=cfg.proxies, packing=p.enabled, max_area=cfg.height * cfg.width,
            max_sample_tokens=p.max_sample_tokens or p.max_tokens, size_multiple=SIZE_MULTIPLE * sp,
        )  # fmt: skip


def native_size(h: int, w: int, max_area: int, multiple: int) -> tuple[int, int]:
    """Packing: the clip's own aspect ratio, area at most `max_area` (never up-scaled), sides x `multiple`."""
    scale = min(1.0, math.sqrt(max_area / (h * w)))
    return (max(multiple, int(h * scale) // multiple * multiple), max(multiple, int(w * scale) // multiple * multiple))


def frame_indices(
    n: int, frames: int, fps: float, target_fps: float, rng: np.random.Generator
) -> tuple[list[int], float]:
    """A random window of `frames` frames with the stride nearest fps/target_fps that fits in `n` frames.
    Returns (indices, effective fps); empty when not even stride 1 fits."""
    stride = max(1, round(fps / target_fps)) if target_fps > 0 and fps > 0 else 1
    while stride > 1 and (frames - 1) * stride + 1 > n:
        stride -= 1
    span = (frames - 1) * stride + 1
    if span > n:
        return [], fps
    start = int(rng.integers(0, n - span + 1))
    return list(range(start, start + span, stride)), fps / stride


def read_edit_target(ds: lance.LanceDataset, clip_id: str, with_proxies: bool = False) -> dict[str, Any]:
    """The `edit_target` row of an edit pair: its video (a blob file), caption, depth (and proxies)."""
    columns = TARGET_COLUMNS + (["proxies"] if with_proxies else [])
    found = ds.to_table(columns=columns, filter=f"clip_id = '{clip_id}'", with_row_id=True)
    if found.num_rows != 1:
        raise ValueError(f"edit target {clip_id!r}: {found.num_rows} rows in the table, expected 1")
    row = found.to_pylist()[0]
    return row | {"video": ds.take_blobs("video", ids=[row["_rowid"]])[0]}


def take_row(ds: lance.LanceDataset, offset: int, columns: list[str]) -> dict[str, Any]:
    """`columns` of the row at `offset`."""
    return ds.take([offset], columns=columns).to_pylist()[0]


def covering_proxy(proxies: list[dict[str, Any]] | None, size: tuple[int, int]) -> dict[str, Any] | None:
    """The smallest `proxies` entry that covers `size` (H, W) without up-scaling; None: use the stored clip."""
    fits = [p for p in proxies or [] if p["height"] >= size[0] and p["width"] >= size[1]]
    return min(fits, key=lambda p: p["height"] * p["width"], default=None)


def read_row_frames(
    row: dict[str, Any], proxy: dict[str, Any] | None, indices: list[int], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frames `indices` of a row (from `proxy`, else the stored clip), fitted to `size`: (3, T, H, W) uint8 and
    depth (1, T, H, W) float16 (None without depth)."""
    data = row["video"].readall() if proxy is None else proxy["video"]
    frames = cover_crop(decode_video(data, indices), *size)  # (T, H, W, 3)
    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, T, H, W)
    if proxy is not None and proxy["depth"]:
        raw = decode_depth_stack(proxy["depth"], proxy["depth_min"], proxy["depth_max"], proxy["height"],
                                 proxy["width"], indices)  # fmt: skip
    elif proxy is None and row.get("depth_frames"):
        raw = decode_depth(*([row[k][i] for i in indices] for k in DEPTH_COLUMNS))  # (T, h, w)
    else:
        return clip, None
    depth = torch.from_numpy(np.ascontiguousarray(cover_crop(raw, *size)))[None].to(torch.float16)  # (1, T, H, W)
    return clip, depth


def decode_sample(
    row: dict[str, Any],
    position: Position,
    step: float,
    spec: SampleSpec,
    rng: np.random.Generator,
    edit_target: dict[str, Any] | None = None,
    read_columns: Callable[[list[str]], dict[str, Any]] | None = None,
) -> Sample:
    """A `clips` row -> a `Sample`: media type (the image share at `step`), frames, size, depth, prompt extra.
    With `edit_target` (the row is an edit source) the frames and depth are the target's, the row's own
    frames become the source (both from proxies of the same size, or both from the stored clips).
    `read_columns` reads more columns of the row: the stored clip's depth when no proxy covers the size."""
    h, w, n = int(row["height"]), int(row["width"]), int(row["n_frames"])
    size = native_size(h, w, spec.max_area, spec.size_multiple) if spec.packing else nearest_bucket(h, w, spec.buckets)
    proxy = covering_proxy((edit_target or row).get("proxies"), size) if spec.proxies else None
    source_proxy = None
    if edit_target is not None:
        if (edit_target["n_frames"], edit_target["height"], edit_target["width"]) != (n, h, w):
            target_shape = f"{edit_target['n_frames']}x{edit_target['height']}x{edit_target['width']}"
            raise ValueError(f"edit pair {row['clip_id']}: source {n}x{h}x{w} and target {target_shape} differ")
        same = [p for p in row.get("proxies") or [] if proxy and p["height"] == proxy["height"]
                and p["width"] == proxy["width"]]  # fmt: skip
        proxy, source_proxy = (proxy, same[0]) if same else (None, None)
    elif proxy is None and "depth_frames" not in row and read_columns is not None:
        row = row | read_columns(DEPTH_COLUMNS)
    media_row = row if edit_target is None else edit_target
    fps = float(row["fps"] or 0.0)
    as_image = row["media_type"] == "image" or rng.random() < spec.image_share.at(step)
    t = 1 if as_image else spec.frames
    if spec.packing:
        t = min(t, frames_within(spec.max_sample_tokens, *size))
        t = max(1, min(t, coded_length(n)))  # a shorter clip trains at its own length
    indices, fps_eff = frame_indices(n, t, fps, spec.target_fps, rng) if t > 1 else ([], fps)
    if t > 1 and not indices:  # a clip shorter than the phase's window: skipped (counted), longer clips feed it
        raise TooShort(f"{n} frames, the phase draws {t}-frame windows")
    if not indices:  # an image, or a video drawn as one (the image share): one random frame
        t, indices = 1, [int(rng.integers(0, n))]
    clip, depth = read_row_frames(media_row, proxy, indices, size)  # (3, T, H, W), (1, T, H, W)
    source = None if edit_target is None else read_row_frames(row, source_proxy, indices, size)[0]
    if edit_target is not None:
        row = row | {"caption": edit_target["caption"]}
    video = t > 1
    motion = (row["motion_score"] if row["motion_score"] is not None else spec.default_motion) if video else 0.0
    extra = f"#FPS: {round(fps_eff)}." if video and fps_eff > 0 else DEFAULT_EXTRA
    return Sample(
        position, row["clip_id"], clip, depth, row["caption"] or "", extra, float(motion), source=source,
        instruction=(row["edit_instruction"] or "") if source is not None else "",
        quality_tags=tuple(row.get("quality_tags") or ()),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# The stream of one DP rank
# ---------------------------------------------------------------------------------------------------------


class OffsetSampler(Sampler):
    """A Lance `Sampler` that takes the given row offsets, in order, `chunk` rows per read."""

    def __init__(self, offsets: Iterable[int], chunk: int):
        self.offsets, self.chunk = offsets, chunk

    def __call__(self, ds: lance.LanceDataset, *args: Any, columns: list[str] | None = None, **kwargs: Any):
        offsets = iter(self.offsets)
        while batch := list(itertools.islice(offsets, self.chunk)):
            rows = ds.take(batch, columns=[*(columns or []), "_rowid"])
            yield from rows.append_column("_offset", pa.array(batch, pa.int64())).to_batches()


@dataclass
class StreamState:
    """Where a DP rank's stream stands: the next new position and the positions waiting in the batcher.
    `next` may sit anywhere (after a world change, at the global frontier): the rank continues at its first
    own index (≡ dp rank mod dp) at or after it."""

    next: Position = (0, 0)
    pending: list[Position] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> rows

    def to_dict(self) -> dict[str, Any]:
        return {"next": list(self.next), "pending": [list(p) for p in self.pending], "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamState:
        return cls(tuple(d["next"]), [tuple(p) for p in d["pending"]], Counter(d["skipped"]))  # type: ignore[arg-type]


def rank_positions(start: Position, dp_rank: int, dp: int, per_epoch: int) -> Iterator[Position]:
    """DP rank `dp_rank`'s new positions from `start` on: global indices ≡ dp_rank (mod dp) below
    `per_epoch`, epoch after epoch."""
    epoch, index = start
    while True:
        first = index + (dp_rank - index) % dp  # the rank's first own index at or after `index`
        for i in range(first, per_epoch, dp):
            yield epoch, i
        epoch, index = epoch + 1, 0


def reshard_streams(states: list[StreamState], old_dp: int, rows: int, new_dp: int) -> list[StreamState]:
    """The data rule of a world change: `states` of the old DP ranks -> one state per new DP rank. Every new
    rank starts at the global frontier (the furthest `next`); the positions before it that no old rank consumed
    (its pending ones, and those between its own `next` and the frontier) are dealt round-robin, in position
    order, to the new ranks, which read them first. Skip counts go to the new rank 0 (metrics sum them)."""
    frontier = max(s.next for s in states)
    per_epoch = rows // old_dp * old_dp
    left: list[Position] = []
    for rank, state in enumerate(states):
        left += state.pending
        left += itertools.takewhile(lambda p: p < frontier, rank_positions(state.next, rank, old_dp, per_epoch))
    left.sort()
    skipped = sum((s.skipped for s in states), Counter())
    return [StreamState(frontier, left[r::new_dp], skipped if r == 0 else Counter()) for r in range(new_dp)]


class ClipStream(IterableDataset):
    """Endless samples of one DP rank, in position order: first the `resume.pending` positions, then from
    `resume.next` on. DataLoader worker w of W takes every W-th position and yields one item per position
    (a `Sample` or a `Skipped`), so the loader's round-robin returns them in position order."""

    def __init__(
        self,
        uri: str,
        version: int,
        storage_options: dict[str, str],
        offsets: np.ndarray,
        dp_rank: int,
        dp_size: int,
        seed: int,
        spec: SampleSpec,
        read_batch: int,
        resume: StreamState | None = None,
    ):
        super().__init__()
        self.per_rank = len(offsets) // dp_size
        if self.per_rank == 0:
            raise ValueError(f"{uri}@v{version}: {len(offsets)} trainable rows cannot feed {dp_size} DP ranks")
        self.per_epoch = self.per_rank * dp_size
        self.uri, self.version, self.storage_options = uri, version, storage_options
        self.offsets, self.dp_rank, self.dp_size, self.seed = offsets, dp_rank, dp_size, seed
        self.spec, self.read_batch = spec, read_batch
        self.resume = resume or StreamState()

    def positions(self) -> Iterator[Position]:
        yield from self.resume.pending
        yield from rank_positions(self.resume.next, self.dp_rank, self.dp_size, self.per_epoch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Every trainable row offset in epoch `epoch`'s order (the same on every rank and world size)."""
        return self.offsets[np.random.default_rng([self.seed, epoch]).permutation(len(self.offsets))]

    def epoch_rows(self, epoch: int) -> np.ndarray:
        """This DP rank's share of epoch `epoch`: row offsets in reading order."""
        return self.epoch_order(epoch)[self.dp_rank : self.per_epoch : self.dp_size]

    def offsets_of(self, positions: Iterable[Position]) -> Iterator[int]:
        epoch, rows = -1, self.offsets
        for e, index in positions:
            if e != epoch:
                epoch, rows = e, self.epoch_order(e)
            yield int(rows[index])

    def step_of(self, position: Position) -> float:
        """The training step a position is read at, were no sample skipped or waiting (for the image share)."""
        return (position[0] * self.per_epoch + position[1]) / (self.dp_size * self.spec.samples_per_step)

    def sample_rng(self, position: Position) -> np.random.Generator:
        """Per-sample randomness, a function of the position only: the same on every SP rank of a group and
        after a world change; positions differ across DP ranks."""
        return np.random.default_rng([self.seed, *position])

    def __iter__(self) -> Iterator[Sample | Skipped]:
        info = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info else (0, 1)
        mine, for_reads = itertools.tee(itertools.islice(self.positions(), wid, None, workers))
        ds = open_clips(self.uri, self.version, self.storage_options)
        proxies = self.spec.proxies and "proxies" in ds.schema.names  # schema v1 tables have none
        columns = READ_COLUMNS + (["proxies"] if proxies else DEPTH_COLUMNS)
        columns += ["quality_tags"] if "quality_tags" in ds.schema.names else []  # schema v3
        reads = LanceDataset(ds, batch_size=self.read_batch, columns=columns, to_tensor_fn=None,
                             sampler=OffsetSampler(self.offsets_of(for_reads), self.read_batch))  # fmt: skip
        for batch in reads:
            for i in range(len(batch["clip_id"])):
                row = {k: (v[i] if isinstance(v, list) else v[i].as_py()) for k, v in batch.items()}
                position = next(mine)
                try:
                    target = None
                    if row["role"] == "edit_source":
                        target = read_edit_target(ds, row["edit_target_clip_id"], proxies)
                    more = functools.partial(take_row, ds, row["_offset"])
                    yield decode_sample(row, position, self.step_of(position), self.spec, self.sample_rng(position),
                                        target, more)  # fmt: skip
                except Exception as exc:  # a broken clip must not stop training
                    yield Skipped(position, row["clip_id"], f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------------------


class Batcher:
    """Fixed-size phases: one bucket per (T, H, W); a bucket that reaches `batch_size` is a batch.
    Packing: samples in arrival order until the next one would pass `max_tokens`."""

    def __init__(self, batch_size: int, max_tokens: int | None = None):
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.waiting: dict[Any, list[Sample]] = {}

    def add(self, sample: Sample) -> list[Sample] | None:
        if self.max_tokens is not None:
            pack = self.waiting.setdefault("pack", [])
            if pack and sum(s.tokens for s in pack) + sample.tokens > self.max_tokens:
                self.waiting["pack"] = [sample]
                return pack
            pack.append(sample)
            return None
        bucket = self.waiting.setdefault(sample.shape, [])
        bucket.append(sample)
        if len(bucket) == self.batch_size:
            return self.waiting.pop(sample.shape)
        return None

    def pending(self) -> list[Position]:
        return sorted(s.position for bucket in self.waiting.values() for s in bucket)


class TrainLoader:
    """Batches of one DP rank from spawned workers, with the state a checkpoint stores."""

    def __init__(self, stream: ClipStream, batcher: Batcher, num_workers: int, prefetch_factor: int):
        self.stream, self.batcher = stream, batcher
        self.state = StreamState(stream.resume.next, [], Counter(stream.resume.skipped))
        self.skipped_positions: list[Position] = []  # skips since the caller last emptied it (the samples log)
        self.loader = DataLoader(
            stream, batch_size=None, collate_fn=_identity, num_workers=num_workers,
            multiprocessing_context="spawn" if num_workers else None,
            prefetch_factor=prefetch_factor if num_workers else None,
        )  # fmt: skip

    def __iter__(self) -> Iterator[list[Sample]]:
        for item in self.loader:
            self.state.next = max(self.state.next, (item.position[0], item.position[1] + self.stream.dp_size))
            if isinstance(item, Skipped):
                self.skipped_positions.append(item.position)
                self.state.skipped[item.reason.split(":")[0]] += 1
                log.warning("skipped clip %s at %s: %s", item.clip_id, item.position, item.reason)
                continue
            batch = self.batcher.add(item)
            if batch is not None:
                yield batch

    def state_dict(self) -> dict[str, Any]:
        return StreamState(self.state.next, self.batcher.pending(), self.state.skipped).to_dict()


def _identity(item: Any) -> Any:
    return item
