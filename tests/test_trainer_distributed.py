"""`mfm train` for real: DeepSpeed ZeRO-3 over 2 gloo processes (torchrun) on a table written by the curation
code; a run killed with SIGKILL and resumed with `--resume latest` repeats the unbroken run's losses; Ulysses
sp=2 gradients equal one device's, and a non-finite loss skips the step on every rank."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from trainer_fixtures import env

from model.mfm import MfM

pytestmark = pytest.mark.slow
STEPS, EVERY, LR = 24, 6, 1e-3  # lr 3e-3 is past the tiny model's stable rate: its loss wanders


def train_cmd(curated, run_dir: Path, *extra: str) -> list[str]:
    sets = {"data.table": curated.table, "frozen.root": curated.tiny, "run_dir": run_dir, "steps": STEPS,
            "checkpoint.every": EVERY, "optim.lr": LR, "model.gradient_checkpointing": True}  # fmt: skip
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "mfm", "train", "--preset", "tiny", *args, *extra]  # fmt: skip


def losses(run_dir: Path) -> dict[int, float]:
    """Per-step loss from metrics.jsonl (a resumed run appends; the later line of a step wins)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a launcher and every process under it (torchrun starts each rank in its own session)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [proc.pid], [proc.pid]
    while todo:
        kids = children.get(todo.pop(), [])
        tree += kids
        todo += kids
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    while any(_running(pid) for pid in tree[1:]):  # the orphaned ranks die asynchronously
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def unbroken(curated, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("unbroken")
    done = subprocess.run(train_cmd(curated, run_dir, "--set", "data.num_workers=1"), env=env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return run_dir


def test_zero3_run_on_the_curated_table_learns_logs_and_exports(unbroken, curated):
    loss = losses(unbroken)
    assert sorted(loss) == list(range(1, STEPS + 1))
    first, last = sum(loss[s] for s in (1, 2, 3, 4)) / 4, sum(loss[s] for s in (13, 14, 15, 16)) / 4
    assert last < 0.9 * first, f"loss {first:.3f} -> {last:.3f}"
    rows = [json.loads(line) for line in (unbroken / "metrics.jsonl").read_text().splitlines()]
    assert all(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 and r["peak_mem_gb"] > 0 for r in rows)
    assert all(r["loss_per_task"] and r["grad_norm"] > 0 and r["lr"] == LR for r in rows)
    assert rows[-1]["skipped_clips"] >= 1  # the broken row was read, skipped and counted
    assert list((unbroken / "tensorboard").glob("events.out.tfevents.*"))
    ckpt = unbroken / "checkpoints" / (unbroken / "checkpoints" / "latest").read_text()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert (state["step"], state["table"]["uri"]) == (STEPS, curated.table)
    assert state["table"]["version"] == curated.version_before_broken + 1
    kept = [f"step_{s:08d}" for s in (STEPS - EVERY, STEPS)]  # the last two of every EVERY steps
    assert sorted(p.name for p in (unbroken / "checkpoints").glob("step_*")) == kept
    exported = MfM.from_pretrained(ckpt / "model")  # the consolidated safetensors export
    fresh = MfM(exported.config)
    assert not torch.equal(exported.final_layer.linear.weight, fresh.final_layer.linear.weight)  # trained


def test_sigkill_then_resume_latest_repeats_the_unbroken_losses(curated, unbroken, tmp_path):
    run_dir = tmp_path / "killed"
    cmd = train_cmd(curated, run_dir, "--set", "data.num_workers=0", "--resume", "latest")
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "metrics.jsonl").exists() or max(losses(run_dir), default=0) < EVERY + 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.2)
    finally:
        kill_tree(proc)
    assert (run_dir / "checkpoints" / "latest").read_text() == f"step_{EVERY:08d}"
    before_kill = losses(run_dir)
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)  # same command: resume
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"resumed from {run_dir / 'checkpoints' / f'step_{EVERY:08d}'} at step {EVERY}" in done.stderr
    reference, resumed = losses(unbroken), losses(run_dir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):  # before the kill, and after the resume (1 spawned worker there, 0 here)
        got = resumed[step] if step > EVERY else before_kill[step]
        assert got == pytest.approx(reference[step], rel=1e-6, abs=0), f"step {step}"


# ---- Ulysses sp=2 against one device; a non-finite loss ---------------------------------------------------------


def _sp_worker(rank: int, port: int) -> None:
    """One of 2 ranks of one SP group: DeepSpeed's gradients of a batch equal a plain single-device backward."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
    torch.set_num_threads(1)
    from deepspeed.utils import safe_get_full_grad
    from test_model import TINY, random_inputs, randomized

    from trainer.checkpoint import gather_state_dict
    from trainer.configs import deepspeed_config, load_config
    from trainer.ema import ShardedEma
    from trainer.parallel import init_distributed, parallelize_mfm
    from trainer.step import PreparedBatch, model_forward, per_sample_loss, train_step

    dims = init_distributed(sp=2, backend="gloo")
    inp = random_inputs(TINY, 9, size=(32, 48), batch=2)  # 3 x 2 x 3 = 18 tokens: 9 per rank
    target = torch.randn(inp["x"].shape, generator=torch.Generator().manual_seed(1))
    reference = randomized()
    per_sample_loss(reference(**inp), target).mean().backward()

    cfg = load_config(overrides={"data.table": "-", "frozen.root": "-", "parallel.sp": 2, "optim.grad_clip": 0})
    engine = parallelize_mfm(randomized(), dims, deepspeed_config(cfg, on_gpu=False), gradient_checkpointing=True)
    engine.backward(per_sample_loss(engine(**inp), target).mean())
    for (name, p), ref in zip(engine.module.named_parameters(), reference.parameters()):
        torch.testing.assert_close(safe_get_full_grad(p), ref.grad, atol=1e-6, rtol=1e-4, msg=name)

    with torch.no_grad():  # packed under sp=2: 2 samples, 18 + 6 tokens, split 12 / 12 across the ranks
        image = random_inputs(TINY, 1, size=(32, 48), batch=1, seed=3)
        keys = ("x", "cond_pixels", "cond_depth", "cond_mask")
        both = {k: [inp[k][0], image[k][0]] if k in keys else torch.cat([inp[k][:1], image[k]]) for k in inp}
        both["xs"] = both.pop("x")
        packed = model_forward(engine, both, packed=True)
        torch.testing.assert_close(packed[0], reference(**{k: v[:1] for k, v in inp.items()})[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(packed[1], reference(**image)[0], atol=1e-5, rtol=1e-4)
    engine.step()

    bad_target = target.clone()
    if rank == 1:
        bad_target[0, 0, 0, 0, 0] = float("nan")  # rank 1's loss is NaN, rank 0's is not: both must skip
    batch = PreparedBatch(inp, bad_target, ["t2v", "t2v"], [18, 18])
    before = [p.ds_tensor.clone() for p in engine.module.parameters()]
    result = train_step(engine, batch)
    assert result.skipped and result.grad_norm is None
    assert all(torch.equal(a, p.ds_tensor) for a, p in zip(before, engine.module.parameters()))
    ema = ShardedEma(engine.module, decay=0.5)
    w0 = gather_state_dict(engine.module, dims)
    result = train_step(engine, PreparedBatch(inp, target, ["t2v", "t2v"], [18, 18]))
    assert not result.skipped and torch.isfinite(result.losses).all()
    assert not all(torch.equal(a, p.ds_tensor) for a, p in zip(before, engine.module.parameters()))
    ema.update()  # the EMA's export gathers the partitions: 0.5 * before + 0.5 * after the step
    w1, averaged = gather_state_dict(engine.module, dims), gather_state_dict(engine.module, dims, ema)
    for name in averaged:  # filled on rank 0 only
        torch.testing.assert_close(averaged[name], 0.5 * (w0[name] + w1[name]), msg=name)
    assert len(averaged) == (len(w0) if rank == 0 else 0) and (rank or any(not torch.equal(w0[k], w1[k]) for k in w0))


def test_ulysses_sp2_gradients_equal_one_device_and_a_nonfinite_loss_skips_the_step():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_sp_worker, args=(port,), nprocs=2, join=True)
