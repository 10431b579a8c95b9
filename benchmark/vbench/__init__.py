"""VBench's no-prompt quality dimensions (Huang et al. 2024), computed as VBench computes them, from local weights.

Each dimension is a `Dimension` (`base.py`): `load(paths, device)` once, then `dim(video_uint8, fps)` per video,
pooled per task with `pool`. `check_request` validates names, --metric-weights keys and files before any work.

    dimension               weights (--metric-weights KEY=PATH)         VBench's network
    subject_consistency     dino=DIR (transformers ViT)                 DINO ViT-B/16
    background_consistency  clip_b32=DIR (transformers CLIP vision)     CLIP ViT-B/32
    motion_smoothness       interpolator=FILE (see interpolation.py)    AMT-S (amt.py)
    dynamic_degree          raft=FILE (torchvision RAFT state dict)     RAFT raft-things
    aesthetic_quality       clip_l14=DIR, laion_head=FILE               CLIP ViT-L/14 + LAION linear head
    imaging_quality         musiq=FILE (MUSIQ .pth or safetensors)      MUSIQ-SPAQ
    temporal_flickering     (none)                                      -
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.vbench.aesthetic import AestheticQuality
from benchmark.vbench.base import Dimension, VideoScore, pool, to_uint8
from benchmark.vbench.consistency import BackgroundConsistency, SubjectConsistency
from benchmark.vbench.dynamic_degree import DynamicDegree
from benchmark.vbench.flickering import TemporalFlickering
from benchmark.vbench.imaging import ImagingQuality
from benchmark.vbench.motion_smoothness import MotionSmoothness

DIMENSIONS: dict[str, type[Dimension]] = {
    cls.name: cls
    for cls in (SubjectConsistency, BackgroundConsistency, MotionSmoothness, DynamicDegree, AestheticQuality,
                ImagingQuality, TemporalFlickering)
}  # fmt: skip
ALL = "vbench"  # --metrics vbench: every dimension
# Tasks the paper reports VBench columns for: Tables 4-5 (T2V, I2V) and Table 6 (inpainting, outpainting,
# first-last-frame, colorization)
PAPER_TASKS = ("t2v", "i2v", "vinp", "voutp", "flf2v", "vcolor")

__all__ = ["ALL", "DIMENSIONS", "PAPER_TASKS", "Dimension", "VideoScore", "check_request", "load_dimensions",
           "parse_weights", "pool", "to_uint8"]


def parse_weights(items: list[str]) -> dict[str, Path]:
    """["KEY=PATH", ...] -> {KEY: PATH}; ValueError names a malformed or repeated item."""
    out: dict[str, Path] = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise ValueError(f"--metric-weights {item!r}: expected KEY=PATH")
        if key in out:
            raise ValueError(f"--metric-weights: {key!r} given twice")
        out[key] = Path(path)
    return out


def expand_names(names: list[str]) -> list[str]:
    """The dimensions asked for, in DIMENSIONS order ("vbench" means all); ValueError names an unknown one."""
    unknown = sorted(set(names) - set(DIMENSIONS) - {ALL})
    if unknown:
        raise ValueError(f"--metrics {unknown}: not a dimension; choose from {[*DIMENSIONS, ALL]}")
    return [n for n in DIMENSIONS if n in names or ALL in names]


def check_request(names: list[str], paths: dict[str, Path]) -> list[str]:
    """Validate before any work: every dimension's weights given and present, no weight that none uses.
    Returns the dimension names to run."""
    names = expand_names(names)
    problems = []
    for name in names:
        for key in DIMENSIONS[name].weights:
            if key not in paths:
                problems.append(f"{name}: needs --metric-weights {key}=PATH")
            elif not paths[key].exists():
                problems.append(f"{name}: weights {key}={paths[key]}: no such file or folder")
    used = {key for name in names for key in DIMENSIONS[name].weights}
    problems += [f"--metric-weights {key}: no dimension asked for uses it" for key in sorted(set(paths) - used)]
    if problems:
        raise FileNotFoundError("; ".join(problems)) if all("no such" in p for p in problems) else ValueError(
            "; ".join(problems))
    return names


def load_dimensions(names: list[str], paths: dict[str, Path], device: str | torch.device = "cpu"
                    ) -> dict[str, Dimension]:
    """Check the request, then build each dimension's networks once."""
    return {name: DIMENSIONS[name].load(paths, device) for name in check_request(names, paths)}
