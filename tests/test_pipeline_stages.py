"""Curation stages called directly (`setup(); process(rows)`) on real files, without Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import video_fixtures as vf

from mfm import synthetic
from pipeline.config import load_config
from pipeline.contract import codecs, tables
from pipeline.inputs import source_row
from pipeline.stages import build_stages
from pipeline.stages.base import Resources, Stage
from pipeline.stages.blur import BlurStage
from pipeline.stages.clip_encode import ClipEncodeStage
from pipeline.stages.depth import DepthStage
from pipeline.stages.filter import FilterStage
from pipeline.stages.group import group_stages
from pipeline.stages.motion import MotionStage
from pipeline.stages.motion_frames import MotionFramesStage
from pipeline.stages.probe import ProbeStage
from pipeline.stages.proxies import ProxyStage
from pipeline.stages.shot_split import ShotSplitStage, TransNetShotSplitStage
from pipeline.stages.text_embed import TextEmbedStage
from pipeline.stages.vae_latents import VaeLatentStage

SIZE = (128, 160)


def _split(tmp_path, rows, **knobs):
    """Probe + shot split: each source's clip rows, then its closing row (is_clip False)."""
    cache = {"cache_dir": str(tmp_path / "cache")}
    probed = ProbeStage(**cache).process(rows)
    return ShotSplitStage(**{"min_frames": 9, "max_frames": 17, **knobs}, **cache).process(probed)


def _clips(tmp_path, rows, **knobs):
    return [r for r in _split(tmp_path, rows, **knobs) if r["is_clip"]]


def _score(tmp_path, rows, **filter_knobs):
    cache = {"cache_dir": str(tmp_path / "cache")}
    rows = BlurStage(**cache).process(rows)
    rows = MotionFramesStage(n_pairs=4, analysis_short_side=128, **cache).process(rows)
    rows = MotionStage(**cache).process(rows)
    return FilterStage(**{"motion_threshold": 1.0, **filter_knobs}).process(rows)


def test_broken_zoo_becomes_placeholder_rows(tmp_path):
    good = vf.write_moving_pattern(tmp_path / "good.mp4", 17, SIZE)
    zoo = vf.write_broken_zoo(tmp_path / "zoo", good)
    rows = _split(tmp_path, [source_row(uri) for uri, _ in zoo.values()])
    assert len(rows) == len(zoo)
    for row, (name, (uri, kind)) in zip(rows, zoo.items(), strict=True):
        assert row["source_uri"] == uri and not row["is_clip"] and row["src_n_clips"] == 0, name
        assert (row["src_status"], row["src_error_kind"]) == ("failed", kind), (name, row["src_error"])
        assert uri.rsplit("/", 1)[-1] in row["src_error"], row["src_error"]


def test_shot_split_cuts_windows_and_images(tmp_path):
    video = vf.write_cuts_video(tmp_path / "cuts.mp4", 60, (20, 41), SIZE)
    image = vf.write_image(tmp_path / "still.jpg", SIZE)
    out = _split(tmp_path, [source_row(str(video)), source_row(str(image))], max_side=80)
    rows = [r for r in out if r["is_clip"]]
    closing = [r for r in out if not r["is_clip"]]  # one per source, last of its rows: what the decode found
    assert [r["src_n_clips"] for r in closing] == [6, 1] and closing[0]["src_n_frames"] == 60
    assert out.index(closing[0]) == 6 and out[-1] is closing[1]
    spans = [(r["frame_start"], r["frame_end"], r["reject_reason"]) for r in rows[:-1]]
    assert spans == [(0, 17, None), (17, 20, "too_short"), (20, 37, None), (37, 41, "too_short"),
                     (41, 58, None), (58, 60, "too_short")]  # fmt: skip
    assert closing[0]["src_n_shots"] == 3
    shapes = [None if r["frames"] is None else r["frames"].shape for r in rows[:-1]]
    assert shapes == [(n, 64, 80, 3) if n >= 9 else None for n in (17, 3, 17, 4, 17, 2)]  # rejects: no frames
    assert rows[0]["clip_id"] == tables.clip_id(str(video), 0, 17)
    assert (rows[0]["width"], rows[0]["height"], rows[0]["fps"]) == (80, 64, 24.0)
    still = rows[-1]
    assert (still["media_type"], still["frame_start"], still["frame_end"], still["n_frames"]) == ("image", 0, 1, 1)
    score_only = _split(tmp_path, [source_row(str(video))], reject_short=False)
    assert all(r["passed"] and r["reject_reason"] is None and r["frames"] is not None
               for r in score_only if r["is_clip"])  # fmt: skip


def test_transnet_split_keeps_2s_shots_at_25fps_and_cuts_long_shots(tmp_path):
    # three 2-second shots at 25 fps, then a 130-frame shot; hard cuts at 50, 100, 150
    video = synthetic.write_video(tmp_path / "street.mp4", synthetic.transition_frames([50, 50, 50, 130]), 25)
    cache = {"cache_dir": str(tmp_path / "cache")}
    stage = TransNetShotSplitStage(min_frames=49, max_frames=97, device="cpu", actors=1, **cache)
    stage.setup()
    *rows, closing = stage.process(ProbeStage(**cache).process([source_row(str(video))]))
    spans = [(r["frame_start"], r["frame_end"], r["reject_reason"]) for r in rows]
    assert spans == [(0, 49, None), (50, 99, None), (100, 149, None), (150, 247, None), (247, 280, "too_short")]
    assert (closing["is_clip"], closing["src_n_shots"], closing["src_n_clips"]) == (False, 4, 5)


def test_edit_pairs_link_source_to_target_by_span(tmp_path):
    src = vf.write_moving_pattern(tmp_path / "src.mp4", 30, SIZE, seed=1)
    dst = vf.write_moving_pattern(tmp_path / "dst.mp4", 30, SIZE, seed=2)
    rows = _clips(tmp_path, [source_row(str(src), "edit_source", "a cat", None, str(dst), "make it red"),
                             source_row(str(dst), "edit_target", None, None, None, "make it red")])  # fmt: skip
    sources = [r for r in rows if r["role"] == "edit_source"]
    targets = {r["clip_id"] for r in rows if r["role"] == "edit_target"}
    assert [r["edit_target_clip_id"] for r in sources] == [tables.clip_id(str(dst), 0, 17),
                                                           tables.clip_id(str(dst), 17, 30)]  # fmt: skip
    assert {r["edit_target_clip_id"] for r in sources} == targets


def test_blurred_copy_is_rejected_and_motion_is_scored(tmp_path):
    sharp = vf.write_moving_pattern(tmp_path / "sharp.mp4", 17, SIZE, (3.0, 0.0))
    blurred = vf.write_blurred_copy(sharp, tmp_path / "blurred.mp4")
    still = vf.write_moving_pattern(tmp_path / "still.mp4", 17, SIZE, (0.0, 0.0))
    rows = _score(tmp_path, _clips(tmp_path, [source_row(str(p)) for p in (sharp, blurred, still)]))
    by_name = {r["source_uri"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_name["sharp.mp4"]["passed"] and by_name["sharp.mp4"]["blur_score"] > 200
    assert by_name["sharp.mp4"]["motion_score"] == pytest.approx(3.0, rel=0.1)
    assert by_name["sharp.mp4"]["motion_method"] == "farneback" and "motion_pairs" not in by_name["sharp.mp4"]
    assert "too_blurry" in by_name["blurred.mp4"]["reject_reason"].split(",")
    assert not by_name["blurred.mp4"]["passed"] and by_name["blurred.mp4"]["blur_score"] < 20
    assert by_name["still.mp4"]["reject_reason"] == "low_motion"
    annotated = _score(tmp_path, _clips(tmp_path, [source_row(str(blurred))]), score_only=True)
    assert annotated[0]["passed"] and annotated[0]["blur_score"] < 200  # score-only: annotated, kept


def test_motion_stage_with_tiny_raft(tmp_path):
    import torch

    from pipeline.ops import motion

    torch.manual_seed(0)
    weights = motion.save_raft(motion.load_raft("raft_small", None), tmp_path / "raft_small.safetensors")
    video = vf.write_moving_pattern(tmp_path / "m.mp4", 9, SIZE, (2.0, 0.0))
    rows = MotionFramesStage(n_pairs=2, analysis_short_side=128, cache_dir=str(tmp_path)).process(
        _clips(tmp_path, [source_row(str(video))])
    )
    stage = MotionStage(backend="raft_small", raft_weights=str(weights), flow_updates=2, actors=1)
    stage.setup()
    row = stage.process(rows)[0]
    assert row["motion_method"] == "raft_small" and np.isfinite(row["motion_score"])


def test_model_stages_with_tiny_models(tmp_path):
    from model.tiny_pretrained import write_tiny_pretrained

    tiny = write_tiny_pretrained(tmp_path / "tiny")
    video = vf.write_moving_pattern(tmp_path / "m.mp4", 9, SIZE, (3.0, 0.0))
    rows = _split(tmp_path, [{**source_row(str(video)), "caption": "a red car drives along a road"}], max_side=80)
    rows = ClipEncodeStage(keep_frames=True, cache_dir=str(tmp_path)).process(rows)
    for stage in (DepthStage(model_path=str(tiny["depth"]), actors=1),
                  VaeLatentStage(model_path=str(tiny["vae"]), buckets=("48x64",), actors=1),
                  TextEmbedStage(model_path=str(tiny["root"]), actors=1)):  # fmt: skip
        stage.setup()
        rows = stage.process(rows)
    row = rows[0]
    assert row.get("error") is None, row["error"]
    frames = codecs.decode_video(row["video"])
    assert frames.shape == (9, 64, 80, 3) and row["video_format"] == "mp4/h264"
    depth = codecs.decode_depth(row["depth_frames"], row["depth_min"], row["depth_max"])
    assert depth.shape == (9, 64, 80) and depth.min() >= 0 and depth.std() > 0
    latents = codecs.decode_latents(row["vae_latents"][0])
    assert row["vae_latents"][0]["bucket"] == "48x64" and latents.shape == (16, 3, 6, 8)
    emb, keep = codecs.decode_text_embedding(row["text_emb"], row["text_emb_tokens"], row["text_emb_dim"])
    assert emb.shape == (77, row["text_emb_dim"]) and 0 < keep.sum() == row["text_emb_tokens"]


def test_depth_stage_in_bf16_is_close_to_fp32(tmp_path):
    from model.tiny_pretrained import write_tiny_pretrained

    tiny = write_tiny_pretrained(tmp_path / "tiny")
    video = vf.write_moving_pattern(tmp_path / "m.mp4", 9, SIZE, (3.0, 0.0))
    rows = ClipEncodeStage(keep_frames=True, cache_dir=str(tmp_path)).process(
        _clips(tmp_path, [source_row(str(video))], max_side=80))  # fmt: skip
    depth = {}
    for precision in ("fp32", "bf16"):
        stage = DepthStage(model_path=str(tiny["depth"]), actors=1, precision=precision)
        stage.setup()
        assert stage.model.model.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        row = stage.process([dict(r) for r in rows])[0]
        depth[precision] = codecs.decode_depth(row["depth_frames"], row["depth_min"], row["depth_max"])
    err = np.abs(depth["bf16"] - depth["fp32"]).mean() / np.abs(depth["fp32"]).mean()
    assert 0 < err < 0.02, err  # bf16 rounding (8 bits of mantissa), not another answer
    with pytest.raises(Exception, match="precision"):
        load_config(overrides={"depth.precision": "fp16"})


def _luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of the luma of two uint8 RGB stacks (H.264 keeps chroma at half size: judge luma)."""
    luma = np.array([0.299, 0.587, 0.114])
    err = (a.astype(np.float64) - b.astype(np.float64)) @ luma
    return float(10 * np.log10(255.0**2 / np.mean(err**2)))


def test_proxies_cover_each_stage_bucket_and_hold_the_same_frames_and_depth(tmp_path):
    import cv2

    from pipeline.contract.buckets import aspect_buckets, cover_size, nearest_bucket

    video = vf.write_moving_pattern(tmp_path / "m.mp4", 9, (128, 160), (2.0, 0.0), seed=1)
    image = vf.write_image(tmp_path / "still.png", (96, 128))
    rows = ClipEncodeStage(keep_frames=True, cache_dir=str(tmp_path)).process(
        _clips(tmp_path, [source_row(str(video)), source_row(str(image))]))  # fmt: skip
    y, x = np.mgrid[0:128, 0:160].astype(np.float32)
    depth = np.stack([2.0 + y / 16 + np.sin(x / 9 + t) for t in range(9)])  # (T, H, W) smooth, known
    rows[0]["depth_frames"], rows[0]["depth_min"], rows[0]["depth_max"] = codecs.encode_depth(depth)
    phases = ((32, 48), (64, 80), (256, 256))  # the last is larger than the clips: no proxy for it
    rows = ProxyStage(phases=phases, aspect_ratios=(0.75, 1.0, 1.25)).process(rows)
    clip, still = rows
    assert clip.get("error") is None and still.get("error") is None
    frames = codecs.decode_video(clip["video"])  # (9, 128, 160, 3)
    for row, (h, w) in ((clip, (128, 160)), (still, (96, 128))):
        sizes = [(p["height"], p["width"]) for p in row["proxies"]]
        want = [cover_size(h, w, nearest_bucket(h, w, aspect_buckets(*s, (0.75, 1.0, 1.25)))) for s in phases[:2]]
        assert sizes == sorted(set(want), key=lambda s: s[0] * s[1])  # smallest first
    for proxy, phase in zip(clip["proxies"], phases, strict=False):
        bucket = nearest_bucket(128, 160, aspect_buckets(*phase, (0.75, 1.0, 1.25)))
        size = (proxy["height"], proxy["width"])
        assert size[0] >= bucket[0] and size[1] >= bucket[1] and size[0] % 2 == 0 == size[1] % 2
        assert bucket[0] == size[0] or bucket[1] == size[1]  # covers tightly: the trainer only crops
        small = codecs.decode_video(proxy["video"])
        want = np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA) for f in frames])
        assert small.shape == (9, *size, 3) and _luma_psnr(small, want) > 30
        got = codecs.decode_depth_stack(proxy["depth"], proxy["depth_min"], proxy["depth_max"], *size)
        want = np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA) for f in depth])
        np.testing.assert_allclose(got, want, atol=1e-3)
    assert codecs.decode_video(still["proxies"][0]["video"]).shape[0] == 1 and still["proxies"][0]["depth"] is None


def test_stages_declare_resources_and_columns():
    with pytest.raises(ValueError, match="actor pool"):
        DepthStage(model_path="x", resources=Resources(cpus=0.25, gpus=1))
    with pytest.raises(ValueError, match="gpus"):
        Resources(gpus=1.5)
    cfg = load_config(overrides={"depth.model": "d", "text.model": "t"})
    stages = build_stages(cfg, gpus=1.0)
    names = [s.name for s in stages]
    assert names == ["probe", "shot_split", "blur", "motion_frames", "motion", "filter", "clip_encode", "ocr",
                     "depth", "proxies", "text_embed", "quality_tags", "write"]  # fmt: skip
    assert all(isinstance(s, Stage) and s.describe()["writes"] for s in stages)
    model_stages = [s for s in stages if s.actors and s.name != "ocr"]  # ocr: CPU unless ocr.gpus is set
    assert [s.name for s in model_stages] == ["shot_split", "depth", "text_embed"]
    assert sum(s.resources.gpus for s in model_stages) <= 1.0 and all(s.resources.gpus > 0 for s in model_stages)
    for config in (load_config(), load_config(overrides={"clip.shot_detector": "hsv"}), cfg):
        groups = group_stages(build_stages(config, cpus=2.0))
        held = sum(g.resources.cpus * g.actors for g in groups if g.actors)  # actors keep their CPUs
        tasks = max((g.resources.cpus for g in groups if not g.actors), default=0.0)
        assert held + tasks <= 2.0, [(g.name, g.resources, g.actors) for g in groups]  # two cores never deadlock
