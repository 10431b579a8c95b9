"""Captions and quality tags: a tiny random-init VLM captions caption-less inputs through real local Ray
into a real Lance table; bad caption configs are refused before any work; tag thresholds on known rows."""

from __future__ import annotations

import re
from pathlib import Path

import lance
import numpy as np
import pytest
import video_fixtures as vf
from curate_fixtures import local_ray

from pipeline import cli
from pipeline.config import load_config
from pipeline.contract import codecs
from pipeline.report import write_report
from pipeline.stages.quality import QualityTagStage

SIZE = (128, 160)


@pytest.fixture(scope="module")
def ray_address():
    with local_ray() as address:
        yield address


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from model.tiny_pretrained import write_tiny_pretrained, write_tiny_vlm

    root = tmp_path_factory.mktemp("models")
    return {**write_tiny_pretrained(root / "tiny"), "vlm": write_tiny_vlm(root / "tiny-vlm")}


def test_caption_less_input_gets_a_model_caption_and_its_embedding(ray_address, tiny, tmp_path, capsys):
    media = tmp_path / "media"
    media.mkdir()
    vf.write_moving_pattern(media / "told.mp4", 9, SIZE, (3.0, 1.0), seed=1)
    (media / "told.txt").write_text("a grey texture slides to the right\n")
    vf.write_moving_pattern(media / "bare.mp4", 9, SIZE, (3.0, 1.0), seed=2)  # no sidecar: the VLM captions it
    vf.write_image(media / "bare.png", SIZE)
    config = tmp_path / "curate.yaml"
    config.write_text(
        "clip: {min_frames: 9, max_frames: 9}\nmotion: {threshold: 0.0, analysis_short_side: 64, n_pairs: 2}\n"
        "blur: {threshold: 0.0}\n"
        f"caption: {{model: {tiny['vlm']}, name: tiny-vlm, max_new_tokens: 7, cpus: 0.25}}\n"
        f"text: {{model: {tiny['root']}, cpus: 0.25}}\n"
        f"quality: {{min_short_side: 129, min_caption_words: 6}}\nrun: {{cache_dir: {tmp_path / 'cache'}}}\n"
    )
    out = tmp_path / "out"
    assert cli.main(["--input", str(media), "--output", str(out), "--config", str(config)]) == 0
    cols = ["source_uri", "passed", "caption", "caption_source", "caption_model", "text_emb", "text_emb_tokens",
            "text_emb_dim", "quality_tags"]
    rows = {Path(r["source_uri"]).name: r for r in lance.dataset(str(out / "clips.lance")).to_table(columns=cols)
            .to_pylist()}  # fmt: skip
    assert set(rows) == {"told.mp4", "bare.mp4", "bare.png"} and all(r["passed"] for r in rows.values())
    told = rows["told.mp4"]
    assert (told["caption"], told["caption_source"], told["caption_model"]) == (
        "a grey texture slides to the right", "sidecar", None)
    assert told["quality_tags"] == ["low_res"]  # short side 128 < 129; 7 words >= 6
    from model.text_encoder import TextEncoder

    encoder = TextEncoder.from_pretrained(str(tiny["root"]))
    for name in ("bare.mp4", "bare.png"):
        row = rows[name]
        assert row["caption_source"] == "model" and row["caption_model"] == "tiny-vlm"
        assert row["caption"].strip(), f"{name}: the VLM gave an empty caption"
        # the T5 embedding is of the model caption: text_embed ran after the captioning stage
        want = encoder.encode_trimmed([row["caption"]])[0].numpy().astype("float16")
        got, keep = codecs.decode_text_embedding(row["text_emb"], row["text_emb_tokens"], row["text_emb_dim"])
        np.testing.assert_allclose(got[: keep.sum()], want, atol=1e-2)
        words = len(row["caption"].split())
        assert row["quality_tags"] == ["low_res"] + (["short_caption"] if words < 6 else [])
    # --describe on the output: clips per task under the default policy (low_res rules out t2v, t2i, vsr, sisr)
    capsys.readouterr()
    assert cli.main(["--describe", "--output", str(out), "--config", str(config)]) == 0
    text = capsys.readouterr().out
    want = {"t2v": 0, "i2v": 2, "vext": 0, "flf2v": 2, "flc2v": 0, "vinp": 2, "voutp": 2, "vcolor": 2, "vsr": 0,
            "vedit": 0, "t2i": 0, "sisr": 0, "iinp": 1, "ioutp": 1, "icolor": 1, "iedit": 0}  # 2 videos of 9, 1 image
    got = dict(re.findall(r"^  (\w+) +(\d+)$", text, re.M))
    assert {k: int(v) for k, v in got.items()} == want, text
    short = sum("short_caption" in r["quality_tags"] for r in rows.values())
    assert "3 trainable clips" in text
    assert "quality tags: low_res 3" + (f", short_caption {short}" if short else "") in text
    html = write_report(str(out), tmp_path / "report.html").read_text()
    assert "<tr><td>i2v</td><td>2</td></tr>" in html and "<tr><td>t2v</td><td>0</td></tr>" in html
    # the caption from transformers directly, on the same middle frame, is the stored one (greedy, deterministic)
    from pipeline.stages.caption import CaptionStage

    stage = CaptionStage(model_path=str(tiny["vlm"]), max_new_tokens=7, actors=1,
                         prompt=load_config(config).caption.prompt)  # fmt: skip
    stage.setup()
    frame = codecs.decode_video(str(media / "bare.mp4"), [4])[0]  # middle of 9, at the stored size
    assert stage.generate([frame])[0] == rows["bare.mp4"]["caption"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"caption.model": "/nonexistent/vlm"}, "caption.model: .*'/nonexistent/vlm': not a model folder"),
    ({"caption.backend": "vllm"}, "caption: .*backend 'vllm' needs vllm installed"),
])  # fmt: skip
def test_bad_caption_model_or_backend_is_refused_before_any_work(overrides, message, tiny, tmp_path, capsys):
    import importlib.util

    if "caption.model" not in overrides:
        assert importlib.util.find_spec("vllm") is None  # this machine has no vLLM: the refusal must come
        overrides = {**overrides, "caption.model": str(tiny["vlm"])}
    media = tmp_path / "media"
    media.mkdir()
    vf.write_moving_pattern(media / "bare.mp4", 9, SIZE, (3.0, 1.0))
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "out"
    assert cli.main(["--input", str(media), "--output", str(out), *sets]) == 2
    assert re.search(message, capsys.readouterr().err.replace("\n", " "))
    assert not out.exists()  # no table written, no source read: refused before any work


def test_quality_tags_follow_the_thresholds_and_skip_null_signals():
    stage = QualityTagStage(min_short_side=256, watermark=0.5, text_area=0.05, min_caption_words=3,
                            min_aesthetic=4.5)  # fmt: skip
    base = {"is_clip": True, "source_width": 640, "source_height": 360, "caption": "a b c", "watermark": None,
            "text_area": None, "aesthetic": None}  # fmt: skip
    cases = [
        ({}, []),  # the other stages off: null signals set nothing
        ({"source_height": 255}, ["low_res"]), ({"source_height": 256}, []),
        ({"watermark": 0.5}, ["watermarked"]), ({"watermark": 0.49}, []),
        ({"text_area": 0.05}, ["text_heavy"]), ({"text_area": 0.0499}, []),
        ({"caption": "a b"}, ["short_caption"]), ({"caption": ""}, ["short_caption"]), ({"caption": None}, []),
        ({"aesthetic": 4.49}, ["low_aesthetic"]), ({"aesthetic": 4.5}, []),
        ({"source_width": 100, "watermark": 0.9, "text_area": 0.5, "caption": "x", "aesthetic": 1.0},
         ["low_res", "watermarked", "text_heavy", "short_caption", "low_aesthetic"]),  # QUALITY_TAGS order
    ]
    for change, want in cases:
        (row,) = stage.process([{**base, **change}])
        assert row["quality_tags"] == want, change
    assert "quality_tags" not in stage.process([{**base, "is_clip": False}])[0]  # a failed source's placeholder


def test_vllm_stage_is_built_from_the_caption_config(tiny):
    """Without vLLM here, the vLLM path is checked up to its `ray.data.llm` engine config (no engine starts)."""
    from pipeline.stages import build_stages
    from pipeline.stages.caption import VllmCaptionStage, vllm_config

    cfg = load_config(overrides={"caption.model": str(tiny["vlm"]), "caption.batch_size": 3, "caption.actors": 2,
                                 "text.model": "t5"})  # fmt: skip
    cfg.caption.__dict__["backend"] = "vllm"  # as on a cluster with vLLM (the validator refuses it here)
    names = [s.name for s in build_stages(cfg)]
    assert names[-4:] == ["caption", "text_embed", "quality_tags", "write"]  # captions before T5
    (stage,) = [s for s in build_stages(cfg) if s.name == "caption"]
    assert isinstance(stage, VllmCaptionStage) and stage.prompt == cfg.caption.prompt
    config = vllm_config(stage)
    assert (config.model_source, config.concurrency, config.batch_size, config.prepare_multimodal_stage) == (
        str(tiny["vlm"]), 2, 3, True)
