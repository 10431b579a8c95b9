"""Resume on another world, and validation during training, for real: `mfm train` over gloo processes (torchrun)
on the curated table. 2 ranks train 4 steps; the checkpoint resumes on 1 rank and on 2 ranks with sp=2: the
weights and Adam moments after resharding equal the saved ones (and DeepSpeed's own restore of them), both
resumes train the same losses, and no sample is repeated or skipped (positions counted). Validation on 2 ranks
writes samples, held-out losses and TensorBoard events, and training goes on after it; the held-out split is
disjoint from what is trained."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import lance
import pytest
import torch
from trainer_fixtures import BROKEN_CLIP_ID, env

pytestmark = pytest.mark.slow
K, STEPS, LR = 4, 8, 1e-3  # 2 ranks train K steps; the resumes go on to STEPS


def train_cmd(curated, run_dir: Path, nproc: int, steps: int, *sets: str) -> list[str]:
    base = {"data.table": curated.table, "frozen.root": curated.tiny, "run_dir": run_dir, "steps": steps,
            "checkpoint.every": K, "optim.lr": LR, "data.num_workers": 0, "log.samples": True}  # fmt: skip
    args = [a for k, v in base.items() for a in ("--set", f"{k}={v}")] + [a for s in sets for a in ("--set", s)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "mfm", "train", "--preset", "tiny", "--resume", "latest", *args]  # fmt: skip


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-5000:]
    return done


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def seen(run_dir: Path) -> tuple[list[tuple[int, int]], list[str], int]:
    """Every position trained or skipped (over all DP ranks' samples logs), the clip ids trained, trained count."""
    positions, ids, trained = [], [], 0
    for path in sorted(run_dir.glob("samples_dp*.jsonl")):
        for row in map(json.loads, path.read_text().splitlines()):
            positions += [tuple(p) for p in row["positions"] + row["skipped"]]
            ids += row["clip_ids"]
            trained += len(row["positions"])
    return positions, ids, trained


@pytest.fixture(scope="module")
def base_run(curated, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("elastic") / "base"
    run(train_cmd(curated, run_dir, 2, K))
    return run_dir


@pytest.fixture(scope="module")
def resumed(curated, base_run) -> dict[str, tuple[Path, str]]:
    out = {}
    for name, nproc, sp in (("one_rank", 1, 1), ("sp2", 2, 2)):
        run_dir = base_run.with_name(name)
        shutil.copytree(base_run, run_dir)
        done = run(train_cmd(curated, run_dir, nproc, STEPS, f"parallel.sp={sp}", f"run_dir={run_dir}"))
        out[name] = (run_dir, done.stderr)
    return out


def test_resume_on_one_rank_and_on_sp2_continues_without_repeating_or_skipping_a_sample(base_run, resumed):
    (one, log_one), (sp2, log_sp2) = resumed["one_rank"], resumed["sp2"]
    assert "resume on another world: 2 ranks (dp 2 x sp 1) -> 1 ranks (dp 1 x sp 1)" in log_one
    assert "resume on another world: 2 ranks (dp 2 x sp 1) -> 2 ranks (dp 1 x sp 2)" in log_sp2
    assert "data positions resharded by the global-position rule" in log_one
    # the same resharded state, dp=1 on both: sp=2 trains the losses one rank trains
    a, b = losses(one), losses(sp2)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in range(K + 1, STEPS + 1):
        assert b[step] == pytest.approx(a[step], rel=1e-4), f"step {step}"
    print("resumed losses, 1 rank vs sp=2:", {s: (a[s], b[s]) for s in range(K + 1, STEPS + 1)})
    for run_dir in (one, sp2):
        positions, _, trained = seen(run_dir)
        assert trained == 2 * 2 * K + 1 * 2 * (STEPS - K)  # bs 2: dp 2 for K steps, then dp 1
        assert len(positions) == len(set(positions)), "a sample was trained twice"
        ckpt = run_dir / "checkpoints" / f"step_{STEPS:08d}"
        state = json.loads((ckpt / "data_dp0.json").read_text())
        per_epoch = json.loads((ckpt / "trainer_state.json").read_text())["table"]["rows"]  # dp 1 reads all
        nxt, pending = tuple(state["next"]), {tuple(p) for p in state["pending"]}
        before = {(e, i) for e in range(nxt[0] + 1) for i in range(per_epoch) if (e, i) < nxt}
        assert set(positions).isdisjoint(pending)
        assert set(positions) | pending == before, "a sample before the frontier was left out"


def _moments_worker(rank: int, world: int, sp: int, port: int, ckpt: str, out: str, native: bool) -> None:
    """Build the tiny engine on `world` ranks with `sp`, load `ckpt` (DeepSpeed's own restore when `native`,
    else resharded from universal/), compare the gathered fp32 weights and Adam moments with the saved ones."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
    torch.set_num_threads(1)
    from safetensors.torch import load_file

    from trainer import checkpoint
    from trainer.configs import deepspeed_config, load_config
    from trainer.elastic import FILES, gather_full
    from trainer.parallel import init_distributed, parallelize_mfm
    from trainer.train import build_model

    dims = init_distributed(sp=sp, backend="gloo")
    cfg = load_config(overrides={"data.table": "-", "frozen.root": "-", "parallel.sp": sp, "optim.lr": LR})
    engine = parallelize_mfm(build_model("tiny", "auto", None, seed=123), dims, deepspeed_config(cfg, False), True)
    if native:
        engine.load_checkpoint(str(Path(ckpt) / "deepspeed"), tag=checkpoint.DS_TAG)
    else:
        checkpoint.load_checkpoint(engine, Path(ckpt), dims)
    diffs = {}
    for stem, key in FILES.items():
        got, saved = gather_full(engine.module, key, dims), load_file(Path(ckpt) / "universal" / f"{stem}.safetensors")
        if rank == 0:
            assert sorted(got) == sorted(saved)
            diffs[stem] = max(float((got[n] - saved[n]).abs().max()) for n in saved)
            diffs[stem + "_max_abs"] = max(float(saved[n].abs().max()) for n in saved)
    if rank == 0:
        diffs["adam_step"] = [float(s["step"]) for s in engine.optimizer.optimizer.state.values()]
        Path(out).write_text(json.dumps(diffs))


@pytest.mark.parametrize(("world", "sp", "native"), [(2, 1, True), (1, 1, False), (2, 2, False)],
                         ids=["deepspeed-2ranks", "resharded-1rank", "resharded-sp2"])  # fmt: skip
def test_weights_and_adam_moments_after_resharding_equal_the_saved_ones(base_run, tmp_path, world, sp, native):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "diffs.json"
    ckpt = str(base_run / "checkpoints" / f"step_{K:08d}")
    torch.multiprocessing.spawn(_moments_worker, args=(world, sp, port, ckpt, str(out), native), nprocs=world)
    diffs = json.loads(out.read_text())
    print(f"{world} ranks sp={sp} native={native}: {diffs}")
    assert diffs["exp_avg_max_abs"] > 0 and diffs["exp_avg_sq_max_abs"] > 0  # trained: the moments are not zero
    assert diffs["fp32"] == diffs["exp_avg"] == diffs["exp_avg_sq"] == 0.0
    assert set(diffs["adam_step"]) == {float(K)}


# ---- validation during training ---------------------------------------------------------------------------------


def holdout(table: str) -> tuple[float, list[int]]:
    """A share that holds out the good clips of lowest hash up to the second video (the table is tiny: a fixed
    share could hold out none or most of it), and the indices of the held-out videos in the validation's order
    (by clip_id; the broken clip does not decode and is left out)."""
    rows = lance.dataset(table).to_table(columns=["clip_id", "media_type"], filter="passed").to_pylist()
    frac = {r["clip_id"]: int.from_bytes(hashlib.blake2b(r["clip_id"].encode(), digest_size=8).digest(), "big") / 2**64
            for r in rows}  # fmt: skip
    good = sorted((r for r in rows if r["clip_id"] != BROKEN_CLIP_ID), key=lambda r: frac[r["clip_id"]])
    videos = [i for i, r in enumerate(good) if r["media_type"] == "video"]
    share = (frac[good[videos[1]]["clip_id"]] + frac[good[videos[1] + 1]["clip_id"]]) / 2
    held = sorted(good[: videos[1] + 1], key=lambda r: r["clip_id"])
    return share, [i for i, r in enumerate(held) if r["media_type"] == "video"]


def test_held_out_split_is_disjoint_from_training_and_covers_every_row(curated):
    from trainer.data import holdout_offsets, open_clips, trainable_offsets

    ds, (share, _) = open_clips(curated.table, None, {}), holdout(curated.table)
    every, train, held = (set(trainable_offsets(ds, None).tolist()), set(trainable_offsets(ds, None, share).tolist()),
                          set(holdout_offsets(ds, None, share).tolist()))  # fmt: skip
    assert train.isdisjoint(held) and train | held == every
    assert len(held) >= 2 and len(train) == len(every) - len(held)


def test_a_bad_validation_config_is_rejected_before_launch(tmp_path, capsys):
    from trainer.train import main

    base = ["--preset", "tiny", "--set", "data.table=x", "--set", "frozen.root=y", "--print-config"]
    assert main([*base, "--set", "validation.every=2"]) == 2
    assert "validation.every needs validation.holdout > 0" in capsys.readouterr().err
    assert main([*base, "--set", "validation.t_values=[0.5,1.0]"]) == 2
    assert "validation.t_values" in capsys.readouterr().err
    bad = tmp_path / "samples.yaml"
    bad.write_text("- {task: t2v, prompt: a cat}\n- {task: nosuchtask}\n")
    assert main([*base, "--set", f"validation.samples={bad}"]) == 2
    assert "entry 1" in capsys.readouterr().err and "nosuchtask" in bad.read_text()
    assert main([*base, "--set", f"validation.samples={tmp_path / 'missing.yaml'}"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_validation_on_two_ranks_writes_samples_losses_and_events_and_training_goes_on(curated, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.data import open_clips, trainable_offsets

    share, videos = holdout(curated.table)
    samples = tmp_path / "samples.yaml"
    samples.write_text("- {task: t2v, prompt: a texture drifting right, seed: 1}\n"
                       f"- {{task: i2v, clip: {videos[0]}, seed: 2}}\n- {{task: vsr, clip: {videos[1]}, seed: 3}}\n")
    run_dir = tmp_path / "val"
    run(train_cmd(curated, run_dir, 2, 4, "validation.every=2", f"validation.holdout={share}",
                  f"validation.samples={samples}", "validation.steps=2", "validation.t_values=[0.1,0.5,0.9]",
                  "validation.tasks=[t2v,i2v,vsr]", "ema.enabled=true", "ema.decay=0.5"))  # fmt: skip
    assert sorted(losses(run_dir)) == [1, 2, 3, 4]  # training went on after the validation at step 2
    rows = [json.loads(line) for line in (run_dir / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(r["ema"] for r in rows)
    for r in rows:
        assert set(r["loss"]) == {"t2v", "i2v", "vsr"} and all(len(v) == 3 for v in r["loss"].values())
        assert all(0 < x < 10 for v in r["loss"].values() for x in v)
        assert set(r["psnr"]) == set(r["ssim"]) == {"vsr"} and r["psnr"]["vsr"] > 0  # the manipulation task
        assert r["samples"] == [0, 1, 2]  # 3 samples over 2 DP ranks: rank 1 ran a padding round
    assert rows[0]["loss"] != rows[1]["loss"]  # the weights moved between the validations
    print("validation:", [{k: r[k] for k in ("step", "loss", "psnr", "ssim")} for r in rows])
    for step in (2, 4):
        files = sorted(p.name for p in (run_dir / "validation" / f"step_{step:08d}").iterdir())
        assert files == ["00_t2v.mp4", "01_i2v.mp4", "02_vsr.mp4"]
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"val_loss/t2v", "val_loss/i2v/t=0.5", "val_psnr/vsr", "val_ssim/vsr"} <= set(tags["scalars"])
    assert {"val_samples/t2v", "val_samples/i2v", "val_samples/vsr"} <= set(tags["images"])
    assert [e.step for e in events.Scalars("val_loss/vsr/t=0.9")] == [2, 4]
    # never trained on: the held-out ids against every clip id the 2 DP ranks trained (counted)
    held = set(json.loads((run_dir / "validation" / "holdout.json").read_text()))
    _, trained_ids, trained = seen(run_dir)
    assert trained == 2 * 2 * 4 and held and held.isdisjoint(trained_ids)
    ds = open_clips(curated.table, None, {})
    assert len(trainable_offsets(ds, None, share)) + len(held) == len(trainable_offsets(ds, None))


def test_the_data_rule_deals_every_unconsumed_position_to_one_new_rank():
    from trainer.data import StreamState, rank_positions, reshard_streams

    # dp 2 over 10 rows: rank 0 read to (0, 8) with (0, 4) waiting in a bucket; rank 1 only to (0, 5), (0, 1) waiting
    old = [StreamState((0, 8), [(0, 4)]), StreamState((0, 5), [(0, 1)])]
    new = reshard_streams(old, old_dp=2, rows=10, new_dp=3)
    assert [s.next for s in new] == [(0, 8)] * 3  # the global frontier
    assert sorted(p for s in new for p in s.pending) == [(0, 1), (0, 4), (0, 5), (0, 7)]  # each dealt once
    assert [s.pending for s in new] == [[(0, 1), (0, 7)], [(0, 4)], [(0, 5)]]
    ahead = [p for r, s in enumerate(new) for p in itertools.takewhile(lambda p: p < (1, 0),
                                                                        rank_positions(s.next, r, 3, 9))]  # fmt: skip
    assert sorted(ahead) == [(0, 8)]  # dp 3 reads 9 of the 10 rows per epoch: (0, 9) is this epoch's remainder
