"""Random-init weights for every VBench dimension, tiny, in the formats the loaders read (tests and the demo).

Their scores are only self-consistent: the known-answer tests check what does not depend on the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, ViTModel

from benchmark.vbench import musiq
from benchmark.vbench.interpolation import TinyInterpolator, save_interpolator
from model.raft import load_raft, save_raft

TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "image_size": 224, "patch_size": 32}  # fmt: skip


def tiny_clip_vision(projection_dim: int) -> CLIPVisionModelWithProjection:
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_VIT, projection_dim=projection_dim))


def write_random_vbench_weights(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """Every --metric-weights key -> a random-init file or folder under `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / name for key, name in [
        ("dino", "dino"), ("clip_b32", "clip_b32"), ("clip_l14", "clip_l14"),
        ("laion_head", "laion_head.safetensors"), ("raft", "raft_small.safetensors"),
        ("interpolator", "interpolator.safetensors"), ("musiq", "musiq_tiny.safetensors")]}  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ViTModel(ViTConfig(**TINY_VIT), add_pooling_layer=False).save_pretrained(paths["dino"])
        tiny_clip_vision(16).save_pretrained(paths["clip_b32"])
        tiny_clip_vision(24).save_pretrained(paths["clip_l14"])
        head = torch.nn.Linear(24, 1)
        with torch.no_grad():
            head.bias.fill_(5.0)  # LAION's scores sit around 5 of 10
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, paths["laion_head"])
        save_raft(load_raft("raft_small", None), paths["raft"])
        interpolator = TinyInterpolator()
        torch.nn.init.normal_(interpolator.out.weight, std=0.01)  # not just linear blending
        save_interpolator(interpolator, paths["interpolator"])
        musiq.save(musiq.tiny(seed), paths["musiq"])
    return paths
