"""RAFT optical flow (torchvision `raft_small` / `raft_large`) with weights from a local state dict.

Shared by curation's motion stage and the benchmark's dynamic degree. torchvision's `Raft_Large_Weights.C_T_V1`
are the RAFT authors' `raft-things.pth` ported, the checkpoint VBench's dynamic degree uses. torch is imported
inside the functions so that importing this module (e.g. on a Ray driver) stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RAFT_VARIANTS = ("raft_small", "raft_large")


def raft_state(path: str | Path) -> dict[str, Any]:
    """A RAFT state dict from a local .safetensors file, or a .pt / .pth read with weights_only=True."""
    import torch
    from safetensors.torch import load_file

    if str(path).endswith(".safetensors"):
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in state.items()}  # files saved from DataParallel


def guess_raft_variant(state: dict[str, Any]) -> str:
    """`raft_large` or `raft_small`, read from the shapes (the large feature encoder starts with 64 channels)."""
    key = "feature_encoder.convnormrelu.0.weight"
    if key not in state:
        raise ValueError(f"not a torchvision RAFT state dict (no {key!r})")
    return "raft_large" if state[key].shape[0] == 64 else "raft_small"


def load_raft(variant: str | None, weights: str | Path | None) -> Any:
    """torchvision RAFT with weights from a local .safetensors / .pt state dict (None: random init).
    `variant` None: read it from the weights' shapes."""
    from torchvision.models import optical_flow

    state = raft_state(weights) if weights is not None else None
    if variant is None:
        if state is None:
            raise ValueError("load_raft needs a variant or a weights file")
        variant = guess_raft_variant(state)
    if variant not in RAFT_VARIANTS:
        raise ValueError(f"RAFT variant {variant!r} is not one of {RAFT_VARIANTS}")
    model = getattr(optical_flow, variant)(weights=None, progress=False)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def save_raft(model: Any, path: str | Path) -> Path:
    """Write a RAFT state dict as safetensors (e.g. a random-init one for tests)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return Path(path)
