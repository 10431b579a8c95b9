"""Curation on footage-like inputs: three 25 fps sources of 2-second shots (hard cuts between panning shots, one
with a station logo in a corner, one with no caption), curated with every signal stage on (TransNetV2 shots,
PP-OCR text and watermark, CLIP aesthetic and embedding, VLM captions, quality tags) through real local Ray
into Lance. Each source yields kept 49-frame clips with every signal computed."""

from __future__ import annotations

from pathlib import Path

import lance
import numpy as np
import pytest
from curate_fixtures import local_ray, write_tiny_aesthetic

from mfm import synthetic
from pipeline import cli

pytestmark = pytest.mark.slow
SHOTS = [50, 50, 50]  # 2 s each at 25 fps; texture seeds whose cuts TransNetV2 scores >= 0.94 (checked)
H, W = 288, 512
SIGNALS = ("text_area", "watermark", "aesthetic", "clip_emb", "caption_source", "quality_tags")


def _logo(frames: np.ndarray) -> np.ndarray:
    """A "TV 24" plate in the top-right corner of every frame, inside the top border band: an overlay that stays
    put."""
    return np.stack([synthetic.draw_text(f, "TV 24", (W - 100, 6), size=24) for f in frames])


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> tuple[Path, dict[str, list[dict]]]:
    """-> (the curated output, its clip rows by source name)."""
    from model.tiny_pretrained import write_tiny_vlm

    root = tmp_path_factory.mktemp("signals")
    media = root / "media"
    street = synthetic.transition_frames(SHOTS, height=H, width=W, seed=5)
    synthetic.write_video(media / "street.mp4", street, fps=25.0)
    (media / "street.txt").write_text("a busy street at dusk, cars pass and people cross, the camera pans right\n")
    synthetic.write_video(media / "news.mp4", _logo(synthetic.transition_frames(SHOTS, height=H, width=W, seed=9)),
                          fps=25.0)
    (media / "news.txt").write_text("a news report from a harbour with boats and cranes, filmed from a pier\n")
    synthetic.write_video(media / "bare.mp4", synthetic.transition_frames(SHOTS, height=H, width=W, seed=10), fps=25.0)
    clip, head = write_tiny_aesthetic(root)
    vlm = write_tiny_vlm(root / "vlm")
    (root / "curate.yaml").write_text(
        "clip: {min_frames: 49, max_frames: 97}\n"
        "blur: {threshold: 0.0}\nmotion: {threshold: 0.0, analysis_short_side: 64, n_pairs: 2}\n"
        f"aesthetic: {{model: {clip}, head: {head}, name: tiny-clip, cpus: 0.25}}\n"
        f"caption: {{model: {vlm}, name: tiny-vlm, max_new_tokens: 6, cpus: 0.25}}\n"
        "quality: {min_short_side: 320}\n"
        f"run: {{cache_dir: {root / 'cache'}}}\n"
    )
    out = root / "out"
    with local_ray():
        assert cli.main(["--input", str(media), "--output", str(out), "--config", str(root / "curate.yaml")]) == 0
    cols = ["source_uri", "passed", "n_frames", "frame_start", "caption", *SIGNALS]
    rows: dict[str, list[dict]] = {}
    for r in lance.dataset(str(out / "clips.lance")).to_table(columns=cols).to_pylist():
        rows.setdefault(Path(r["source_uri"]).stem, []).append(r)
    return out, rows


def test_every_source_of_2s_shots_yields_kept_clips_with_every_signal(curated):
    _, by_source = curated
    assert sorted(by_source) == ["bare", "news", "street"]
    for name, rows in by_source.items():
        kept = [r for r in rows if r["passed"]]
        assert len(kept) == len(SHOTS), (name, [(r["frame_start"], r["n_frames"], r["passed"]) for r in rows])
        # one clip per 2-second shot: 49 frames (the frame TransNetV2 marks at a cut goes into no clip), 50 for the last
        assert sorted(r["n_frames"] for r in kept) == [49, 49, 50], name
        for r in kept:
            missing = [s for s in SIGNALS if r[s] is None]
            assert not missing, (name, r["frame_start"], missing)
            assert len(r["clip_emb"]) == 24 and abs(np.linalg.norm(r["clip_emb"]) - 1) < 1e-4
            assert "low_res" in r["quality_tags"]  # 288 px short side < quality.min_short_side 320


def test_the_signals_tell_the_sources_apart(curated):
    kept = {name: [r for r in rows if r["passed"]] for name, rows in curated[1].items()}
    assert all(r["caption_source"] == "sidecar" for r in kept["street"] + kept["news"])
    assert all(r["caption_source"] == "model" and r["caption"].strip() for r in kept["bare"])
    news_watermark = min(r["watermark"] for r in kept["news"])
    plain_watermark = max(r["watermark"] for r in kept["street"] + kept["bare"])
    print(f"watermark: news >= {news_watermark:.3f}, others <= {plain_watermark:.3f}")
    assert news_watermark > 0.5 > plain_watermark
    assert all("watermarked" in r["quality_tags"] for r in kept["news"])
    assert min(r["text_area"] for r in kept["news"]) > max(r["text_area"] for r in kept["street"])


def test_the_report_shows_the_new_signals_and_the_tasks_clips_qualify_for(curated, tmp_path):
    from pipeline.report import write_report

    page = write_report(str(curated[0]), tmp_path / "report.html", sheet_png=tmp_path / "sheet.png").read_text()
    for title in ("text area (share of the frame)", "watermark score", "aesthetic score (LAION)"):
        assert f"{title} (n=9)" in page, title
    assert "(model)" in page and "(sidecar)" in page  # each caption with where it came from
    assert "watermarked" in page and "low_res" in page  # the tag counts
    assert (tmp_path / "sheet.png").stat().st_size > 0
