"""A two-node DeepSpeed launch through the hostfile path trains the tiny preset (gloo, CPU).

`infra/deepspeed/launch.sh` runs once per "node" with NODE_RANK 0 and 1 against a two-host hostfile: the
launcher's no-ssh mode (`deepspeed --hostfile ... --no_ssh --node_rank N`), as on Kubernetes or Slurm.
Each node starts its one rank; the ranks meet at MASTER_ADDR:MASTER_PORT and train 2 ZeRO-3 steps on the
curated table of trainer_fixtures.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "infra" / "deepspeed" / "launch.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_node(rank: int, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """launch.sh as node `rank` would run it, in its own process group (killed whole on a timeout)."""
    with log.open("w") as out:
        return subprocess.Popen(["bash", str(LAUNCH), *args], env={**env, "NODE_RANK": str(rank)}, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def test_two_node_hostfile_launch_trains_tiny(curated, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes, one rank each\nnode-a slots=1\nnode-b slots=1\n")
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_RANK", "DS_ARGS", "LAUNCHER")}
    env |= {"HOSTFILE": str(hostfile), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
            "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu",
            "OMP_NUM_THREADS": "1"}  # fmt: skip
    args = ["--preset", "tiny", "--set", f"data.table={curated.table}", "--set", f"frozen.root={curated.tiny}",
            "--set", "steps=2", "--set", f"run_dir={run_dir}"]  # fmt: skip
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    nodes = [_start_node(rank, args, env, log) for rank, log in enumerate(logs)]
    try:
        codes = [node.wait(timeout=420) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    text = [log.read_text() for log in logs]
    assert codes == [0, 0], f"exit codes {codes}\nnode 0:\n{text[0][-3000:]}\nnode 1:\n{text[1][-3000:]}"

    for rank, out in enumerate(text):  # each launcher started one rank of a 2-node world
        assert f"nnodes=2, num_local_procs=1, node_rank={rank}" in out, out[-2000:]
        assert "'node-a': [0], 'node-b': [1]" in out
    assert "world 2 = dp 2" in text[0], text[0][-2000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert (run_dir / "checkpoints" / "step_00000002").is_dir()
