"""NVENC and NVDEC are chosen by themselves in a process that sees a GPU with them, the CPU's codecs otherwise;
asked for by name where they cannot run, they stop the job with why, before work starts where that is known."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import lance
import pytest
import video_fixtures as vf
from curate_fixtures import local_ray

from pipeline.config import ClipConfig, load_config
from pipeline.contract import codecs
from pipeline.engine import curate
from pipeline.ops import video_devices
from pipeline.stages import NAMED_CODEC_GPUS, ShotSplitStage, build_stages
from pipeline.stages.group import group_stages

ROOT = Path(__file__).resolve().parents[1]

NO_GPU_PROCESS = """
import numpy as np
from pipeline.contract import codecs
from pipeline.ops import video_devices as v

frames = np.random.default_rng(0).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
print("auto", v.h264_encoder("auto"), v.decode_hwaccel("auto"))
auto = codecs.encode_video(frames, 25.0, encoder=v.h264_encoder("auto"))
print("same bytes", auto == codecs.encode_video(frames, 25.0))
for call in (lambda: v.h264_encoder("h264_nvenc"), lambda: v.decode_hwaccel("cuda")):
    try:
        call()
    except RuntimeError as exc:
        print("error", exc)
"""


def test_a_process_that_sees_no_gpu_uses_the_cpu_codecs_and_a_named_gpu_codec_says_why_not():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}  # what Ray gives a GPU-less task
    proc = subprocess.run([sys.executable, "-c", NO_GPU_PROCESS], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["auto libx264 None", "same bytes True"]
    assert lines[2].startswith("error clip.encoder 'h264_nvenc': ") and "use 'auto'" in lines[2]
    assert lines[3].startswith("error run.decoder 'cuda': ") and "use 'auto'" in lines[3]


def test_encoder_options_map_the_x264_settings_to_nvenc():
    assert codecs.encoder_options("libx264", 18, "veryfast", 2) == codecs.x264_options(18, "veryfast", 2)
    nvenc = codecs.encoder_options("h264_nvenc", 23, "slow")
    assert nvenc == {"preset": "p6", "rc": "vbr", "cq": "23", "b": "0"}
    presets = get_args(ClipConfig.model_fields["preset"].annotation)
    assert set(presets) == set(codecs.NVENC_PRESETS)  # every preset the config takes has an NVENC one
    with pytest.raises(ValueError, match="'h265'"):
        codecs.encoder_options("h265", 18, "veryfast")
    with pytest.raises(ValueError, match="encoder"):
        load_config(overrides={"clip.encoder": "nvenc"})


def test_codec_gpu_shares_follow_the_cluster_and_the_config():
    def shares(gpus: float, **overrides: object) -> dict[str, float]:
        stages = build_stages(load_config(overrides={"clip.shot_detector": "hsv", "ocr.enabled": False, **overrides}),
                              gpus=gpus)  # fmt: skip
        return {s.name: s.resources.gpus for s in stages if s.name in ("shot_split", "clip_encode", "proxies")}

    assert set(shares(1.0).values()) == {0.0}  # auto, run.codec_gpus 0: tasks stay free of GPU nodes
    assert shares(1.0, **{"run.codec_gpus": 0.05}) == {"shot_split": 0.05, "clip_encode": 0.05, "proxies": 0.05}
    assert set(shares(0.0, **{"run.codec_gpus": 0.05}).values()) == {0.0}  # no GPU in the cluster
    assert shares(1.0, **{"clip.encoder": "h264_nvenc"}) == dict.fromkeys(("shot_split", "clip_encode", "proxies"),
                                                                          NAMED_CODEC_GPUS)  # fmt: skip
    assert shares(1.0, **{"run.decoder": "cuda"}) == {"shot_split": NAMED_CODEC_GPUS, "clip_encode": 0.0,
                                                      "proxies": 0.0}  # fmt: skip
    cpu_only = {"clip.encoder": "libx264", "run.decoder": "cpu", "run.codec_gpus": 0.05}
    assert set(shares(1.0, **cpu_only).values()) == {0.0}
    # TransNetV2: the decoding actors hold the model's GPU share, and the encoder in their process uses it
    groups = group_stages(build_stages(load_config(overrides={"run.codec_gpus": 0.05}), gpus=1.0, cpus=8.0))
    decoding = groups[1]
    assert decoding.stages[0].name == "shot_split" and decoding.stages[0].resources.gpus > 0
    assert "clip_encode" in decoding.name and all(s.resources.gpus == 0 for s in decoding.stages[1:])
    for named in ({"clip.encoder": "h264_nvenc"}, {"run.decoder": "cuda"}):
        with pytest.raises(ValueError, match="needs a GPU and the cluster has none"):
            build_stages(load_config(overrides=named), gpus=0.0)


@pytest.mark.skipif(video_devices.nvdec_error() is None, reason="NVDEC opens here")
def test_a_named_gpu_decoder_that_does_not_open_stops_the_stage_not_each_source():
    stage = ShotSplitStage(decoder="cuda")
    with pytest.raises(RuntimeError, match="run.decoder 'cuda'"):
        list(stage.stream([]))


def test_nvenc_asked_for_on_a_cluster_without_gpus_is_rejected_before_any_source_is_read(tmp_path):
    media_dir = tmp_path / "media"
    vf.write_moving_pattern(media_dir / "pan.mp4", 60, (64, 96), (2.0, 0.0))
    cfg = load_config(overrides={"clip.encoder": "h264_nvenc", "clip.shot_detector": "hsv", "ocr.enabled": False,
                                 "run.cache_dir": str(tmp_path / "cache")})  # fmt: skip
    with local_ray(), pytest.raises(ValueError, match="clip.encoder 'h264_nvenc' needs a GPU"):
        curate(str(media_dir), str(tmp_path / "out"), cfg)
    for table in ("sources.lance", "clips.lance"):
        path = tmp_path / "out" / table
        assert not path.exists() or lance.dataset(str(path)).count_rows() == 0
