"""Listing inputs, checking configs and the `mfm curate` command line before any work starts (no Ray)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config_files import ConfigError
from pipeline import cli
from pipeline.config import load_config
from pipeline.contract import tables
from pipeline.inputs import InputError, list_sources


def test_folder_lists_media_with_sidecar_captions(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "sub/b.MOV", "c.png", "notes.md", "a.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "a.txt").write_text("a caption")
    rows = list_sources(str(tmp_path), load_config().inputs)
    by_name = {r["source_uri"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_name) == {"a.mp4", "b.MOV", "c.png"}
    assert by_name["a.mp4"]["caption_uri"] == str(tmp_path / "a.txt") and by_name["c.png"]["caption_uri"] is None
    assert by_name["c.png"]["media_type"] == "image" and by_name["a.mp4"]["media_type"] == "video"
    assert by_name["a.mp4"]["source_id"] == tables.source_id(str(tmp_path / "a.mp4"))


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_manifests_with_edit_pairs(tmp_path, suffix):
    records = [{"uri": "v1.mp4", "caption": "a dog", "edit_target": None, "instruction": None},
               {"uri": "s3://bucket/v2.mp4", "caption": "a cat", "edit_target": "v2_red.mp4",
                "instruction": "make it red"},
               {"uri": "v1.mp4", "caption": "dup", "edit_target": None, "instruction": None}]  # fmt: skip
    path = tmp_path / f"manifest.{suffix}"
    table = pa.Table.from_pylist(records)
    if suffix == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    elif suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        pq.write_table(table, path)
    rows = list_sources(str(path), load_config().inputs)
    assert [(r["source_uri"], r["role"]) for r in rows] == [
        (str(tmp_path / "v1.mp4"), "clip"), ("s3://bucket/v2.mp4", "edit_source"),
        (str(tmp_path / "v2_red.mp4"), "edit_target")]  # fmt: skip
    assert rows[0]["caption"] == "a dog"  # the duplicate row is dropped
    # a manifest caption is "manifest"; the target has none yet (None: the probe decides, sidecar or "")
    assert [r["caption_source"] for r in rows] == ["manifest", "manifest", None]
    assert rows[1]["edit_target_uri"] == str(tmp_path / "v2_red.mp4") and rows[1]["edit_instruction"] == "make it red"


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(InputError, match="no_such_folder"):
        list_sources(str(tmp_path / "no_such_folder"), load_config().inputs)
    (tmp_path / "m.csv").write_text("file,caption\na.mp4,x\n")
    with pytest.raises(InputError, match="column named one of"):
        list_sources(str(tmp_path / "m.csv"), load_config().inputs)


def test_config_errors_name_the_path_and_the_allowed_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("motion:\n  method: rafty\n  treshold: 3\nstorage:\n  options: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = str(err.value)
    assert "motion.method" in text and "'auto', 'raft' or 'farneback'" in text
    assert "motion.treshold: unknown key" in text and "threshold" in text
    assert "storage.options" in text and "5" not in text.split("storage.options")[1]  # values there stay hidden
    with pytest.raises(ConfigError, match="min_frames"):
        load_config(overrides={"clip.min_frames": 120})
    with pytest.raises(ConfigError, match="clip.shot_detector.*'transnetv2' or 'hsv'"):
        load_config(overrides={"clip.shot_detector": "pyscene"})
    with pytest.raises(ConfigError, match="clip.transnet_threshold"):
        load_config(overrides={"clip.transnet_threshold": 1.5})


def test_cli_config_error_exits_2_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("blur: {threshold: -1}\n")
    code = cli.main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--config", str(bad)])
    assert code == 2 and "blur.threshold" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert cli.main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out")]) == 2
    assert "missing" in capsys.readouterr().err


def test_describe_lists_stages_with_resources_and_columns(capsys):
    assert cli.main(["--describe", "--score-only", "--set", "depth.model=/models/depth"]) == 0
    out = capsys.readouterr().out
    for name in ("probe", "shot_split", "blur", "motion_frames", "motion", "filter", "clip_encode", "depth",
                 "write"):  # fmt: skip
        assert f"\n{name} " in out
    assert "cpus=0.25 gpus=auto" in out and "writes: depth_frames" in out and "score_only: True" in out
