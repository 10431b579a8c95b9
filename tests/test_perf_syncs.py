"""Host syncs in the train step: every `.item()`, `float(t)`, `bool(t)`, `.tolist()`, `.cpu()` or `.numpy()` that
our code (model/, trainer/) calls during `train_step` on a real DeepSpeed ZeRO-3 engine is listed; the only one
allowed is the documented non-finite check (all ranks must agree to skip before ZeRO-3's backward collectives).
DeepSpeed's own syncs (inside its step) are outside our code and not counted here."""

from __future__ import annotations

import os
import socket
import sys
import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

REPO = Path(__file__).resolve().parents[1]
TORCH = Path(torch.__file__).parent
SYNCS = {"item", "__float__", "__int__", "__bool__", "tolist", "cpu", "numpy"}
ALLOWED = {("trainer/step.py", "train_step")}  # `finite.item()`: the skip decision every rank shares


class SyncRecorder(TorchFunctionMode):
    """Records (file, function, line) of our code that asked for a tensor's value on the host."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, str, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in SYNCS:  # the caller: the innermost frame outside torch itself
            stack = reversed(traceback.extract_stack()[:-1])
            frame = next(f for f in stack if not Path(f.filename).is_relative_to(TORCH))
            path = Path(frame.filename).resolve()
            if path.is_relative_to(REPO) and path.parts[len(REPO.parts)] in ("model", "trainer"):
                self.calls.append((path.relative_to(REPO).as_posix(), frame.name, frame.lineno))
        return func(*args, **(kwargs or {}))


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    sys.path.insert(0, str(REPO / "tests"))
    torch.set_num_threads(1)
    from test_model import TINY, random_inputs, randomized

    from trainer.configs import deepspeed_config, load_config
    from trainer.parallel import init_distributed, parallelize_mfm
    from trainer.step import PreparedBatch, train_step

    dims = init_distributed(sp=1, backend="gloo")
    cfg = load_config(overrides={"data.table": "-", "frozen.root": "-"})
    ds_config = deepspeed_config(cfg, on_gpu=False)
    engine = parallelize_mfm(randomized(), dims, ds_config, gradient_checkpointing="selective")
    inp = random_inputs(TINY, 9, size=(32, 48), batch=2)
    batch = PreparedBatch(inp, torch.randn(inp["x"].shape), ["t2v", "i2v"], [18, 18])
    train_step(engine, batch)  # warm-up: lazy initialisation is not the step
    with SyncRecorder() as recorder:
        result = train_step(engine, batch)
    assert not result.skipped
    Path(out).write_text("\n".join(f"{f}:{n}:{line}" for f, n, line in recorder.calls))


def test_the_train_step_asks_the_host_once(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "syncs.txt"
    torch.multiprocessing.spawn(_worker, args=(port, str(out)), nprocs=1, join=True)
    calls = [line.split(":") for line in out.read_text().splitlines() if line]
    ours = [(f, n) for f, n, _ in calls]
    assert ours.count(("trainer/step.py", "train_step")) == 1, calls
    assert set(ours) <= ALLOWED, f"host syncs in the step outside the non-finite check: {calls}"
