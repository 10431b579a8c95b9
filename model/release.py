"""Conversion between the released MfM transformer (diffusers-style `transformer/` folder of leeruibin/MfM's
`Transformer3DModel`) and our `MfM`: config, weight names, export back to the release layout, and
`load_transformer`, the one loader for either format (`MfM.from_pretrained` reads ours only).

The release's names mislead in places (`pos_embed.proj` is the patch embedding, `guidance_embedder` embeds
the motion score), so ours differ; the table below is the whole mapping, applied in both directions.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.mfm import CONFIG_NAME, MfM, MfMConfig

RELEASE_WEIGHTS = "diffusion_pytorch_model.safetensors"

# (release pattern, our pattern): the whole name mapping. `(\d+)` is a block index.
NAME_MAP: list[tuple[str, str]] = [
    (r"^cond_conv\.", "adapter."),
    (r"^pos_embed\.proj\.", "patch_embed.proj."),
    (r"^time_embedder\.timestep_embedder\.linear_1\.", "t_embedder.mlp.0."),
    (r"^time_embedder\.timestep_embedder\.linear_2\.", "t_embedder.mlp.2."),
    (r"^time_embedder\.guidance_embedder\.linear_1\.", "motion_embedder.mlp.0."),
    (r"^time_embedder\.guidance_embedder\.linear_2\.", "motion_embedder.mlp.2."),
    (r"^transformer_blocks\.(\d+)\.norm1\.linear\.", r"blocks.\1.modulation."),
    (r"^transformer_blocks\.(\d+)\.attn1\.(q|k|v|o)_proj\.", r"blocks.\1.self_attn.\2_proj."),
    (r"^transformer_blocks\.(\d+)\.attn1\.q_norm\.", r"blocks.\1.self_attn.qk_norm.query_norm."),
    (r"^transformer_blocks\.(\d+)\.attn1\.k_norm\.", r"blocks.\1.self_attn.qk_norm.key_norm."),
    (r"^transformer_blocks\.(\d+)\.norm2\.", r"blocks.\1.norm_cross."),
    (r"^transformer_blocks\.(\d+)\.attn2\.(q|k|v|o)_proj\.", r"blocks.\1.cross_attn.\2_proj."),
    (r"^transformer_blocks\.(\d+)\.attn2\.q_norm\.", r"blocks.\1.cross_attn.qk_norm.query_norm."),
    (r"^transformer_blocks\.(\d+)\.attn2\.k_norm\.", r"blocks.\1.cross_attn.qk_norm.key_norm."),
    (r"^transformer_blocks\.(\d+)\.norm3\.", r"blocks.\1.norm_mlp."),
    (r"^transformer_blocks\.(\d+)\.ff\.fc(1|2)\.", r"blocks.\1.mlp.fc\2."),
    (r"^proj_out_1\.", "final_layer.modulation."),
    (r"^proj_out_2\.", "final_layer.linear."),
]

# Release constructor arguments we support, with the values our model implements.
_REQUIRED_RELEASE_VALUES = {
    "activation_fn": "gelu-approximate",
    "norm_type": "ada_norm_zero_nolabel",
    "condition_type": "inpaint_mask",
    "use_rope": True,
    "add_motion_score": True,
    "patch_size_t": 1,
    "norm_elementwise_affine": False,
    "attention_bias": True,
    "only_cross_attention": False,
    "double_self_attention": False,
}


def _rename(name: str, table: list[tuple[str, str]]) -> str:
    for pattern, repl in table:
        new, n = re.subn(pattern, repl, name)
        if n:
            return new
    raise KeyError(name)


def state_dict_from_release(release_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Release names -> ours; a name the table does not know raises with the name."""
    out = {}
    for name, tensor in release_state.items():
        try:
            out[_rename(name, NAME_MAP)] = tensor
        except KeyError:
            raise ValueError(f"release weight {name!r} has no counterpart in MfM") from None
    return out


def state_dict_to_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> the release's (inverse of `state_dict_from_release`)."""
    inverse = {_rename(rel_name, NAME_MAP): rel_name for rel_name in _release_names_like(state)}
    return {inverse[k]: v for k, v in state.items()}


def _release_names_like(state: dict[str, torch.Tensor]) -> list[str]:
    """Every release name that maps onto one of our names, found by mapping the release's name templates."""
    num_layers = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    adapter = sorted({k[len("adapter."):] for k in state if k.startswith("adapter.")})
    names = [f"cond_conv.{k}" for k in adapter]
    names += [f"pos_embed.proj.{s}" for s in ("weight", "bias")]
    names += [
        f"time_embedder.{e}.linear_{j}.{s}"
        for e in ("timestep_embedder", "guidance_embedder")
        for j in (1, 2)
        for s in ("weight", "bias")
    ]
    for i in range(num_layers):
        b = f"transformer_blocks.{i}"
        names += [f"{b}.norm1.linear.{s}" for s in ("weight", "bias")]
        for a in (1, 2):
            names += [f"{b}.attn{a}.{p}_proj.{s}" for p in "qkvo" for s in ("weight", "bias")]
            names += [f"{b}.attn{a}.{n}_norm.weight" for n in "qk"]
        names += [f"{b}.norm2.weight", f"{b}.norm3.weight"]
        names += [f"{b}.ff.fc{j}.{s}" for j in (1, 2) for s in ("weight", "bias")]
    names += [f"proj_out_{j}.{s}" for j in (1, 2) for s in ("weight", "bias")]
    return names


def config_from_release(raw: dict) -> MfMConfig:
    """The release's config.json -> MfMConfig; unsupported settings are rejected with their key and value."""
    for key, value in _REQUIRED_RELEASE_VALUES.items():
        if key in raw and raw[key] != value:
            raise ValueError(f"release config {key}={raw[key]!r} is not supported (MfM implements {value!r})")
    if raw.get("in_channels") != raw.get("out_channels"):
        channels = raw.get("in_channels"), raw.get("out_channels")
        raise ValueError(f"release config in_channels={channels[0]} != out_channels={channels[1]}: not supported")
    return MfMConfig(
        num_layers=raw["num_layers"],
        num_heads=raw["num_attention_heads"],
        head_dim=raw["attention_head_dim"],
        text_dim=raw["cross_attention_dim"],
        latent_channels=raw["in_channels"],
        patch_size=raw["patch_size"],
        use_depth=bool(raw.get("use_depth_cond", True)),
        norm_eps=raw.get("norm_eps", 1e-6),
    )


def config_to_release(cfg: MfMConfig) -> dict:
    """MfMConfig -> the release constructor's arguments (every one spelled out, as the release writes them)."""
    return {
        "_class_name": "Transformer3DModel",
        **_REQUIRED_RELEASE_VALUES,
        "attention_head_dim": cfg.head_dim,
        "attention_type": "default",
        "cross_attention_dim": cfg.text_dim,
        "dropout": 0.0,
        "in_channels": cfg.latent_channels,
        "norm_eps": cfg.norm_eps,
        "num_attention_heads": cfg.num_heads,
        "num_layers": cfg.num_layers,
        "out_channels": cfg.latent_channels,
        "patch_size": cfg.patch_size,
        "sequence_parallel_size": 0,
        "upcast_attention": False,
        "use_depth_cond": cfg.use_depth,
        "use_navit": False,
    }


def load_release_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a released transformer folder: one safetensors file or an index of shards."""
    index = folder / f"{RELEASE_WEIGHTS}.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    files = [folder / RELEASE_WEIGHTS] if (folder / RELEASE_WEIGHTS).exists() else sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no {RELEASE_WEIGHTS} (or shards) found")
    return {k: v for f in files for k, v in load_file(f).items()}


def is_release_folder(path: str | Path) -> bool:
    """True for a released transformer folder, or a pipeline root holding one."""
    path = Path(path)
    if (path / "transformer").is_dir() and not (path / CONFIG_NAME).exists():
        path = path / "transformer"
    if not (path / CONFIG_NAME).is_file():
        return False
    return json.loads((path / CONFIG_NAME).read_text()).get("_class_name") != "MfM"


def load_transformer(
    path: str | Path,
    variant: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    **overrides,
) -> MfM:
    """Our checkpoint folder, a released `transformer/` folder, or a pipeline root holding either as
    `transformer/` -> MfM: ours through `MfM.from_pretrained` (`variant` "ema" picks the EMA weights), the
    release's through `config_from_release` and `state_dict_from_release`. `overrides` replace config fields."""
    path = Path(path)
    if (path / "transformer").is_dir() and not (path / CONFIG_NAME).exists():
        path = path / "transformer"
    if not (path / CONFIG_NAME).exists():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; expected an MfM or released transformer folder")
    raw = json.loads((path / CONFIG_NAME).read_text())
    if raw.get("_class_name") == "MfM":
        return MfM.from_pretrained(path, variant, dtype, device, **overrides)
    cfg = MfMConfig.from_dict(asdict(config_from_release(raw)) | overrides)
    return MfM.from_state_dict(cfg, state_dict_from_release(load_release_weights(path)), dtype, device)


def export_release(model: MfM, folder: str | Path) -> None:
    """Write `model` as a released-style `transformer/` folder (config.json + diffusion_pytorch_model.safetensors)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_to_release(model.config), indent=2))
    state = state_dict_to_release({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    save_file(state, folder / RELEASE_WEIGHTS, metadata={"format": "pt"})
