"""Checkpoints: everything a resumed run needs to continue exactly, and a consolidated model export.

```
<run_dir>/checkpoints/
  latest                      name of the newest complete step folder (written last, atomically)
  step_00001000/
    deepspeed/state/...       DeepSpeed engine: ZeRO-3 partitions, optimizer, LR scheduler
    model/                    config.json + model.safetensors [+ model.ema.safetensors]: MfM.from_pretrained
                              (with LoRA only when lora.save_merged: the base with the adapters merged in)
    lora/                     with LoRA: adapter_config.json + adapter_model.safetensors (peft's format)
    universal/                fp32.safetensors, exp_avg.safetensors, exp_avg_sq.safetensors (full tensors per
                              trained parameter) + optimizer.json: the world-size-free state (trainer/elastic.py)
    trainer_state.json        step, phase, preset, the full config, the Lance table (uri, version, trainable
                              rows), counters, the world (size, sp)
    data_dp{r}.json           data position of DP rank r (next position, positions waiting in buckets, skips)
    rng_rank{r}.safetensors   torch RNG states of rank r
    ema_rank{r}.safetensors   the EMA partition of rank r (when EMA is on)
```

A step folder is written as `step_X.partial` and renamed when every rank has finished, and only then does
`latest` move: a run killed at any moment resumes from the last complete checkpoint. The same world size and
SP degree resume from DeepSpeed's own state, bit-exact. Another world (`world_change`) resumes from
`universal/`, resharded: the weights and Adam moments are the saved ones, the EMA is resharded from the
`model.ema` export, each new rank takes the RNG state of SP rank 0 of its (or the last) old DP rank, and when
the data-parallel degree changes the data positions follow `trainer.data.reshard_streams`. With LoRA the
DeepSpeed state holds the trained parameters and their optimizer state; the frozen base comes back from where
the run started (`init_from`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from model.mfm import MfM
from trainer.data import StreamState, reshard_streams
from trainer.elastic import load_universal, save_universal
from trainer.ema import ShardedEma
from trainer.parallel import ParallelDims

if TYPE_CHECKING:
    from peft import LoraConfig

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LORA_DIR = "lora"
LATEST = "latest"
DS_TAG = "state"


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


def resolve(run_dir: Path, resume: str) -> Path | None:
    """`--resume latest` (None when the run has no checkpoint yet) or a step folder path."""
    if resume != LATEST:
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise FileNotFoundError(f"--resume {resume}: not a checkpoint step folder (no trainer_state.json)")
        return path
    latest = Path(run_dir) / CHECKPOINTS / LATEST
    return latest.parent / latest.read_text().strip() if latest.is_file() else None


def gather_state_dict(module: MfM, dims: ParallelDims, ema: ShardedEma | None = None) -> dict[str, torch.Tensor]:
    """The full fp32 master weights (or their EMA) on rank 0, empty elsewhere; one parameter at a time, so
    no rank ever holds more than one full parameter beyond its partition. Every rank must call it."""
    from deepspeed.utils import safe_get_full_fp32_param

    state: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters():
        full = ema.full(name) if ema is not None else safe_get_full_fp32_param(p)
        if dims.is_main:
            state[name] = full.detach().float().cpu().clone()
    return state


def export_model(
    module: MfM, path: Path, dims: ParallelDims, ema: ShardedEma | None = None, variant: str | None = None
) -> None:
    """Write `path` as an MfM folder (`MfM.from_pretrained(path)` loads it; generation too)."""
    state = gather_state_dict(module, dims, ema)
    if dims.is_main:
        with torch.device("meta"):
            export = MfM(module.config)
        export.load_state_dict_strict(state)
        export.save_pretrained(path, variant=variant)


def save_checkpoint(
    engine: Any,
    run_dir: Path,
    step: int,
    trainer_state: dict[str, Any],
    data_state: dict[str, Any],
    dims: ParallelDims,
    keep: int,
    ema: ShardedEma | None = None,
    lora: LoraConfig | None = None,
    merged_base: Callable[[], MfM] | None = None,
) -> Path:
    """Write step folder `step` (every rank calls it). With `lora` the adapters go to lora/ instead of the full
    model to model/, and with `merged_base` (the run's starting weights) model/ holds the merged model."""
    final = step_dir(run_dir, step)
    partial = final.with_name(final.name + ".partial")
    if dims.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    dist.barrier()
    engine.save_checkpoint(str(partial / "deepspeed"), tag=DS_TAG, save_latest=False)
    save_universal(engine, partial, dims)
    if lora is None:
        export_model(engine.module, partial / "model", dims)
    else:
        from trainer.lora import export_merged, save_adapter

        adapter = save_adapter(engine.module, partial / LORA_DIR, lora, dims)
        if merged_base is not None and dims.is_main:
            export_merged(merged_base, adapter, lora, partial / "model")
    if ema is not None:
        export_model(engine.module, partial / "model", dims, ema, variant="ema")
        save_file(ema.state_dict(), partial / f"ema_rank{dims.rank}.safetensors")
    if dims.sp_rank == 0:
        (partial / f"data_dp{dims.dp_rank}.json").write_text(json.dumps(data_state))
    save_file(_rng_state(), partial / f"rng_rank{dims.rank}.safetensors")
    if dims.is_main:
        (partial / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    dist.barrier()
    if dims.is_main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        _write_atomic(final.parent / LATEST, final.name)
        for old in sorted(final.parent.glob("step_*[0-9]"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint: %s", final)
    dist.barrier()
    return final


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / "trainer_state.json").read_text())


def world_change(path: Path, dims: ParallelDims) -> str | None:
    """What differs between the world that saved `path` and this one ("4 ranks (dp 4 x sp 1) -> ..."), or None."""
    w = read_trainer_state(path)["world"]
    if (w["size"], w["sp"]) == (dims.world, dims.sp):
        return None
    return (f"{w['size']} ranks (dp {w['size'] // w['sp']} x sp {w['sp']}) -> "
            f"{dims.world} ranks (dp {dims.dp} x sp {dims.sp})")  # fmt: skip


def read_data_state(path: Path, dims: ParallelDims, rows: int) -> StreamState:
    """This DP rank's data position; after a change of the data-parallel degree, resharded by the data rule
    (`reshard_streams`) from every old DP rank's state. `rows`: the trainable rows, as when it was saved."""
    w = read_trainer_state(path)["world"]
    old_dp = w["size"] // w["sp"]
    states = [StreamState.from_dict(json.loads((path / f"data_dp{r}.json").read_text())) for r in range(old_dp)]
    if old_dp == dims.dp:
        return states[dims.dp_rank]
    return reshard_streams(states, old_dp, rows, dims.dp)[dims.dp_rank]


def load_checkpoint(engine: Any, path: Path, dims: ParallelDims, ema: ShardedEma | None = None) -> None:
    """Restore the engine (weights, optimizer, LR schedule), the RNG states and the EMA in place: from
    DeepSpeed's state in the same world, else resharded from `universal/`."""
    if world_change(path, dims) is None:
        engine.load_checkpoint(str(path / "deepspeed"), tag=DS_TAG)
        _set_rng_state(load_file(path / f"rng_rank{dims.rank}.safetensors"))
        if ema is not None:
            ema.load_state_dict(load_file(path / f"ema_rank{dims.rank}.safetensors"))
        return
    w = read_trainer_state(path)["world"]
    load_universal(engine, path)
    old_rank = min(dims.dp_rank, w["size"] // w["sp"] - 1) * w["sp"]  # SP rank 0 of the matching old DP rank
    _set_rng_state(load_file(path / f"rng_rank{old_rank}.safetensors"))
    if ema is not None:
        ema.load_full(load_file(path / "model" / "model.ema.safetensors"))


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
