"""The training stream on a curated table: equal disjoint shares per data-parallel rank, the same samples on the
ranks of a sequence-parallel group, a broken clip skipped and counted, buckets, the image share, exact resume."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from trainer_fixtures import BROKEN_CLIP_ID

from trainer.configs import ImageShareConfig
from trainer.data import Batcher, ClipStream, SampleSpec, StreamState, TrainLoader, frame_indices, open_clips
from trainer.data import trainable_offsets as offsets_of

pytestmark = pytest.mark.slow


def spec(image_share: float = 0.25, frames: int = 9, buckets=((32, 32), (32, 48)), proxies=True) -> SampleSpec:
    share = ImageShareConfig(start=image_share, end=image_share)
    return SampleSpec(frames=frames, buckets=buckets, target_fps=12.0, default_motion=5.0, image_share=share,
                      samples_per_step=2, proxies=proxies)  # fmt: skip


def stream(table, dp_rank=0, dp_size=1, resume=None, sample_spec=None) -> ClipStream:
    ds = open_clips(table, None, {})
    return ClipStream(table, ds.version, {}, offsets_of(ds, None), dp_rank, dp_size, seed=7,
                      spec=sample_spec or spec(), read_batch=3, resume=resume)  # fmt: skip


def test_epoch_shares_are_equal_disjoint_and_reshuffled(curated):
    ds = open_clips(curated.table, None, {})
    rows = offsets_of(ds, None)
    assert len(rows) == curated.good_rows + 1  # the broken row is a passed row with media: it is read and skipped
    for dp in (2, 3):
        shares = [stream(curated.table, r, dp).epoch_rows(0) for r in range(dp)]
        assert {len(s) for s in shares} == {len(rows) // dp}  # equal: no rank waits at an epoch's end
        assert len(set(np.concatenate(shares))) == dp * (len(rows) // dp)  # disjoint
        assert set(np.concatenate(shares)) <= set(rows)
    first = stream(curated.table, 0, 2)
    assert list(first.epoch_rows(0)) != list(first.epoch_rows(1))  # a new order every epoch


def test_ranks_of_one_sp_group_read_the_same_samples_and_dp_ranks_do_not(curated):
    def items(dp_rank):
        return list(itertools.islice(iter(stream(curated.table, dp_rank, 2)), 6))

    sp0, sp1, other = items(0), items(0), items(1)  # SP ranks share their DP rank
    assert [i.position for i in sp0] == [(e, i) for e in (0, 1) for i in range(0, 8, 2)][:6]  # global positions
    for a, b in zip(sp0, sp1):
        assert a.clip_id == b.clip_id and type(a) is type(b)
        if hasattr(a, "frames"):
            assert torch.equal(a.frames, b.frames) and a.extra == b.extra and a.motion_score == b.motion_score
    assert {i.clip_id for i in sp0[:4]}.isdisjoint({i.clip_id for i in other[:4]})


def test_broken_clip_is_skipped_and_counted_and_batches_stay_full(curated):
    rows = stream(curated.table)
    loader = TrainLoader(rows, Batcher(batch_size=2), num_workers=0, prefetch_factor=2)
    batches = list(itertools.islice(iter(loader), 12))  # 24+ samples: three passes over the 8 rows
    assert all(len(b) == 2 and len({s.shape for s in b}) == 1 for b in batches)
    assert BROKEN_CLIP_ID not in {s.clip_id for b in batches for s in b}
    broken = rows.offsets.max()  # appended last
    reads = [(e, int(np.flatnonzero(rows.epoch_order(e) == broken)[0])) for e in range(loader.state.next[0] + 1)]
    assert sum(loader.state.skipped.values()) == sum(r < loader.state.next for r in reads) >= 2
    assert list(loader.state.skipped) == ["InvalidDataError"]  # PyAV: the bytes are not a video


def test_samples_come_in_buckets_with_the_image_share(curated):
    shapes, motions, extras = set(), set(), set()
    for share in (0.0, 1.0):
        items = itertools.islice(iter(stream(curated.table, sample_spec=spec(share))), 8)
        samples = [s for s in items if hasattr(s, "frames")]
        videos = [s for s in samples if s.shape[0] > 1]
        assert len(videos) == (0 if share == 1.0 else len(samples) - 1)  # the still image is always an image
        shapes |= {s.shape for s in samples}
        motions |= {s.motion_score > 0 for s in videos} | {s.motion_score == 0 for s in samples if s not in videos}
        extras |= {s.extra for s in videos}
    assert shapes == {(1, 32, 48), (9, 32, 48)}  # 48x64 sources land in the 2:3 bucket
    assert motions == {True}  # curated motion for videos, 0 for images
    assert extras == {"#FPS: 12."}  # 24 fps source taken every 2nd frame for 12 fps


def test_clips_shorter_than_the_window_are_skipped_and_counted(curated):
    rows = stream(curated.table, sample_spec=spec(image_share=0.0, frames=18))  # curated clips have 17 frames
    loader = TrainLoader(rows, Batcher(batch_size=1), num_workers=0, prefetch_factor=2)
    batches = list(itertools.islice(iter(loader), 2))
    assert {b[0].shape[0] for b in batches} == {1}  # only the still image trains
    assert loader.state.skipped["TooShort"] >= 6


def test_frame_window_uses_the_stride_nearest_the_target_fps():
    rng = np.random.default_rng(0)
    idx, fps = frame_indices(100, 9, 30.0, 15.0, rng)
    assert np.all(np.diff(idx) == 2) and fps == 15.0
    idx, fps = frame_indices(12, 9, 30.0, 15.0, rng)  # stride 2 does not fit: stride 1
    assert np.all(np.diff(idx) == 1) and fps == 30.0
    assert frame_indices(5, 9, 30.0, 15.0, rng) == ([], 30.0)


def test_resumed_stream_gives_the_same_batches(curated):
    whole = TrainLoader(stream(curated.table), Batcher(batch_size=2), num_workers=0, prefetch_factor=2)
    it = iter(whole)
    next(it)
    for _ in range(10):  # until a sample waits in the other bucket (the image share is random)
        if whole.state_dict()["pending"]:
            break
        next(it)
    state = whole.state_dict()
    assert state["pending"], "some samples wait in a bucket: the resume must replay them"
    rest = [next(it) for _ in range(4)]
    resumed = TrainLoader(stream(curated.table, resume=StreamState.from_dict(state)), Batcher(batch_size=2), 0, 2)
    again = list(itertools.islice(iter(resumed), 4))
    for a, b in zip(rest, again):
        assert [s.position for s in a] == [s.position for s in b]
        assert all(torch.equal(x.frames, y.frames) for x, y in zip(a, b))


def with_edit_pair(table: str, folder) -> str:
    """A copy of `table` plus one edit pair: two passed videos of the table re-keyed as source and target."""
    import shutil

    import lance
    import pyarrow as pa

    ds = lance.dataset(table)
    copy = str(shutil.copytree(table, folder / "clips.lance"))  # a Lance table is its folder
    cols = [c for c in ds.schema.names if c != "video"]
    a, b = ds.to_table(columns=cols, filter="passed AND media_type = 'video'", limit=2, with_row_id=True).to_pylist()
    videos = [blob.readall() for blob in ds.take_blobs("video", ids=[a.pop("_rowid"), b.pop("_rowid")])]
    source = a | {"clip_id": "edit-src", "role": "edit_source", "edit_target_clip_id": "edit-dst",
                  "edit_instruction": "make it red", "video": videos[0]}  # fmt: skip
    target = b | {"clip_id": "edit-dst", "role": "edit_target", "edit_instruction": "make it red", "video": videos[1]}
    lance.write_dataset(pa.Table.from_pylist([source, target], schema=ds.schema), copy, mode="append")
    return copy


def test_edit_pair_is_one_sample_with_the_target_frames_and_the_source_beside_them(curated, tmp_path):
    from model.conditions import Clip
    from model.task_sampling import qualified_tasks

    table = with_edit_pair(curated.table, tmp_path)
    ds = open_clips(table, None, {})
    rows = offsets_of(ds, None)
    assert len(rows) == curated.good_rows + 2  # the broken row and the pair's source; the target is not a row
    samples = [s for s in itertools.islice(iter(stream(table, sample_spec=spec(image_share=0.0))), 40)
               if getattr(s, "clip_id", None) == "edit-src"]  # fmt: skip
    assert samples, "the edit source row was never read"
    for s in samples:
        assert s.instruction == "make it red" and s.source is not None and s.source.shape == s.frames.shape
        assert not torch.equal(s.source, s.frames)  # two different videos
        clip = Clip(s.frames.float() / 127.5 - 1, None, s.caption, s.source.float() / 127.5 - 1, s.instruction)
        assert "vedit" in {t.id for t in qualified_tasks(clip)}
    # Known answer: with the same randomness, the pair's frames are the target decoded alone, its source the
    # source decoded alone (same frame indices and crop).
    from trainer.data import READ_COLUMNS, decode_sample, read_edit_target

    def row(clip_id):
        found = ds.to_table(columns=[c for c in READ_COLUMNS if c != "video"], filter=f"clip_id = '{clip_id}'",
                            with_row_id=True).to_pylist()[0]  # fmt: skip
        return found | {"video": ds.take_blobs("video", ids=[found["_rowid"]])[0]}

    def decode(r, target=None):
        return decode_sample(r, (0, 0), 0.0, spec(image_share=0.0), np.random.default_rng(3), target)

    pair = decode(row("edit-src"), read_edit_target(ds, "edit-dst"))
    plain_source = decode(row("edit-src") | {"role": "clip"})
    plain_target = decode(row("edit-dst") | {"role": "clip"})
    assert torch.equal(pair.frames, plain_target.frames) and torch.equal(pair.source, plain_source.frames)


def test_proxy_sample_is_the_stored_clip_sample_from_smaller_media(curated):
    """The table's 32x44 proxies (curation `proxies.phases: [32x32]`) make 32x32 samples by a crop alone; the
    same draw from the stored 48x64 clips gives nearly the same pixels and depth. (The 32x48 bucket of `spec()`
    is not covered by them: the other tests read the stored clips, their depth through `read_columns`.)"""
    from pipeline.contract import codecs
    from pipeline.contract.frames import cover_crop
    from trainer.data import READ_COLUMNS, covering_proxy, decode_sample, take_row

    ds = open_clips(curated.table, curated.version_before_broken, {})
    offset = int(offsets_of(ds, "media_type = 'video'")[0])
    row = take_row(ds, offset, [c for c in READ_COLUMNS if c != "video"] + ["proxies", "_rowid"])
    proxy = row["proxies"][0]
    assert [(p["height"], p["width"]) for p in row["proxies"]] == [(32, 44)]
    assert covering_proxy(row["proxies"], (32, 32)) is proxy
    assert covering_proxy(row["proxies"], (32, 48)) is None  # would need up-scaling: the stored clip

    def decode(proxies: bool):
        r = row | {"video": ds.take_blobs("video", ids=[row["_rowid"]])[0]}
        more = functools.partial(take_row, ds, offset)
        return decode_sample(r, (0, 0), 0.0, spec(0.0, buckets=((32, 32),), proxies=proxies),
                             np.random.default_rng(5), read_columns=more)  # fmt: skip

    small, full = decode(True), decode(False)  # `full` reads the stored clip's depth through read_columns
    assert small.frames.shape == full.frames.shape == (3, 9, 32, 32) and small.extra == full.extra
    luma = torch.tensor([0.299, 0.587, 0.114])[:, None, None, None]
    err = ((small.frames.float() - full.frames.float()) * luma).sum(0).pow(2).mean()  # H.264 halves chroma: luma
    # 27 dB here: two encodes, two resamplings and a sub-pixel framing shift (the proxy's 42.7 px width rounded
    # up to 44) on a sharp random texture; other frames of the same clip score about 11 dB.
    assert 10 * torch.log10(255**2 / err) > 24
    assert small.depth is not None and full.depth is not None
    assert (small.depth.float() - full.depth.float()).abs().mean() < 0.05 * full.depth.float().abs().mean()
    # Known answer: each proxy-path frame is a crop of one of the proxy's own frames, no resampling.
    crops = torch.from_numpy(cover_crop(codecs.decode_video(proxy["video"]), 32, 32)).permute(0, 3, 1, 2)
    assert all(any(torch.equal(small.frames[:, t], c) for c in crops) for t in range(9))


def test_samples_carry_their_rows_quality_tags_into_the_task_draw(curated):
    """The curated 48x64 sources are low_res (short side < 256); the 3-word image caption is short_caption."""
    import lance

    from model.task_sampling import ruled_out
    from trainer.batch import BatchBuilder

    tags = {r["clip_id"]: tuple(r["quality_tags"] or ()) for r in
            lance.dataset(curated.table).to_table(columns=["clip_id", "quality_tags"]).to_pylist()}  # fmt: skip
    samples = [s for s in itertools.islice(iter(stream(curated.table)), 16) if hasattr(s, "quality_tags")]
    assert samples and all(s.quality_tags == tags[s.clip_id] for s in samples)
    assert {s.quality_tags for s in samples} >= {("low_res",)}
    builder = BatchBuilder(None, None, None, seed=3, dp_rank=0, device=torch.device("cpu"), dtype=torch.float32,
                           packed=False)  # fmt: skip  (conditions() uses neither model)
    for _, cond in builder.conditions(samples):
        assert cond.task not in ruled_out(("low_res",))  # no t2v, t2i, vsr, sisr for a low-res clip
