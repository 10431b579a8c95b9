"""LoRA adapters on the MfM transformer through `peft`: injection, peft's on-disk format, loading and merging.

Single-device code (no ranks): trainer/ injects the adapters before ZeRO-3 (`trainer/lora.py`) and gathers
them to save; generation loads a saved adapter onto a loaded transformer; `mfm model merge-lora` merges it
into the base weights. An adapter folder is peft's own layout, so `peft.PeftModel.from_pretrained` reads it:

```
adapter_config.json           peft's LoraConfig (rank, alpha, dropout, target_modules, modules_to_save)
adapter_model.safetensors     the LoRA A/B weights (and the condition adapter when it was trained), named
                              base_model.model.<our module path>.lora_A.weight, as PeftModel saves them
```

Targets are Linear leaf names (peft matches a name against the end of each module path): the default
adapts every attention projection and both MLP layers of every block. `train_adapter` trains the condition
adapter (`MfM.adapter`) fully, through peft's `modules_to_save`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from safetensors.torch import load_file, save_file
from torch import nn

from model.mfm import MfM

LORA_TARGETS = MfM.lora_targets  # self/cross-attention projections and the MLP
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel's names for the wrapped model's modules
CONDITION_ADAPTER = "adapter"  # MfM.adapter, trained fully with `train_adapter`
ADAPTER_NAME = "default"  # peft's adapter name; one adapter at a time


def linear_names(model: nn.Module) -> list[str]:
    """The distinct leaf names of the model's Linear layers (what a LoRA target may name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear) and name})


def check_targets(model: nn.Module, targets: list[str] | tuple[str, ...]) -> None:
    """Refuse targets that name no Linear layer of `model` (peft itself refuses only when none matches)."""
    names = linear_names(model)
    missing = [t for t in targets if t not in names]
    if missing or not targets:
        raise ValueError(f"LoRA targets {missing or list(targets)} name no Linear layer of the model; "
                         f"its Linear layers are named: {', '.join(names)}")  # fmt: skip


def lora_config(
    rank: int, alpha: float, dropout: float = 0.0, targets=LORA_TARGETS, train_adapter: bool = False
) -> LoraConfig:
    """peft's LoraConfig for MfM: B starts at zero, so the adapted model starts as the base."""
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=sorted(targets),
        modules_to_save=[CONDITION_ADAPTER] if train_adapter else None,
        bias="none",
    )


def add_lora(model: MfM, config: LoraConfig) -> MfM:
    """Inject the adapters in place (peft freezes every other parameter); returns `model`."""
    check_targets(model, sorted(config.target_modules))
    return inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)


def lora_state_dict(model: MfM, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter weights by peft's names (`state`: the model's parameters by name, e.g. gathered from ZeRO-3
    partitions; default the model's own state dict)."""
    return get_peft_model_state_dict(model, state_dict=state, adapter_name=ADAPTER_NAME)


def save_lora(folder: str | Path, config: LoraConfig, state: dict[str, torch.Tensor]) -> None:
    """Write an adapter folder in peft's format from `lora_state_dict`'s output."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    weights = {PEFT_PREFIX + k: v.detach().float().contiguous() for k, v in state.items()}
    save_file(weights, folder / ADAPTER_WEIGHTS, metadata={"format": "pt"})


def adapter_folder(path: str | Path) -> Path:
    """An adapter folder, or a trainer step folder holding one as `lora/`."""
    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file() and (path / "lora" / ADAPTER_CONFIG).is_file():
        path = path / "lora"
    if not (path / ADAPTER_CONFIG).is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{path}: no {ADAPTER_CONFIG} + {ADAPTER_WEIGHTS} (a peft LoRA adapter folder)")
    return path


def load_lora(model: MfM, path: str | Path, scale: float = 1.0) -> MfM:
    """Inject the adapter saved at `path` into `model` and load its weights; `scale` multiplies its
    alpha/rank scaling (0: the base model). Returns `model`, with the adapters active."""
    folder = adapter_folder(path)
    config = LoraConfig.from_pretrained(str(folder))
    if config.peft_type != "LORA":
        raise ValueError(f"{folder}: a {config.peft_type} adapter, not LoRA")
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in load_file(folder / ADAPTER_WEIGHTS).items()}
    add_lora(model, config)
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if "lora_" in k or CONDITION_ADAPTER + ".modules_to_save" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"{folder}: the adapter does not fit the model: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")  # fmt: skip
    param = next(model.parameters())
    model.to(param.device, param.dtype)  # the loaded adapter weights to the base's device and dtype
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_scale(ADAPTER_NAME, scale)
    return model


def merge_lora(model: MfM) -> MfM:
    """Merge the adapters into the base weights (peft's merge) and remove peft's layers, in place: the
    result has our plain parameter names again (`save_pretrained`, `export_release`). As peft's
    `merge_and_unload`, for a model that `inject_adapter_in_model` adapted."""
    tuned = [name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer | AuxiliaryTrainingWrapper)]
    for name in tuned:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        module = getattr(parent, child)
        if hasattr(module, "unload_and_optionally_merge_module"):  # modules_to_save: the trained copy
            setattr(parent, child, module.unload_and_optionally_merge_module(merge=True, safe_merge=True,
                                                                             adapter_names=None))
        else:
            module.merge(safe_merge=True)
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model
