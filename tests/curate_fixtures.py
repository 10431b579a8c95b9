"""What the tests that run `mfm curate` end to end share: a local 2-CPU Ray, and a tiny aesthetic model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def local_ray(**init: Any) -> Iterator[str]:
    """A local Ray on 2 CPUs (quiet, no dashboard) for the block; yields its GCS address. `init`: more
    `ray.init` arguments (e.g. a runtime_env)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING", **init)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def write_tiny_aesthetic(root: Path, width: int = 24) -> tuple[Path, Path]:
    """A seeded random-init CLIP vision tower (`width` wide) and a LAION-style linear head on its embedding
    -> (model folder, head .safetensors), the RNG left as it was."""
    import torch
    from safetensors.torch import save_file

    from benchmark.vbench.random_weights import tiny_clip_vision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tiny_clip_vision(width).save_pretrained(root / "clip")
        head = torch.nn.Linear(width, 1)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, root / "head.safetensors")
    return root / "clip", root / "head.safetensors"
