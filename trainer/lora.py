"""LoRA fine-tuning under ZeRO-3: the adapters are injected (peft) before `deepspeed.initialize`, so only they
(and the condition adapter with `lora.train_adapter`) require grad and enter the optimizer; the frozen base
is partitioned like any other parameter but never updated.

Saving gathers the trained parameters only (one at a time, from their fp32 master partitions) and writes
peft's adapter folder on rank 0; the merged export rebuilds the base on rank 0 from where the run started
(`init_from`, or the seeded initial weights) rather than from the partitions, so that its base weights are
the exact original ones even when training in bf16.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, set_peft_model_state_dict

from model.lora import add_lora, lora_config, lora_state_dict, merge_lora, save_lora
from model.mfm import MfM
from trainer.configs import LoraTrainConfig
from trainer.parallel import ParallelDims

log = logging.getLogger(__name__)


def peft_config(cfg: LoraTrainConfig) -> LoraConfig:
    return lora_config(cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, cfg.train_adapter)


def trainable_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def gather_trained_state(module: MfM, dims: ParallelDims) -> dict[str, torch.Tensor]:
    """The trained parameters' full fp32 values on rank 0 (empty elsewhere); every rank must call it."""
    from deepspeed.utils import safe_get_full_fp32_param

    state = {}
    for name, p in trainable_parameters(module).items():
        full = safe_get_full_fp32_param(p)
        if dims.is_main:
            state[name] = full.detach().float().cpu().clone()
    return state


def save_adapter(module: MfM, folder: Path, config: LoraConfig, dims: ParallelDims) -> dict[str, torch.Tensor]:
    """Write the adapter folder (peft's format) on rank 0; returns the adapter weights there (empty elsewhere)."""
    state = gather_trained_state(module, dims)
    if not dims.is_main:
        return {}
    adapter = lora_state_dict(module, state)
    save_lora(folder, config, adapter)
    return adapter


def export_merged(base: Callable[[], MfM], adapter: dict[str, torch.Tensor], config: LoraConfig, folder: Path) -> None:
    """The base (`base()`: the run's starting weights) with `adapter` merged in, as an MfM folder (rank 0)."""
    with torch.random.fork_rng():  # building the base seeds torch: keep this rank's training RNG as it was
        model = add_lora(base(), config)
    result = set_peft_model_state_dict(model, adapter)
    if result.unexpected_keys:
        raise ValueError(f"adapter weights {result.unexpected_keys[:5]} do not fit the base")
    merge_lora(model).save_pretrained(folder)
