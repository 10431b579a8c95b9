"""pipeline/ops and the contract's codecs and frames on synthetic media with known answers (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import video_fixtures as vf

from mfm import synthetic
from pipeline.contract import codecs, tables
from pipeline.contract.codecs import video_frames
from pipeline.contract.frames import frames_to_tensor, resize_frames
from pipeline.ops import blur, media, motion, shots, transnet
from pipeline.ops.source_pass import SourcePass, WholeSource

SIZE = (128, 160)  # (H, W); RAFT needs >= 128 px on both sides at the analysis size


def _pairs(path, n_frames: int, short_side: int = 128) -> np.ndarray:
    starts = motion.pair_starts(0, n_frames, 6, 1)
    indices = sorted({i for s in starts for i in (s, s + 1)})
    width, height = motion.analysis_size(160, 128, short_side)
    frames = dict(zip(indices, resize_frames(codecs.decode_video(str(path), indices), height, width), strict=True))
    return np.stack([[frames[s], frames[s + 1]] for s in starts])  # (N, 2, h, w, 3)


def _scan(path, long_side: int = 96):
    """Every frame at the HSV detector's scan size, as the decode pass scales them: (T, h, w, 3)."""
    return [f.to_ndarray(width=w, height=h, format="rgb24") for f in video_frames(str(path))
            for w, h in [media.fit_size(f.width, f.height, long_side)]]  # fmt: skip


def _small(path):
    """Every frame at TransNetV2's 48x27: (T, 27, 48, 3)."""
    return np.stack([f.to_ndarray(width=48, height=27, format="rgb24") for f in video_frames(str(path))])


def test_farneback_motion_is_ordered_and_near_the_truth(tmp_path):
    speeds = [(0.0, 0.0), (0.5, 0.0), (1.5, 1.0), (3.0, 0.0), (4.0, 3.0)]
    scores = []
    for k, speed in enumerate(speeds):
        path = vf.write_moving_pattern(tmp_path / f"m{k}.mp4", 17, SIZE, speed, seed=k)
        scores.append(motion.farneback_motion(_pairs(path, 17)))
    truth = [float(np.hypot(*s)) for s in speeds]
    assert scores == sorted(scores), scores
    np.testing.assert_allclose(scores, truth, atol=0.15, rtol=0.1)


def test_analysis_size_scales_the_score(tmp_path):
    path = vf.write_moving_pattern(tmp_path / "m.mp4", 9, SIZE, (4.0, 0.0))
    half = motion.farneback_motion(_pairs(path, 9, short_side=64))  # frames at half size: half the px/frame
    assert half == pytest.approx(2.0, abs=0.2)


def test_tiny_random_raft_runs_the_same_path(tmp_path):
    import torch

    torch.manual_seed(0)
    weights = motion.save_raft(motion.load_raft("raft_small", None), tmp_path / "raft_small.safetensors")
    raft = motion.RaftMotion("raft_small", weights, flow_updates=2)
    path = vf.write_moving_pattern(tmp_path / "m.mp4", 9, SIZE, (2.0, 0.0))
    score = raft(_pairs(path, 9))
    assert np.isfinite(score) and score >= 0
    reloaded = motion.RaftMotion("raft_small", weights, flow_updates=2)  # weights round-trip exactly
    assert reloaded(_pairs(path, 9)) == pytest.approx(score, rel=1e-5)


def test_cuts_are_found_within_one_frame(tmp_path):
    cuts = (13, 30, 47)
    path = vf.write_cuts_video(tmp_path / "cuts.mp4", 64, cuts, SIZE, speed=(2.0, 0.0))
    scores, n = shots.content_scores(_scan(path))
    found = shots.detect_cuts(scores, threshold=15, ratio=3, min_shot_frames=8)
    assert n == 64
    assert len(found) == len(cuts) and all(abs(f - c) <= 1 for f, c in zip(found, cuts)), found


def test_fast_motion_is_not_a_cut(tmp_path):
    path = vf.write_moving_pattern(tmp_path / "fast.mp4", 40, SIZE, (6.0, 2.0))
    scores, _ = shots.content_scores(_scan(path))
    assert shots.detect_cuts(scores, threshold=15, ratio=3, min_shot_frames=8) == []


def test_clip_windows_cover_every_frame_once():
    windows = shots.clip_windows(100, [30, 50], min_frames=9, max_frames=17)
    covered = [i for w in windows for i in range(w.start, w.end)]
    assert covered == list(range(100))
    assert [(w.start, w.end, w.long_enough) for w in windows[:3]] == [(0, 17, True), (17, 30, True), (30, 47, True)]
    assert (47, 50, False) in [(w.start, w.end, w.long_enough) for w in windows]


@pytest.fixture(scope="module")
def transnet_model():
    return transnet.load_model("cpu")


def test_transnetv2_finds_a_hard_cut_and_a_dissolve_but_none_in_a_pan(tmp_path, transnet_model):
    # shots of 40, 60, 50 frames at 25 fps: a hard cut at frame 40 (the new shot's first frame); the last 12
    # frames of shot 2 (88..99) cross-dissolve into shot 3, which starts clean at frame 100
    cut_dissolve = synthetic.write_video(tmp_path / "cd.mp4", synthetic.transition_frames([40, 60, 50], {1: 12}), 25)
    pan = synthetic.write_video(tmp_path / "pan.mp4", synthetic.transition_frames([150]), 25)
    small = _small(cut_dissolve)
    assert small.shape == (150, 27, 48, 3)
    spans = transnet.transition_spans(*transnet.predict(transnet_model, small, batch_size=2))
    assert len(spans) == 2, spans
    (cut_start, cut_end), (dis_start, dis_end) = spans
    assert cut_end - cut_start <= 2 and abs(cut_end - 40) <= 1, spans  # measured: (39, 40)
    assert abs(dis_start - 88) <= 1 and abs(dis_end - 100) <= 1, spans  # measured: (89, 100)
    shot_spans = shots.shots_between(150, transitions=spans)
    assert len(shot_spans) == 3 and not any(s < dis_end and e > dis_start for s, e in shot_spans)
    pan_small = _small(pan)
    assert transnet.transition_spans(*transnet.predict(transnet_model, pan_small)) == []


def test_shots_between_leaves_transitions_out():
    assert shots.shots_between(100, cuts=[30], transitions=[(10, 12), (60, 70)]) == [(0, 10), (12, 30), (30, 60),
                                                                                     (70, 100)]  # fmt: skip


def test_blurred_copy_scores_far_lower(tmp_path):
    sharp = vf.write_moving_pattern(tmp_path / "sharp.mp4", 9, SIZE, (2.0, 0.0))
    blurred = vf.write_blurred_copy(sharp, tmp_path / "blurred.mp4", sigma=3.0)
    sharp_score = blur.blur_score(codecs.decode_video(str(sharp), [0, 4, 8]))
    blurred_score = blur.blur_score(codecs.decode_video(str(blurred), [0, 4, 8]))
    assert sharp_score > 200 > 20 > blurred_score  # the paper's threshold separates them


def test_broken_zoo_gives_the_right_error_kinds(tmp_path):
    good = vf.write_moving_pattern(tmp_path / "good.mp4", 33, SIZE)
    for name, (uri, kind) in vf.write_broken_zoo(tmp_path / "zoo", good).items():
        with pytest.raises(media.MediaError) as err:
            path = media.local_path(uri, None, str(tmp_path / "cache"))
            info = media.probe(path, "video")
            list(SourcePass(path, (160, 128), (64, 52), WholeSource(), 9, 17, info["n_frames"]).windows())
        assert err.value.kind == kind, (name, err.value)
        assert err.value.message, name


def test_probe_reads_the_truth(tmp_path):
    path = vf.write_moving_pattern(tmp_path / "m.mp4", 21, SIZE, fps=25.0)
    info = media.probe(str(path), "video")
    assert (info["n_frames"], info["width"], info["height"], info["codec"]) == (21, 160, 128, "h264")
    assert info["fps"] == pytest.approx(25.0)
    image = vf.write_image(tmp_path / "s.jpg", SIZE)
    assert media.probe(str(image), "image")["n_frames"] == 1


def test_stored_media_round_trips(tmp_path):
    frames = np.stack([np.roll(vf.texture(64, 80, sigma=4.0), k, axis=1) for k in range(9)])  # smooth: 4:2:0 keeps it
    decoded = codecs.decode_video(codecs.encode_video(frames, 24.0, crf=10))
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(float) - frames).mean() < 5
    image = frames[0]
    np.testing.assert_array_equal(codecs.decode_video(codecs.encode_image(image))[0], image)  # PNG: lossless
    tensor = frames_to_tensor(decoded)
    assert tensor.shape == (3, 9, 64, 80) and tensor.min() >= -1 and tensor.max() <= 1


def test_depth_codec_keeps_raw_depth():
    rng = np.random.default_rng(0)
    depth = rng.random((5, 32, 48)).astype(np.float32) * 40 + np.arange(5)[:, None, None]
    pngs, lo, hi = codecs.encode_depth(depth)
    back = codecs.decode_depth(pngs, lo, hi)
    assert back.dtype == np.float32 and back.shape == depth.shape
    assert np.abs(back - depth).max() <= 40 / 65535 + 1e-4
    flat = codecs.decode_depth(*codecs.encode_depth(np.full((1, 4, 4), 3.0)))
    np.testing.assert_allclose(flat, 3.0)


def test_text_embedding_codec_pads_to_77():
    emb = np.random.default_rng(0).standard_normal((77, 32)).astype(np.float32)
    keep = np.arange(77) < 9
    data, n, dim = codecs.encode_text_embedding(emb, keep)
    padded, mask = codecs.decode_text_embedding(data, n, dim)
    assert (n, dim, padded.shape, int(mask.sum())) == (9, 32, (77, 32), 9)
    np.testing.assert_allclose(padded[:9], emb[:9], atol=2e-3)
    assert not padded[9:].any()


def test_clip_ids_are_deterministic():
    a = tables.clip_id("s3://b/v.mp4", 0, 97)
    assert a == tables.clip_id("s3://b/v.mp4", 0, 97)
    assert len({a, tables.clip_id("s3://b/v.mp4", 97, 194), tables.clip_id("s3://b/w.mp4", 0, 97)}) == 3
    assert tables.source_id("x") == tables.source_id("x") != tables.source_id("y")


def test_schemas_are_versioned():
    for name, table_schema in tables.SCHEMAS.items():
        assert tables.check_schema(table_schema, name, writing=True) == tables.SCHEMA_VERSION
    assert tables.CLIPS_SCHEMA.field("video").metadata == {b"lance-encoding:blob": b"true"}
    with pytest.raises(ValueError, match="schema version"):
        tables.check_schema(tables.CLIPS_SCHEMA.with_metadata({}), "clips")
    # A version-1 table (before `proxies`) is read, not written to.
    v1 = tables.CLIPS_SCHEMA.remove(tables.CLIPS_SCHEMA.get_field_index("proxies"))
    v1 = v1.with_metadata({tables.SCHEMA_VERSION_KEY: "1", tables.TABLE_KEY: "clips"})
    assert tables.check_schema(v1, "clips") == "1"
    with pytest.raises(ValueError, match="schema version 1; this version of curation writes 3"):
        tables.check_schema(v1, "clips", writing=True)
    # A version-2 table (before the quality signals) is read too.
    v3_columns = [c for c, v in tables.COLUMNS_SINCE.items() if v == "3"]
    v2 = tables.CLIPS_SCHEMA
    for name in v3_columns:
        v2 = v2.remove(v2.get_field_index(name))
    assert tables.check_schema(v2.with_metadata({tables.SCHEMA_VERSION_KEY: "2", tables.TABLE_KEY: "clips"}),
                               "clips") == "2"
    with pytest.raises(ValueError, match="lacks columns"):
        tables.check_schema(tables.CLIPS_SCHEMA.remove(0), "clips")


def test_depth_stack_codec_is_the_png_quantisation():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 20.0, (6, 24, 40)).astype(np.float32)
    depth[3] = 7.0  # a flat frame
    data, lows, highs = codecs.encode_depth_stack(depth)
    stack = codecs.decode_depth_stack(data, lows, highs, 24, 40)
    pngs = codecs.decode_depth(*codecs.encode_depth(depth))
    np.testing.assert_array_equal(stack, pngs)  # the same 16-bit values, another container
    np.testing.assert_allclose(stack, depth, atol=(19.5 / 65535) / 2 * 1.01)
    np.testing.assert_array_equal(codecs.decode_depth_stack(data, lows, highs, 24, 40, [5, 3]), stack[[5, 3]])


def test_decode_video_picks_frames(tmp_path):
    frames = np.stack([np.full((16, 32, 3), 20 * i, np.uint8) for i in range(8)])
    data = codecs.encode_video(frames, 24.0, crf=0)
    every = codecs.decode_video(data)
    np.testing.assert_array_equal(codecs.decode_video(data, [6, 1, 1]), every[[6, 1, 1]])
    with pytest.raises(ValueError, match=r"frames \[9\] asked for, but the video has 8 frames"):
        codecs.decode_video(data, [2, 9])

