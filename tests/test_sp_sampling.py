"""Generation at scale, on real gloo processes: sequence-parallel sampling (sp=2) equals one process for a
video and an image task, CFG on two ranks equals both branches in one batch, a 2-rank `benchmark run`
writes the files a 1-rank run writes; step caching at threshold 0 is the uncached model bit for bit and a
positive threshold computes fewer steps."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from bench_fixtures import moving_clips, tiny_pipeline, write_clips_table
from safetensors.torch import load_file, save_file

from benchmark.build import Selection, build_benchmark
from benchmark.cli import main as benchmark_main
from benchmark.evaluate import steps_computed
from mfm.synthetic import write_image
from model.generation_groups import init_generation_groups
from model.pipeline import MfMPipeline, SamplingOptions

FAST = SamplingOptions(steps=2)
SIZE = dict(num_frames=9, height=32, width=48)  # 18 video / 6 image tokens: 9 / 3 per rank
CASES = {  # name: (task, input kind, sp, cfg parallel)
    "i2v_sp2": ("i2v", "image", 2, False),
    "icolor_sp2": ("icolor", "image", 2, False),
    "i2v_cfg2": ("i2v", "image", 1, True),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, port: int, world: int = 2) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
    torch.set_num_threads(1)


def _cases_worker(rank: int, port: int, pipe_dir: str, image: str, out: str) -> None:
    """Every case on the same 2 ranks, each with a fresh pipeline and its own groups."""
    _join(rank, port)
    for case, (task, _, sp, cfg_parallel) in CASES.items():
        pipe = MfMPipeline.from_pretrained(pipe_dir)
        groups = init_generation_groups(sp, cfg_parallel)
        assert (groups.sp, groups.cfg, groups.dp) == (sp, 2 if cfg_parallel else 1, 1)
        pipe.parallelize(groups)
        result = pipe(task, "a textured wall", [image], seed=5, options=FAST, **SIZE)
        assert (result is not None) == (rank == 0)  # the leader prepares, decodes and gets the output
        if result is not None:
            save_file({"frames": result.frames}, f"{out}/{case}.safetensors")


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory) -> Path:
    return tiny_pipeline(tmp_path_factory.mktemp("pipe"))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    return str(write_image(tmp_path_factory.mktemp("inputs") / "first.png", (32, 48), seed=1))


@pytest.fixture(scope="module")
def two_rank_samples(pipe_dir, image, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_ranks")
    torch.multiprocessing.spawn(_cases_worker, args=(_free_port(), str(pipe_dir), image, str(out)), nprocs=2,
                                join=True)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_give_the_one_process_sample(case, pipe_dir, image, two_rank_samples):
    """sp=2 splits the tokens: exact up to fp32 rounding. CFG on two ranks runs each branch as a batch of
    one instead of both in one batch of two, a different matmul blocking whose 1e-7 roundings CFG scale 9 and
    the steps amplify: within 1e-4."""
    task, _, sp, _ = CASES[case]
    expected = MfMPipeline.from_pretrained(pipe_dir)(task, "a textured wall", [image], seed=5, options=FAST, **SIZE)
    frames = load_file(two_rank_samples / f"{case}.safetensors")["frames"]
    assert frames.shape == expected.frames.shape
    error = (frames - expected.frames).abs().max().item()
    print(f"{case}: max abs error vs one process {error:.3g}")
    assert error <= (1e-5 if sp == 2 else 1e-4)


def _benchmark_worker(rank: int, port: int, argv: list[str], world: int) -> None:
    _join(rank, port, world)
    assert benchmark_main(argv) == 0


def test_two_rank_benchmark_run_writes_the_files_of_a_one_rank_run(pipe_dir, tmp_path):
    clips = write_clips_table(tmp_path / "clips.lance", moving_clips(tmp_path, 3, frames=33))
    bench = str(tmp_path / "bench.lance")
    build_benchmark(clips, bench, per_task=1, seed=0, selection=Selection(33, 200.0, 5.0), size=(32, 32),
                    log=lambda _: None)
    run = ["run", "--checkpoint", str(pipe_dir), "--bench", bench, "--steps", "2", "--tasks", "i2v,vinp,t2i,sisr"]
    for name, world in (("one", 1), ("two", 2)):  # launched alike: one thread per rank
        argv = [*run, "--out", str(tmp_path / name), "--sp", "1", *(["--cache-threshold", "0"] if world == 2 else [])]
        torch.multiprocessing.spawn(_benchmark_worker, args=(_free_port(), argv, world), nprocs=world, join=True)
    files = {p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*-000.*")}
    assert len(files) == 4
    assert files == {p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*-000.*")}
    for f in files:  # dp = 2: each sample made by one rank, exactly as one process makes it (the step cache at 0 too)
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    assert steps_computed(tmp_path / "two") == {"i2v": "2/2", "sisr": "2/2", "t2i": "2/2", "vinp": "2/2"}
    assert steps_computed(tmp_path / "one") == {}  # no step cache, no record


def test_step_cache_at_threshold_zero_is_the_uncached_model_and_a_positive_one_skips_steps(pipe_dir, image):
    options = SamplingOptions(steps=6)
    args = ("i2v", "a textured wall", [image])
    plain = MfMPipeline.from_pretrained(pipe_dir)(*args, seed=2, options=options, **SIZE).frames
    pipe = MfMPipeline.from_pretrained(pipe_dir)
    cache = pipe.enable_step_cache(0.0)
    assert torch.equal(pipe(*args, seed=2, options=options, **SIZE).frames, plain)
    assert (cache.calls, cache.computed) == (6, 6)
    pipe = MfMPipeline.from_pretrained(pipe_dir)
    cache = pipe.enable_step_cache(10.0)  # any change passes: only the first step runs every block
    cached = pipe(*args, seed=2, options=options, **SIZE).frames
    assert (cache.calls, cache.computed) == (6, 1)
    change = (cached - plain).abs()
    print(f"threshold 10: {cache.computed}/{cache.calls} steps computed, output change max {change.max():.3g} "
          f"mean {change.mean():.3g}")
    assert change.max() > 0
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        pipe.enable_step_cache(-1.0)
