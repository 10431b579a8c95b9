"""MfM-Benchmark end to end on a tiny scale: build one sample per task from a `clips` table the test makes,
run a tiny random checkpoint (resumably), evaluate: every task has a row and the report files exist.

The selection tests use a table written with the curation schema's encoders (known blur / motion scores);
the run-and-eval test builds from the output of a real `mfm curate` run on synthetic videos."""

from __future__ import annotations

import csv
import json
import math

import lance
import pytest
import torch
from bench_fixtures import clip_row, moving_clips, tiny_pipeline, write_clips_table

from benchmark import vbench
from benchmark.build import Selection, build_benchmark
from benchmark.cli import main as benchmark_main
from benchmark.metrics import write_random_feature_weights
from benchmark.table import params_from_json, read_sample_media, read_samples
from benchmark.vbench.random_weights import write_random_vbench_weights
from mfm.synthetic import moving_frames, write_video
from model.conditions import benchmark_condition
from model.tasks import TASKS, get_task

FRAMES, SIZE = 33, (32, 32)  # 33: the fewest frames FLC2V's 8 + 8 given frames allow


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("clips")
    rows = moving_clips(folder, 6, frames=FRAMES)
    rows += [
        clip_row(str(folder / "blurry.mp4"), moving_frames(FRAMES, 40, 56), "blurry", blur=50.0, motion=8.0),
        clip_row(str(folder / "still.mp4"), moving_frames(FRAMES, 40, 56), "still", blur=500.0, motion=0.5),
        clip_row(str(folder / "short.mp4"), moving_frames(21, 40, 56), "short", blur=500.0, motion=8.0),
        clip_row(str(folder / "rejected.mp4"), moving_frames(FRAMES, 40, 56), "x", 500.0, 8.0, passed=False),
    ]
    return write_clips_table(folder / "clips.lance", rows)


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> str:
    """`mfm curate` (local Ray, Lance) over three sharp moving videos: the real `clips` table."""
    import ray

    from pipeline.cli import main as curate

    folder = tmp_path_factory.mktemp("curate")
    for i in range(3):
        write_video(folder / "raw" / f"v{i}.mp4", moving_frames(FRAMES, 64, 96, speed=(6.0 + i, 1.0), seed=i,
                                                                sigma=1.0))
        (folder / "raw" / f"v{i}.txt").write_text(f"a mosaic slides to the right, take {i}")
    rc = curate(["--input", str(folder / "raw"), "--output", str(folder / "out"), "--set", f"clip.min_frames={FRAMES}",
                 "--set", f"clip.max_frames={FRAMES}"])
    ray.shutdown()
    assert rc == 0
    return str(folder / "out" / "clips.lance")


@pytest.fixture(scope="module")
def bench(clips, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("bench") / "bench.lance")
    build_benchmark(clips, out, per_task=1, seed=0, selection=Selection(FRAMES, 200.0, 5.0), size=SIZE,
                    log=lambda _: None)
    return out


def test_build_selects_by_appendix_a_and_conditions_every_task(bench, clips):
    ds = lance.dataset(bench)
    samples = read_samples(ds)
    assert [s.task for s in samples] == list(TASKS)  # 16 tasks x 1
    eligible = {r["clip_id"] for r in lance.dataset(clips).to_table().to_pylist() if r["caption"].endswith(
        tuple(f"clip {i}" for i in range(6)))}
    assert {s.clip_id for s in samples} <= eligible  # the blurry, still, short and rejected clips never appear
    for sample in samples:
        task = get_task(sample.task)
        gt = read_sample_media(ds, sample, "gt")
        assert gt.shape == (3, FRAMES if task.is_video else 1, *SIZE)
        cond = benchmark_condition(task, sample.clip(gt), sample.seed, extra=task.generate_extra)
        assert cond.params == params_from_json(sample.params) and cond.prompt == sample.prompt
        mask = read_sample_media(ds, sample, "mask")[0] > 0  # stored mask (white = given)
        assert torch.equal(mask, cond.mask[0] > 0.5), sample.sample_id
    edits = [s for s in samples if get_task(s.task).is_edit]
    assert all(s.prompt.startswith(f"change the {s.media_type} to ") for s in edits)


def test_build_is_reproducible_and_refuses_to_overwrite(bench, clips, tmp_path):
    again = str(tmp_path / "again.lance")
    build_benchmark(clips, again, per_task=1, seed=0, selection=Selection(FRAMES, 200.0, 5.0), size=SIZE,
                    log=lambda _: None)
    columns = ["sample_id", "seed", "clip_id", "prompt", "params", "gt"]
    assert lance.dataset(again).to_table(columns=columns) == lance.dataset(bench).to_table(columns=columns)
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_benchmark(clips, again, per_task=1, selection=Selection(FRAMES), size=SIZE, log=lambda _: None)


def test_build_with_no_eligible_clip_names_the_filter(clips, tmp_path):
    with pytest.raises(ValueError, match="no clip .* passes the benchmark filter"):
        build_benchmark(clips, str(tmp_path / "b.lance"), per_task=1, selection=Selection(FRAMES, 1e6, 5.0),
                        size=SIZE, log=lambda _: None)


def test_run_resume_and_eval_give_a_row_per_task_and_the_report(curated, tmp_path, capsys):
    bench = str(tmp_path / "bench.lance")
    assert benchmark_main(["build", "--clips", curated, "--out", bench, "--per-task", "1", "--frames", str(FRAMES),
                           "--height", str(SIZE[0]), "--width", str(SIZE[1])]) == 0
    assert "3 eligible" in capsys.readouterr().out  # the paper's thresholds: blur >= 200, motion >= 5
    pipe = tiny_pipeline(tmp_path / "pipe")
    run = ["run", "--checkpoint", str(pipe), "--bench", bench, "--out", str(tmp_path / "run"), "--steps", "1"]
    assert benchmark_main(run) == 0
    outputs = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*-000.*"))
    assert outputs == sorted(f"{t.id}/{t.id}-000.{'mp4' if t.is_video else 'png'}" for t in TASKS.values())
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*-000.*")}

    assert benchmark_main(run) == 0  # resumed: nothing left to do, nothing rewritten
    assert "0 to generate" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*-000.*")}
    assert benchmark_main([*run[:-1], "2"]) == 2  # other settings into the same folder: refused
    assert "holds outputs of another run (different sampling)" in capsys.readouterr().err

    weights = write_random_feature_weights(tmp_path / "features")
    dims = [n for n in vbench.DIMENSIONS if n != "dynamic_degree"]  # RAFT on CPU is slow: test_vbench covers it
    dim_weights = write_random_vbench_weights(tmp_path / "vbench")
    keys = [f"{k}={dim_weights[k]}" for n in dims for k in vbench.DIMENSIONS[n].weights]
    report = tmp_path / "report"
    assert benchmark_main(["eval", "--bench", bench, "--outputs", str(tmp_path / "run"), "--out", str(report),
                           "--inception-weights", str(weights["inception"]), "--lpips-weights",
                           str(weights["lpips"]), "--fid-frames", "2", "--metrics", *dims,
                           "--metric-weights", *keys]) == 0
    rows = list(csv.DictReader((report / "results.csv").read_text().splitlines()))
    ours = [r for r in rows if r["method"] == "pipe"]
    assert [r["task"] for r in ours] == list(TASKS)
    for r in ours:
        assert r["n"] == "1/1"
        assert 0 < float(r["psnr"]) < 100 and -1 <= float(r["ssim"]) <= 1 and float(r["lpips"]) >= 0
    assert all(float(r["fid"]) >= 0 for r in ours if get_task(r["task"]).is_video)  # FID over a video's frames
    results = json.loads((report / "results.json").read_text())
    assert results["model_config"]["num_layers"] == 2 and results["bench_version"] == 1
    html = (report / "report.html").read_text()
    for task in TASKS.values():
        strip = report / "strips" / f"{task.id}-000.png"
        assert strip.exists() and f'src="strips/{task.id}-000.png"' in html
    assert "| VINP | pipe |" in (report / "results.md").read_text()
    # VBench columns for the paper's tasks, the ground truth's beside them, and "—" elsewhere
    for r in rows:
        paper = r["task"] in vbench.PAPER_TASKS
        for name in dims:
            assert (0 <= float(r[name]) <= 1) if paper else math.isnan(float(r[name])), (r["task"], r["method"], name)
    assert {r["task"] for r in rows if r["method"] == "ground truth"} >= set(vbench.PAPER_TASKS)
    for name in dims:
        assert f"<th>{vbench.DIMENSIONS[name].header}</th>" in html
    assert results["vbench"]["dimensions"] == dims and results["vbench"]["tasks"] == list(vbench.PAPER_TASKS)


def test_eval_without_a_run_record_says_what_it_needs(bench, tmp_path, capsys):
    rc = benchmark_main(["eval", "--bench", bench, "--outputs", str(tmp_path), "--out", str(tmp_path / "r"),
                         "--inception-weights", "x", "--lpips-weights", "y"])
    assert rc == 2 and "no run.json" in capsys.readouterr().err


def test_a_clips_table_is_required(tmp_path, bench):
    with pytest.raises(ValueError, match="not an MfM 'clips' table"):
        build_benchmark(bench, str(tmp_path / "b.lance"), per_task=1, log=lambda _: None)
