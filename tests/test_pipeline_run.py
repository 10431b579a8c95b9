"""`mfm curate` end to end on a real local Ray with Lance tables in tmp_path (one Ray session per module).

Covers: kept / rejected clips with reasons, the broken-file zoo recorded and never fatal, the clips
table read back through Lance's torch loader (spawned workers), the HTML report, idempotent reruns,
the crash window between the two commits, and a SIGKILL mid-run whose resume equals an unbroken run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lance
import pytest
import video_fixtures as vf
from curate_fixtures import local_ray

from pipeline import cli
from pipeline.config import load_config
from pipeline.contract import codecs, tables
from pipeline.engine import curate

pytestmark = pytest.mark.slow
SIZE = (128, 160)


@pytest.fixture(scope="module")
def ray_address():
    with local_ray() as address:
        yield address


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("curate")
    media = root / "media"
    media.mkdir()
    vf.write_moving_pattern(media / "fast.mp4", 30, SIZE, (3.0, 1.0), seed=1)
    vf.write_blurred_copy(media / "fast.mp4", media / "blurred.mp4")
    vf.write_moving_pattern(media / "static.mp4", 17, SIZE, (0.0, 0.0), seed=2)
    vf.write_cuts_video(media / "cuts.mp4", 40, (20,), SIZE, speed=(2.0, 0.0))
    vf.write_image(media / "still.png", SIZE)
    vf.write_moving_pattern(media / "edit_src.mp4", 17, SIZE, (2.0, 0.0), seed=3)
    vf.write_moving_pattern(media / "edit_dst.mp4", 17, SIZE, (2.0, 0.0), seed=4)
    zoo = vf.write_broken_zoo(root / "zoo", media / "fast.mp4")
    rows = [{"uri": str(media / name), "caption": f"clip {name}"}
            for name in ("fast.mp4", "blurred.mp4", "static.mp4", "cuts.mp4", "still.png")]  # fmt: skip
    rows.append({"uri": "edit_src.mp4", "caption": "a texture", "edit_target": "edit_dst.mp4",
                 "instruction": "make it red"})  # fmt: skip
    rows += [{"uri": uri, "caption": name} for name, (uri, _) in zoo.items()]
    (media / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "zoo.json").write_text(json.dumps(zoo))
    from model.tiny_pretrained import write_tiny_pretrained

    tiny = write_tiny_pretrained(root / "tiny")
    (root / "curate.yaml").write_text(
        "clip: {shot_detector: hsv, min_frames: 9, max_frames: 17}\n"
        "motion: {threshold: 1.0, analysis_short_side: 128, n_pairs: 4}\n"
        f"depth: {{model: {tiny['depth']}}}\n"
        f"text: {{model: {tiny['root']}}}\n"
        f"run: {{commit_every: 2, cache_dir: {root / 'cache'}}}\n"
    )
    return root


@pytest.fixture(scope="module")
def curated(ray_address, work) -> Path:
    out = work / "out"
    manifest, config = work / "media" / "manifest.jsonl", work / "curate.yaml"
    assert cli.main(["--input", str(manifest), "--output", str(out), "--config", str(config)]) == 0
    return out


def _clips(out: Path, columns=("clip_id", "source_uri", "passed", "reject_reason")) -> list[dict]:
    return lance.dataset(str(out / "clips.lance")).to_table(columns=list(columns)).to_pylist()


def _sources(out: Path) -> dict[str, dict]:
    rows = lance.dataset(str(out / "sources.lance")).to_table().to_pylist()
    return {r["uri"]: r for r in rows}


def test_every_input_has_a_sources_row_and_the_zoo_is_not_fatal(curated, work):
    sources = _sources(curated)
    zoo = json.loads((work / "zoo.json").read_text())
    assert len(sources) == 7 + len(zoo)
    for name, (uri, kind) in zoo.items():
        row = sources[uri]
        assert (row["status"], row["error_kind"], row["media_type"]) == ("failed", kind, "unknown"), name
        assert row["error"] and row["n_clips"] == 0
    fast = sources[str(work / "media" / "fast.mp4")]
    assert (fast["status"], fast["n_frames"], fast["codec"], fast["n_clips"], fast["n_clips_passed"]) == (
        "ok", 30, "h264", 2, 2)  # fmt: skip
    assert sources[str(work / "media" / "cuts.mp4")]["n_shots"] == 2


def test_clips_are_kept_or_rejected_with_reasons(curated, work):
    clips = _clips(curated, ("clip_id", "source_uri", "frame_start", "frame_end", "passed", "reject_reason",
                             "motion_score", "motion_method", "blur_score", "caption", "video_format",
                             "depth_model", "text_encoder", "edit_target_clip_id", "edit_instruction"))  # fmt: skip
    assert len({c["clip_id"] for c in clips}) == len(clips)
    by_src: dict[str, list[dict]] = {}
    for c in clips:
        by_src.setdefault(Path(c["source_uri"]).name, []).append(c)
    assert all(c["passed"] for c in by_src["fast.mp4"])
    assert by_src["fast.mp4"][0]["motion_score"] > 2.5 and by_src["fast.mp4"][0]["caption"] == "clip fast.mp4"
    assert all("too_blurry" in c["reject_reason"] for c in by_src["blurred.mp4"])
    assert [c["reject_reason"] for c in by_src["static.mp4"]] == ["low_motion"]
    assert sorted((c["frame_start"], c["frame_end"]) for c in by_src["cuts.mp4"]) == [(0, 17), (17, 20), (20, 37),
                                                                                    (37, 40)]  # fmt: skip
    assert (by_src["still.png"][0]["motion_method"], by_src["still.png"][0]["video_format"]) == ("image", "png")
    [src], [dst] = by_src["edit_src.mp4"], by_src["edit_dst.mp4"]
    assert src["edit_target_clip_id"] == dst["clip_id"] and src["edit_instruction"] == "make it red"
    for c in clips:  # media, depth and text exactly for the kept clips
        assert (c["video_format"] is not None) == (c["depth_model"] is not None) == (c["text_encoder"] is not None)
        assert (c["video_format"] is not None) == c["passed"], c


def test_edit_target_lookup_is_an_index_query(curated):
    from trainer.data import read_edit_target

    ds = lance.dataset(str(curated / "clips.lance"))
    pair = ds.to_table(columns=["edit_target_clip_id"], filter="role = 'edit_source'").to_pylist()[0]
    plan = ds.scanner(columns=["caption"], filter=f"clip_id = '{pair['edit_target_clip_id']}'").explain_plan()
    assert "ScalarIndexQuery" in plan, plan  # the BTREE index on clip_id, not a scan of every row
    target = read_edit_target(ds, pair["edit_target_clip_id"])
    assert codecs.decode_video(target["video"].readall()).shape[0] > 1  # the target's clip


READ_BACK_COLUMNS = ["clip_id", "n_frames", "motion_score", "video", "depth_frames", "depth_min", "depth_max",
                     "text_emb", "text_emb_tokens", "text_emb_dim"]  # fmt: skip


def decoded_clips(batch, **_):
    """`to_tensor_fn` of the Lance torch loader: the contract's columns decoded with the contract's codecs."""
    import numpy as np
    import torch

    from pipeline.contract.codecs import decode_depth, decode_text_embedding, decode_video
    from pipeline.contract.frames import frames_to_tensor

    cols = {name: batch[name] for name in READ_BACK_COLUMNS}
    depths = zip(*(cols[k].to_pylist() for k in ("depth_frames", "depth_min", "depth_max")), strict=True)
    texts = zip(*(cols[k].to_pylist() for k in ("text_emb", "text_emb_tokens", "text_emb_dim")), strict=True)
    embs, keeps = zip(*(decode_text_embedding(*row) for row in texts), strict=True)
    return {
        "clip_id": cols["clip_id"].to_pylist(),
        "n_frames": cols["n_frames"].to_pylist(),
        "video": [frames_to_tensor(decode_video(blob.readall())) for blob in cols["video"]],  # blob files
        "depth": [torch.from_numpy(decode_depth(*row))[None] for row in depths],  # (1, T, H, W) each
        "text_emb": torch.from_numpy(np.stack(embs)),  # (B, 77, D)
        "text_keep": torch.from_numpy(np.stack(keeps)),  # (B, 77)
        "motion_score": torch.tensor([m or 0.0 for m in cols["motion_score"].to_pylist()], dtype=torch.float32),
    }


def test_clips_read_back_through_the_lance_torch_loader(curated):
    import torch
    from lance.sampler import ShardedFragmentSampler
    from lance.torch.data import LanceDataset

    dataset = LanceDataset(str(curated / "clips.lance"), batch_size=2, columns=READ_BACK_COLUMNS, filter="passed",
                           sampler=ShardedFragmentSampler(rank=0, world_size=1), to_tensor_fn=decoded_clips)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    seen = []
    for batch in loader:
        for i, clip_id in enumerate(batch["clip_id"]):
            video, depth = batch["video"][i], batch["depth"][i]
            assert video.shape[0] == 3 and depth.shape == (1, *video.shape[1:])
            assert video.shape[1] == batch["n_frames"][i] and -1 <= video.min() <= video.max() <= 1
            seen.append(clip_id)
        assert batch["text_emb"].shape[1] == 77 and batch["text_keep"].any(dim=1).all()
        assert batch["motion_score"].dtype == torch.float32
    kept = {c["clip_id"] for c in _clips(curated) if c["passed"]}
    assert sorted(seen) == sorted(kept)


def test_report_has_histograms_and_a_contact_sheet(curated, tmp_path):
    html_path, sheet = tmp_path / "report.html", tmp_path / "sheet.png"
    from pipeline.report import write_report

    write_report(str(curated), html_path, n_clips=4, sheet_png=sheet)
    text = html_path.read_text()
    # blur, motion, duration, size, and (OCR on) text area and watermark; no aesthetic model: "no values"
    assert text.count("<svg") == 6 and "too_blurry" in text and "unsupported_codec" in text
    assert "text area (share of the frame)" in text and "watermark score" in text
    assert "data:image/png;base64," in text and sheet.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["report", str(curated), "--out", str(tmp_path / "r2.html")]) == 0


def test_rerun_is_a_no_op(curated, work):
    before = lance.dataset(str(curated / "clips.lance")).version, lance.dataset(str(curated / "sources.lance")).version
    summary = curate(str(work / "media" / "manifest.jsonl"), str(curated), load_config(work / "curate.yaml"))
    assert summary.skipped_done == summary.inputs and summary.incomplete == 0
    after = lance.dataset(str(curated / "clips.lance")).version, lance.dataset(str(curated / "sources.lance")).version
    assert after == before


def test_every_input_failing_exits_1(ray_address, work, tmp_path):
    zoo = json.loads((work / "zoo.json").read_text())
    (tmp_path / "bad.csv").write_text("uri\n" + "".join(uri + "\n" for uri, _ in zoo.values()))
    assert cli.main(["--input", str(tmp_path / "bad.csv"), "--output", str(tmp_path / "out")]) == 1
    assert len(_sources(tmp_path / "out")) == len(zoo)


# ---------------------------------------------------------------------------------------------------------
# Crash safety
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many(work) -> tuple[Path, Path]:
    """Eight small videos and a fast config (Farneback, no models) committing after every source."""
    folder = work / "many"
    folder.mkdir()
    for k in range(8):
        vf.write_moving_pattern(folder / f"v{k}.mp4", 20, SIZE, (1.0 + k, 0.0), seed=10 + k)
    config = work / "fast.yaml"
    config.write_text(
        "clip: {shot_detector: hsv, min_frames: 5, max_frames: 9}\nmotion: {threshold: 2.5, analysis_short_side: 128}\n"
        f"run: {{commit_every: 1, clip_batch_size: 1, write_batch_size: 1, cache_dir: {work / 'cache'}}}\n"
    )
    return folder, config


@pytest.fixture(scope="module")
def unbroken(ray_address, many, work) -> list[dict]:
    folder, config = many
    summary = curate(str(folder), str(work / "unbroken"), load_config(config))
    assert summary.sources_ok == 8 and summary.incomplete == 0
    return _clip_set(work / "unbroken")


def _clip_set(out: Path) -> list[tuple]:
    rows = _clips(out, ("clip_id", "passed", "reject_reason", "blur_score", "motion_score"))
    return sorted((r["clip_id"], r["passed"], r["reject_reason"], round(r["blur_score"] or 0, 3),
                   round(r["motion_score"] or 0, 3)) for r in rows)  # fmt: skip


def test_crash_between_the_two_commits_is_repaired(ray_address, many, unbroken, work):
    folder, config = many
    out = work / "between"
    curate(str(folder), str(out), load_config(config))
    sources = lance.dataset(str(out / "sources.lance"))
    victim = tables.source_id(str(folder / "v3.mp4"))
    sources.delete(f"source_id = '{victim}'")  # as if killed after committing clips, before sources
    summary = curate(str(folder), str(out), load_config(config))
    assert summary.orphans_deleted == 3 and summary.sources_ok == 1 and summary.skipped_done == 7
    assert _clip_set(out) == unbroken


def test_sigkill_mid_run_then_resume_equals_unbroken(ray_address, many, unbroken, work):
    folder, config = many
    out = work / "killed"
    cmd = [sys.executable, "-m", "mfm.cli", "curate", "--input", str(folder), "--output", str(out),
           "--config", str(config), "--address", ray_address]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    committed, deadline = 0, time.monotonic() + 120
    try:
        while committed == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            with contextlib.suppress(ValueError):  # not created yet
                committed = lance.dataset(str(out / "sources.lance")).count_rows()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it started in its session
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    committed = lance.dataset(str(out / "sources.lance")).count_rows()
    assert 0 < committed < 8
    lance.dataset(str(out / "clips.lance")).to_table()  # the last committed version reads back
    summary = curate(str(folder), str(out), load_config(config))
    assert summary.skipped_done == committed and summary.incomplete == 0
    assert _clip_set(out) == unbroken
    assert len(_sources(out)) == 8
