"""The aesthetic stage and `mfm curate dedup` end to end: real local Ray, real mp4 files, real Lance tables.

Known answer: a red texture, its copy resized 160x128 -> 120x96 and re-encoded at crf 35, and two distinct clips
(other texture seeds and tints). A tiny random-init CLIP (seed 0) sees colour layout more than fine texture, so the
distinct clips differ in tint as well: measured cosines of clip_emb are copy ~0.9998, distinct <= ~0.78, and the
threshold 0.95 sits with margin between them. Both sides are asserted.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import lance
import numpy as np
import pytest
from curate_fixtures import local_ray, write_tiny_aesthetic

from mfm import synthetic
from pipeline import cli
from pipeline.contract import tables
from pipeline.dedup import dedup

pytestmark = pytest.mark.slow
H, W = 128, 160
THRESHOLD = 0.95


def _clip(seed: int, tint: tuple[float, float, float]) -> np.ndarray:
    frames = synthetic.moving_frames(17, H, W, (3.0, 1.0), seed=seed, sigma=2.0)
    return (frames * np.float32(tint)).astype(np.uint8)


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:


    root = tmp_path_factory.mktemp("dedup")
    media = root / "media"
    base = _clip(1, (1.0, 0.3, 0.3))
    synthetic.write_video(media / "a_base.mp4", base)
    small = np.stack([cv2.resize(f, (120, 96), interpolation=cv2.INTER_AREA) for f in base])
    synthetic.write_video(media / "b_copy.mp4", small, crf=35)
    synthetic.write_video(media / "c_green.mp4", _clip(3, (0.3, 1.0, 0.3)))
    synthetic.write_video(media / "d_blue.mp4", _clip(4, (0.3, 0.3, 1.0)))
    clip, head = write_tiny_aesthetic(root)
    (root / "curate.yaml").write_text(
        "clip: {min_frames: 9, max_frames: 17}\n"
        "motion: {analysis_short_side: 64, n_pairs: 2}\n"
        "proxies: {phases: []}\n"
        f"aesthetic: {{model: {clip}, head: {head}, name: tiny-clip, n_frames: 4}}\n"
        f"run: {{score_only: true, cache_dir: {root / 'cache'}}}\n"
    )
    out = root / "out"
    with local_ray():
        assert cli.main(["--input", str(media), "--output", str(out), "--config", str(root / "curate.yaml")]) == 0
    return out


def _rows(out: Path) -> dict[str, dict]:
    ds = lance.dataset(out / "clips.lance")
    rows = ds.to_table(columns=["clip_id", "source_uri", "aesthetic", "clip_emb", "clip_model", "duplicate_of"])
    return {Path(r["source_uri"]).stem: r for r in rows.to_pylist()}


def test_aesthetic_stage_stores_scores_and_unit_embeddings(curated):
    rows = _rows(curated)
    assert sorted(rows) == ["a_base", "b_copy", "c_green", "d_blue"]
    for r in rows.values():
        assert r["clip_model"] == "tiny-clip" and np.isfinite(r["aesthetic"])
        assert len(r["clip_emb"]) == 24 and abs(np.linalg.norm(r["clip_emb"]) - 1) < 1e-4


@pytest.fixture(scope="module")
def deduped(curated) -> Path:
    assert cli.main(["dedup", str(curated), "--threshold", str(THRESHOLD)]) == 0
    return curated


def test_resized_reencoded_copy_is_a_duplicate_and_distinct_clips_are_not(deduped):
    rows = _rows(deduped)
    emb = {k: np.asarray(r["clip_emb"]) for k, r in rows.items()}
    cos = {(a, b): float(emb[a] @ emb[b]) for a, b in itertools.combinations(sorted(emb), 2)}
    assert cos[("a_base", "b_copy")] > 0.99, cos  # measured 0.9998
    assert max(v for k, v in cos.items() if k != ("a_base", "b_copy")) < 0.9, cos  # measured <= 0.78
    pair = {rows["a_base"]["duplicate_of"], rows["b_copy"]["duplicate_of"]}
    ids = {rows["a_base"]["clip_id"], rows["b_copy"]["clip_id"]}
    assert None in pair and (pair - {None}) < ids  # exactly one of the two points at the other
    assert rows["c_green"]["duplicate_of"] is None and rows["d_blue"]["duplicate_of"] is None
    assert lance.dataset(deduped / "clips.lance").count_rows() == 4  # marked, never deleted


def test_dedup_rerun_is_idempotent_and_the_index_path_agrees(deduped):
    ds = lance.dataset(deduped / "clips.lance")
    before = {k: r["duplicate_of"] for k, r in _rows(deduped).items()}
    summary = dedup(str(deduped), THRESHOLD)
    assert summary.changed == 0 and summary.duplicates == 1 and not summary.indexed
    assert lance.dataset(deduped / "clips.lance").version == ds.version  # nothing to commit
    indexed = dedup(str(deduped), THRESHOLD, index_min_rows=1)  # IVF_FLAT index on the side dataset
    assert indexed.indexed and indexed.changed == 0
    assert {k: r["duplicate_of"] for k, r in _rows(deduped).items()} == before


def test_trainer_skips_marked_clips_and_report_counts_them(deduped, tmp_path):
    from pipeline.report import write_report
    from trainer.data import trainable_offsets

    ds = lance.dataset(deduped / "clips.lance")
    tables.check_schema(ds.schema, tables.CLIPS_TABLE)
    kept = ds.take(trainable_offsets(ds, None), columns=["duplicate_of"]).to_pylist()
    assert len(kept) == 3 and all(r["duplicate_of"] is None for r in kept)
    page = write_report(str(deduped), tmp_path / "r.html").read_text()
    assert "<b>1</b> near-duplicates" in page and "aesthetic score (LAION) (n=4)" in page


def test_bad_threshold_is_rejected_before_work(deduped):
    version = lance.dataset(deduped / "clips.lance").version
    assert cli.main(["dedup", str(deduped), "--threshold", "1.5"]) == 2
    assert lance.dataset(deduped / "clips.lance").version == version


def test_aesthetic_config_needs_a_head_and_is_off_by_default(tmp_path):
    from config_files import ConfigError
    from pipeline.config import load_config
    from pipeline.stages import build_stages

    assert "aesthetic" not in [s.name for s in build_stages(load_config())]
    cfg = load_config(overrides={"aesthetic.model": "/m/clip", "aesthetic.head": "/m/head.pth"})
    stage = next(s for s in build_stages(cfg) if s.name == "aesthetic")
    assert stage.actors == 1 and stage.resources.cpus == 0.25 and stage.n_frames == 4
    with pytest.raises(ConfigError, match="aesthetic.head"):
        load_config(overrides={"aesthetic.model": "/m/clip"})
    with pytest.raises(ConfigError, match="threshold"):
        load_config(overrides={"dedup.threshold": 0})
