"""Shared by the trainer tests: a tiny `clips` table written by the real curation (`mfm curate` on a local Ray,
in a subprocess), one broken row appended to it, and the tiny frozen models both load.

tests/conftest.py registers the fixture for every module; the session
scope makes one curation per test session (about 20 s of Ray start-up).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import lance
import pyarrow as pa
import pytest
import video_fixtures as vf

from model.tiny_pretrained import write_tiny_pretrained

REPO = Path(__file__).resolve().parents[1]
BROKEN_CLIP_ID = "broken-clip"


@dataclass(frozen=True)
class Curated:
    table: str  # clips.lance with the broken row appended (its latest version)
    tiny: Path  # tiny VAE / T5 / depth folders (a pipeline root)
    good_rows: int  # passed rows that decode
    version_before_broken: int


def env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def curated(tmp_path_factory) -> Curated:
    root = tmp_path_factory.mktemp("trainer_table")
    media = root / "media"
    media.mkdir()
    rows = []
    for i in range(6):  # 21 frames: one 17-frame clip passes, the 4-frame remainder is a too_short reject
        vf.write_moving_pattern(media / f"v{i}.mp4", 21, (48, 64), (2.0 + 0.5 * i, 1.0), seed=i)
        rows.append({"uri": str(media / f"v{i}.mp4"), "caption": f"a texture drifting right, take {i}"})
    vf.write_image(media / "still.png", (48, 64))
    rows.append({"uri": str(media / "still.png"), "caption": "a still texture"})
    (media / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tiny = write_tiny_pretrained(root / "tiny")["root"]
    (root / "curate.yaml").write_text(
        "clip: {shot_detector: hsv, min_frames: 9, max_frames: 17}\n"
        "blur: {threshold: 0}\n"
        "motion: {threshold: 0.5, analysis_short_side: 48, n_pairs: 2}\n"
        f"depth: {{model: {tiny / 'depth'}}}\n"
        "proxies: {phases: [32x32], aspect_ratios: [1.0]}\n"  # the tiny preset's one bucket: 48x64 -> 32x44
        f"text: {{model: {tiny}}}\n"
        f"run: {{cache_dir: {root / 'cache'}, num_cpus: 2}}\n"
    )
    out = root / "out"
    cmd = [sys.executable, "-m", "mfm", "curate", "--input", str(media / "manifest.jsonl"), "--output", str(out),
           "--config", str(root / "curate.yaml")]  # fmt: skip
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = str(out / "clips.lance")
    ds = lance.dataset(table)
    good = ds.count_rows(filter="passed")
    assert good == 7, ds.to_table(columns=["source_uri", "passed", "reject_reason"]).to_pylist()
    version = ds.version
    append_broken_row(table)
    return Curated(table, tiny, good, version)


def append_broken_row(table: str) -> None:
    """A passed row whose stored video and proxies are not decodable (what corrupt media looks like to the trainer)."""
    ds = lance.dataset(table)
    cols = [c for c in ds.schema.names if c != "video"]
    row = ds.to_table(columns=cols, filter="passed AND media_type = 'video'", limit=1).to_pylist()[0]
    garbage = b"\x00\x00\x00\x18ftypmp42 truncated garbage"
    row |= {"clip_id": BROKEN_CLIP_ID, "video": garbage, "proxies": [p | {"video": garbage} for p in row["proxies"]]}
    lance.write_dataset(pa.Table.from_pylist([row], schema=ds.schema), table, mode="append")
