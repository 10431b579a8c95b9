"""Each source is decoded once: the streaming pass equals a whole scan, and the real job (a local Ray whose
workers log every PyAV open and decode through a setup hook) opens each file for decoding once."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import lance
import numpy as np
import pytest
import video_fixtures as vf
from curate_fixtures import local_ray

from pipeline.config import load_config
from pipeline.contract import codecs
from pipeline.engine import curate
from pipeline.ops import media, shots, transnet
from pipeline.ops.source_pass import SourcePass

SIZE = (128, 160)


def test_source_pass_yields_the_whole_scan_windows_while_decoding_in_bounded_memory(tmp_path):
    path = str(vf.write_cuts_video(tmp_path / "long.mp4", 300, (70, 75, 200), SIZE))
    small = [f.to_ndarray(width=96, height=76, format="rgb24") for f in codecs.video_frames(path)]  # HSV scan size
    scores, n = shots.content_scores(small)
    want = shots.clip_windows(n, shots.detect_cuts(scores, 15.0, 3.0, 8), 9, 17)
    decode = SourcePass(path, (SIZE[1], SIZE[0]), media.fit_size(SIZE[1], SIZE[0], 96),
                        shots.HsvCutDetector(15.0, 3.0, 8), 9, 17, expected_frames=300)  # fmt: skip
    every = codecs.decode_video(path)  # (300, H, W, 3)
    got, decoded_at, held = [], [], 0
    for window, frames in decode.windows():
        got.append(window)
        decoded_at.append(decode.n_frames)
        held = max(held, decode.buffered_frames)
        if window.long_enough:
            np.testing.assert_array_equal(frames, every[window.start : window.end])
        else:
            assert frames is None  # a rejected window carries no pixels
    assert got == want and (decode.n_frames, decode.n_shots) == (300, 3)  # cuts at 70 and 200; 75 is too close
    assert decoded_at[0] < 64 and decoded_at[len(got) // 2] < 250  # windows leave while the source decodes
    assert held <= 17 + 2 + 32  # one window + the detector's look-ahead + one chunk, whatever the length


def test_transnet_streaming_equals_one_pass():
    model = transnet.load_model("cpu")
    frames = np.random.default_rng(0).integers(0, 255, (237, 27, 48, 3), dtype=np.uint8)
    frames[120:] //= 3  # a hard change of brightness at 120
    single, many = transnet.predict(model, frames, batch_size=8)
    stream = transnet.TransNetDetector(model, batch_size=2)
    frontiers = []
    for start in range(0, len(frames), 31):
        stream.push(frames[start : start + 31])
        frontiers.append(stream.decided(final=False)[0])
    frontier, _, transitions = stream.decided(final=True)
    np.testing.assert_allclose(stream.single, single, atol=1e-5)
    np.testing.assert_allclose(stream.many, many, atol=1e-5)
    assert frontier == 237 and transitions == transnet.transition_spans(single, many)
    assert frontiers == sorted(frontiers) and frontiers[4] >= 50 and frontiers[-1] < 237  # decided while pushed


def log_pyav_opens() -> None:
    """Ray worker setup hook: every av.open of a file path, and every decode pass with its frame count, is a
    line of the file $MFM_TEST_AV_LOG."""
    import av

    log, real_open = os.environ["MFM_TEST_AV_LOG"], av.open

    def write(line: str) -> None:
        with open(log, "a") as f:
            f.write(line + "\n")

    class Logged:
        def __init__(self, container, path: str):
            self._container, self._path = container, path

        def __getattr__(self, name: str):
            return getattr(self._container, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._container.__exit__(*exc)

        def decode(self, *args, **kwargs):
            n = 0
            try:
                for frame in self._container.decode(*args, **kwargs):
                    n += 1
                    yield frame
            finally:
                write(json.dumps({"decode": self._path, "frames": n}))

    def logged_open(file, *args, **kwargs):
        container = real_open(file, *args, **kwargs)
        if isinstance(file, str | os.PathLike) and not (args[:1] == ("w",) or kwargs.get("mode") == "w"):
            write(json.dumps({"open": str(file)}))
            return Logged(container, str(file))
        return container

    av.open = logged_open


@pytest.fixture(scope="module")
def av_log(tmp_path_factory):
    import ray.cloudpickle

    log = tmp_path_factory.mktemp("av") / "opens.jsonl"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook travels by value
    with local_ray(runtime_env={"worker_process_setup_hook": log_pyav_opens,
                                "env_vars": {"MFM_TEST_AV_LOG": str(log)}}):  # fmt: skip
        yield log


@pytest.mark.slow
def test_the_default_job_decodes_each_source_once(tmp_path, av_log):
    media_dir = tmp_path / "media"
    long = vf.write_cuts_video(media_dir / "long.mp4", 240, (100,), SIZE, speed=(4.0, 0.0))
    pan = vf.write_moving_pattern(media_dir / "pan.mp4", 120, SIZE, (3.0, 0.0), seed=5)
    vf.write_image(media_dir / "still.png", SIZE)
    whole = vf.write_moving_pattern(tmp_path / "whole.mp4", 400, SIZE, (2.0, 0.0), seed=6)
    data = whole.read_bytes()
    (media_dir / "cut_short.mp4").write_bytes(data[: int(len(data) * 0.7)])  # header says 400 frames
    # the defaults (TransNetV2, OCR, proxies), TransNetV2 a window a forward: clips leave before the decode ends
    cfg = load_config(overrides={"run.cache_dir": str(tmp_path / "cache"), "run.num_cpus": 2,
                                 "clip.transnet_batch_size": 1})  # fmt: skip
    summary = curate(str(media_dir), str(tmp_path / "out"), cfg)
    assert summary.error is None and summary.sources_ok == 3, summary.lines()

    lines = [json.loads(line) for line in av_log.read_text().splitlines()]
    opens = Counter(d["open"] for d in lines if "open" in d)
    decodes = {d["decode"]: d["frames"] for d in lines if "decode" in d}
    passes = Counter(d["decode"] for d in lines if "decode" in d)
    cut_path = str(media_dir / "cut_short.mp4")
    assert passes == Counter({str(long): 1, str(pan): 1, cut_path: 1})  # one decode pass per video, no other
    assert (decodes[str(long)], decodes[str(pan)]) == (240, 120) and 0 < decodes[cut_path] < 400
    assert {opens[str(p)] for p in (long, pan)} == {2}  # the probe's header read and the one decode

    sources = {Path(r["uri"]).name: r for r in lance.dataset(str(tmp_path / "out" / "sources.lance")).to_table()
               .to_pylist()}  # fmt: skip
    cut = sources["cut_short.mp4"]
    assert (cut["status"], cut["error_kind"], cut["n_clips"]) == ("failed", "truncated", 0)
    clips_ds = lance.dataset(str(tmp_path / "out" / "clips.lance"))
    clips = clips_ds.to_table(columns=["source_uri", "frame_start", "frame_end", "passed", "media_type"],
                              with_row_id=True).to_pylist()  # fmt: skip
    assert {Path(c["source_uri"]).name for c in clips} == {"long.mp4", "pan.mp4", "still.png"}
    assert sum(sources[n]["n_clips"] for n in ("long.mp4", "pan.mp4", "still.png")) == len(clips)
    assert any(f.deletion_file() for f in clips_ds.get_fragments())  # cut_short's early clips, deleted
    assert summary.clips_kept == sum(c["passed"] for c in clips)  # and not counted as kept
    frames = {str(long): codecs.decode_video(str(long)), str(pan): codecs.decode_video(str(pan))}

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))

    checked = 0
    for clip in clips:
        if clip["passed"] and clip["media_type"] == "video":
            stored = codecs.decode_video(clips_ds.take_blobs("video", ids=[clip["_rowid"]])[0].readall())
            source, (start, end) = frames[clip["source_uri"]], (clip["frame_start"], clip["frame_end"])
            right, shifted = psnr(stored, source[start:end]), psnr(stored[:-1], source[start + 1 : end])
            assert right > 28 and right > shifted + 5, (clip["source_uri"], start, right, shifted)  # these frames
            checked += 1
    assert checked >= 3
