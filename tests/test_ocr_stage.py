"""The OCR stage with rapidocr's shipped PP-OCR detector on real encoded clips: text area and watermark."""

from __future__ import annotations

import datetime
from pathlib import Path

import lance
import numpy as np
import pytest

from config_files import ConfigError
from mfm import synthetic
from pipeline.config import load_config
from pipeline.contract import tables
from pipeline.inputs import source_row
from pipeline.ops import ocr
from pipeline.stages import build_stages
from pipeline.stages.base import rows_to_table
from pipeline.stages.clip_encode import ClipEncodeStage
from pipeline.stages.ocr import OcrStage
from pipeline.stages.probe import ProbeStage
from pipeline.stages.shot_split import ShotSplitStage

pytest.importorskip("rapidocr")
H, W, T = 240, 320, 17


@pytest.fixture(scope="module")
def stage() -> OcrStage:
    stage = OcrStage(actors=1)
    stage.setup()
    return stage


def _clip_rows(tmp_path, videos: dict[str, np.ndarray]) -> dict[str, dict]:
    """Frames -> H.264 files -> probe, shot split, clip encode (the stored clip the stage reads)."""
    cache = {"cache_dir": str(tmp_path / "cache")}
    rows = [source_row(str(synthetic.write_video(tmp_path / f"{name}.mp4", f))) for name, f in videos.items()]
    rows = ShotSplitStage(min_frames=9, max_frames=T, **cache).process(ProbeStage(**cache).process(rows))
    rows = ClipEncodeStage(**cache).process(rows)
    return {r["source_uri"].rsplit("/", 1)[-1].removesuffix(".mp4"): r for r in rows if r["is_clip"]}


def _background(seed: int) -> np.ndarray:
    return synthetic.moving_frames(T, H, W, (2.0, 0.0), seed=seed, sigma=1.0)  # sharp moving texture


def test_rendered_text_covers_far_more_area_than_texture(tmp_path, stage):
    lines = [("SUMMER SALE 2024", 60), ("BEST PRICES HERE", 110), ("OPEN EVERY DAY", 160)]
    text = np.stack([_draw_lines(f, lines) for f in _background(1)])
    rows = stage.process(list(_clip_rows(tmp_path, {"text": text, "plain": _background(2)}).values()))
    by = {r["source_uri"].rsplit("/", 1)[-1]: r for r in rows}
    with_text, plain = by["text.mp4"], by["plain.mp4"]
    print(f"text_area with text {with_text['text_area']:.4f}, without {plain['text_area']:.4f}")
    assert with_text["text_area"] > 0.08 and plain["text_area"] < 0.01
    assert with_text["text_area"] > 20 * max(plain["text_area"], 1e-3)
    boxes = with_text["text_boxes"]
    assert len(boxes) >= 3 and all(0 <= v <= 1 for b in boxes for v in b)
    tops = sorted(b[1] * H for b in boxes)
    assert all(any(abs(t - y) < 12 for t in tops) for _, y in lines), tops  # one box per rendered line


def _draw_lines(frame: np.ndarray, lines: list[tuple[str, int]]) -> np.ndarray:
    for text, y in lines:
        frame = synthetic.draw_text(frame, text, (30, y), size=28)
    return frame


def test_static_corner_text_scores_high_watermark_and_moving_text_does_not(tmp_path, stage):
    static = np.stack([synthetic.draw_text(f, "NEWS TV", (W - 110, 8), size=20) for f in _background(3)])
    moving = np.stack([synthetic.draw_text(f, "BREAKING", (10 + 12 * i, H - 30), size=20)
                       for i, f in enumerate(_background(4))])  # fmt: skip
    rows = _clip_rows(tmp_path, {"static": static, "moving": moving, "plain": _background(5)})
    scored = {name: stage.process([row])[0] for name, row in rows.items()}
    marks = {name: row["watermark"] for name, row in scored.items()}
    print("watermark", {k: round(v, 4) for k, v in marks.items()})
    assert marks["static"] > 0.7 and marks["moving"] < 0.2 and marks["plain"] == 0.0
    assert scored["moving"]["text_area"] > 0.005  # the moving text was seen, it just does not stay put

    # the columns land in a real v3 Lance clips table and read back
    now = datetime.datetime.now(datetime.UTC)
    clips = [{**row, "config_hash": "test", "created_at": now} for row in scored.values()]
    lance.write_dataset(rows_to_table(clips, tables.CLIPS_SCHEMA), tmp_path / "clips.lance", schema=tables.CLIPS_SCHEMA)
    back = lance.dataset(tmp_path / "clips.lance").to_table(columns=["watermark", "text_area", "text_boxes"])
    assert back["watermark"].to_pylist() == pytest.approx(list(marks.values()), abs=1e-6)
    assert len(back["text_boxes"].to_pylist()[0]) >= 1 and back["text_boxes"].to_pylist()[2] == []


def test_watermark_math_on_known_boxes():
    corner = [0.85, 0.02, 0.98, 0.1]
    assert ocr.watermark_score([[corner]] * 4) == pytest.approx(1.0)
    shifted = [[[0.02 + 0.2 * i, 0.9, 0.15 + 0.2 * i, 0.98]] for i in range(4)]
    assert ocr.watermark_score(shifted) == 0.0
    assert ocr.watermark_score([[[0.4, 0.4, 0.6, 0.6]]] * 4) == 0.0  # centre text is not a watermark
    assert ocr.watermark_score([[corner]]) is None  # one frame: persistence unknown
    quads = np.array([[[0, 0], [50, 0], [50, 20], [0, 20]], [[25, 0], [75, 0], [75, 20], [25, 20]]], np.float32)
    assert ocr.text_area(quads, 100, 100) == pytest.approx(76 * 21 / 1e4)  # union, filled inclusively


def test_ocr_stage_is_built_after_clip_encode_and_bad_knobs_are_rejected():
    names = [s.name for s in build_stages(load_config())]
    assert names[names.index("clip_encode") + 1] == "ocr"
    ocr_stage = next(s for s in build_stages(load_config()) if s.name == "ocr")
    assert ocr_stage.actors == 1 and ocr_stage.resources.cpus < 1 and ocr_stage.resources.gpus == 0
    assert "ocr" not in [s.name for s in build_stages(load_config(overrides={"ocr.enabled": False}))]
    for key, value in (("ocr.border", 0.7), ("ocr.n_frames", 0), ("ocr.min_iou", 0), ("ocr.detector", "x")):
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            load_config(overrides={key: value})


def test_boxes_taller_than_a_text_line_are_dropped():
    line = np.array([[10, 10], [90, 10], [90, 30], [10, 30]], np.float32)  # 20 px of 100: a line
    frame_box = np.array([[0, 0], [100, 0], [100, 98], [0, 98]], np.float32)  # the detector's answer to texture
    kept = ocr.text_lines(np.stack([line, frame_box]), 100, 0.35)
    assert kept.shape == (1, 4, 2) and np.array_equal(kept[0], line)
    assert ocr.text_lines(np.zeros((0, 4, 2), np.float32), 100, 0.35).shape == (0, 4, 2)


def _classifier(path: Path, bias: tuple[float, float]) -> Path:
    """A tiny ONNX watermark classifier whose logits are `bias` whatever the frame (weights zero): a known answer."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2))  # fmt: skip
    with torch.no_grad():
        net[3].weight.zero_()
        net[3].bias.copy_(torch.tensor(bias))
    torch.onnx.export(net, torch.rand(1, 3, 64, 64), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n"}}, dynamo=False)  # fmt: skip
    return path


def test_a_learned_watermark_classifier_raises_the_score_when_given(tmp_path):
    rows = _clip_rows(tmp_path, {"plain": _background(5)})
    sure = OcrStage(actors=1, watermark_model=str(_classifier(tmp_path / "wm.onnx", (3.0, -3.0))))
    sure.setup()
    assert sure.classifier.size == 64
    marked = sure.process([dict(rows["plain"])])[0]["watermark"]
    assert marked == pytest.approx(1 / (1 + np.exp(-6.0)), abs=1e-5)  # softmax of (3, -3): the plain clip is flagged
    unsure = OcrStage(actors=1, watermark_model=str(_classifier(tmp_path / "no.onnx", (-3.0, 3.0))))
    unsure.setup()
    assert unsure.process([dict(rows["plain"])])[0]["watermark"] == pytest.approx(1 / (1 + np.exp(6.0)), abs=1e-5)
    with pytest.raises(ConfigError, match="watermark_model"):
        load_config(overrides={"ocr.watermark_model": str(tmp_path / "missing.onnx")})
