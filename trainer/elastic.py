"""World-size-free training state: resume a ZeRO-3 run on another number of ranks or another SP degree.

Each checkpoint also holds `universal/`: per named trainable parameter the consolidated fp32 master weight and
Adam's `exp_avg` / `exp_avg_sq` (one safetensors file each, keys = parameter names), and `optimizer.json`
(Adam's step count and hyper-parameters, the LR scheduler's state). Loading reshards them: every rank reads
the full tensors lazily and DeepSpeed's tensor-fragment API (`safe_set_full_fp32_param`,
`safe_set_full_optimizer_state`) keeps the rank's own partition, so the new partitions are whatever the new
world makes them. This is the layout of DeepSpeed's universal checkpoint (`zero/<param>/{fp32,exp_avg,
exp_avg_sq}.pt`), written by us instead of by `deepspeed.checkpoint.ds_to_universal`, because:

- `ds_to_universal` is an offline pass after the job: it unpickles every rank's shards
  (`torch.load(weights_only=False)`) in a process pool and writes a second full copy as pickles, which
  `load_universal` unpickles again; we write safetensors once, while saving, and never unpickle;
- a resume then needs a conversion step and a config flag (`checkpoint.load_universal`); here
  `--resume latest` reshards by itself when the world differs, from the files the checkpoint already holds;
- the same world still resumes from DeepSpeed's own state (`engine.load_checkpoint`), bit-exact.

Gathering is one parameter at a time (a collective: every rank calls `save_universal`), so no rank holds more
than one full parameter beyond its partition; rank 0 accumulates each file's tensors on the CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from deepspeed.utils import (
    safe_get_full_fp32_param,
    safe_get_full_optimizer_state,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
)
from safetensors import safe_open
from safetensors.torch import save_file

from trainer.parallel import ParallelDims

log = logging.getLogger(__name__)

UNIVERSAL = "universal"
MOMENTS = ("exp_avg", "exp_avg_sq")  # Adam's first and second moments
FILES = {"fp32": None, **{m: m for m in MOMENTS}}  # file stem -> optimizer state key (None: the fp32 weight)


def trained(module: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def gather_full(module: torch.nn.Module, key: str | None, dims: ParallelDims) -> dict[str, torch.Tensor]:
    """Full fp32 weights (`key` None) or one Adam state of every trained parameter, on rank 0 (empty elsewhere).
    A collective: every rank calls it."""
    out = {}
    for name, p in trained(module):
        full = safe_get_full_fp32_param(p) if key is None else safe_get_full_optimizer_state(p, key)
        if dims.is_main:
            out[name] = full.detach().float().cpu().contiguous()
    return out


def save_universal(engine: Any, folder: Path, dims: ParallelDims) -> None:
    """Write `folder/universal/` (every rank calls it; rank 0 writes)."""
    out = Path(folder) / UNIVERSAL
    if dims.is_main:
        out.mkdir(parents=True, exist_ok=True)
    for stem, key in FILES.items():
        state = gather_full(engine.module, key, dims)
        if dims.is_main:
            save_file(state, out / f"{stem}.safetensors")
    if dims.is_main:
        adam = engine.optimizer.optimizer  # the torch AdamW inside ZeRO-3
        steps = {float(s["step"]) for s in adam.state.values() if "step" in s}
        if len(steps) > 1:
            raise RuntimeError(f"Adam sub-groups are at different steps {sorted(steps)}")
        meta = {
            "step": steps.pop() if steps else 0.0,
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in adam.param_groups],
            "lr_scheduler": engine.lr_scheduler.state_dict() if engine.lr_scheduler is not None else None,
            "global_steps": engine.global_steps,
            "global_samples": engine.global_samples,
            "world": {"size": dims.world, "sp": dims.sp},
        }
        (out / "optimizer.json").write_text(json.dumps(meta, indent=2))


def load_universal(engine: Any, folder: Path) -> dict[str, Any]:
    """Reshard `folder/universal/` into `engine` (any world size, any SP degree): fp32 master weights, the
    bit16 partitions the forward gathers, Adam's moments and step, the LR schedule. Every rank calls it; no
    collective but the re-gather of ZeRO-3's persistent parameters. Returns the meta."""
    src = Path(folder) / UNIVERSAL
    if not (src / "optimizer.json").is_file():
        raise FileNotFoundError(f"{folder}: no {UNIVERSAL}/ state (saved before resharding existed): resume it on "
                                "the world that saved it")  # fmt: skip
    meta = json.loads((src / "optimizer.json").read_text())
    zero = engine.optimizer  # DeepSpeedZeroOptimizer_Stage3
    adam = zero.optimizer
    for flat in zero.fp32_partitioned_groups_flat:  # Adam creates its state lazily, at the first step
        adam.state[flat] = {"step": torch.tensor(meta["step"], dtype=torch.float32),
                            **{m: torch.zeros_like(flat) for m in MOMENTS}}  # fmt: skip
    params = trained(engine.module)
    zero.checkpoint_event_prologue()  # release every gathered parameter, the persistent ones too
    for stem, key in FILES.items():
        with safe_open(src / f"{stem}.safetensors", framework="pt") as f:
            missing = sorted({n for n, _ in params} - set(f.keys()))
            if missing:
                raise ValueError(f"{src / stem}.safetensors lacks {missing[:5]} ({len(missing)} in all)")
            for name, p in params:
                value = f.get_tensor(name).to(p.ds_tensor.device)
                if tuple(value.shape) != tuple(p.ds_shape):
                    raise ValueError(f"{name}: saved {tuple(value.shape)}, this model has {tuple(p.ds_shape)}")
                if key is None:
                    safe_set_full_fp32_param(p, value)
                else:
                    safe_set_full_optimizer_state(p, value, key)
    for group, saved in zip(adam.param_groups, meta["param_groups"]):
        group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    # the forward reads the bit16 partitions: refresh them from the fp32 masters, then the persistent ones
    for i, (lp, hp) in enumerate(zip(zero.fp16_partitioned_groups_flat, zero.fp32_partitioned_groups_flat)):
        lp.data.copy_(hp.data)
        for part, view in zip(zero.fp16_partitioned_groups[i], zero.unflatten(lp, zero.fp16_partitioned_groups[i])):
            part.data = view.data  # as DeepSpeed's own universal load does
    zero.checkpoint_event_epilogue()  # re-gather the persistent (small, always gathered) parameters
    if engine.lr_scheduler is not None and meta["lr_scheduler"] is not None:
        engine.lr_scheduler.load_state_dict(meta["lr_scheduler"])
    engine.global_steps, engine.global_samples = meta["global_steps"], meta["global_samples"]
    return meta
