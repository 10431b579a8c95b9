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

# Release constructor arguments we support, with the values our model implements. A key missing from a
# released config.json takes the release constructor's default (`_RELEASE_DEFAULTS`), as diffusers does.
_REQUIRED_RELEASE_VALUES = {
    "activation_fn": "gelu-approximate",
    "norm_type": "ada_norm_zero_nolabel",
    "condition_type": "inpaint_mask",
    "use_rope": True,
    "add_motion_score": True,
    "patch_size_t": 1,
    "attention_bias": True,
    "only_cross_attention": False,
    "double_self_attention": False,
}

# `Transformer3DModel.__init__`'s defaults for the keys we read.
_RELEASE_DEFAULTS = {
    "num_layers": 1,
    "num_attention_heads": 16,
    "attention_head_dim": 88,
    "activation_fn": "geglu",
    "norm_type": "layer_norm",
    "adaln_norm_type": "legacy",
    "condition_type": "inpaint_mask",
    "use_rope": False,
    "add_motion_score": False,
    "patch_size_t": 1,
    "attention_bias": False,
    "only_cross_attention": False,
    "double_self_attention": False,
    "cross_attention_dim": None,
    "patch_size": 2,
    "upcast_attention": False,
    "use_depth_cond": False,
}

# AdaLN's norm: "legacy" and "layernorm" are both LayerNorm ("rmsnorm" would add a weight MfM does not have).
_RELEASE_ADALN_NORMS = ("legacy", "layernorm")

# Arguments the release's blocks accept and never read: its norms hard-code eps 1e-6 and have no affine
# switch. Read as anything, written as these values (norm_eps is the eps that actually runs).
_IGNORED_RELEASE_VALUES = {"norm_eps": 1e-6, "norm_elementwise_affine": False}
RELEASE_NORM_EPS = 1e-6

# `sample_size` must be set (the release asserts it), but with RoPE it only sizes a sin-cos position table the
# release never builds: no weight and no output depends on it. 32 is what the release's tiny configs carry.
RELEASE_SAMPLE_SIZE = 32


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


def _release_value(raw: dict, key: str):
    return raw.get(key, _RELEASE_DEFAULTS[key])


def _text_dim_from_release(raw: dict) -> int:
    """`cross_attention_dim`: an int, or a list where block d uses entry d % 2 (the release alternates two text
    encoders over the blocks). MfM has one text input, so every block must get the same width."""
    dims = _release_value(raw, "cross_attention_dim")
    if dims is None:
        raise ValueError("release config cross_attention_dim=None (no cross-attention) is not supported")
    if not isinstance(dims, list | tuple):
        return int(dims)
    num_layers = _release_value(raw, "num_layers")
    if len(dims) < min(2, num_layers):
        raise ValueError(f"release config cross_attention_dim={dims!r} has fewer entries than its blocks use")
    used = {dims[d % 2] for d in range(num_layers)}
    if len(used) != 1 or None in used:
        raise ValueError(f"release config cross_attention_dim={dims!r} gives blocks different text widths "
                         "(two alternating text encoders): not supported, MfM has one text input")
    return int(used.pop())


def config_from_release(raw: dict) -> MfMConfig:
    """The release's config.json -> MfMConfig, with the release's semantics: missing keys take its
    constructor's defaults, `norm_eps` and `norm_elementwise_affine` are ignored (eps is always 1e-6),
    `cross_attention_dim` may be a list. Unsupported settings are rejected with their key and value."""
    for key, value in _REQUIRED_RELEASE_VALUES.items():
        if _release_value(raw, key) != value:
            raise ValueError(f"release config {key}={_release_value(raw, key)!r} is not supported "
                             f"(MfM implements {value!r})")
    if _release_value(raw, "adaln_norm_type") not in _RELEASE_ADALN_NORMS:
        raise ValueError(f"release config adaln_norm_type={raw['adaln_norm_type']!r} is not supported "
                         f"(MfM implements {' / '.join(_RELEASE_ADALN_NORMS)})")
    out_channels = raw.get("out_channels")
    if out_channels is None:  # the release's default: as many as in_channels
        out_channels = raw.get("in_channels")
    if raw.get("in_channels") != out_channels:
        raise ValueError(f"release config in_channels={raw.get('in_channels')} != out_channels={out_channels}: "
                         "not supported")
    return MfMConfig(
        num_layers=_release_value(raw, "num_layers"),
        num_heads=_release_value(raw, "num_attention_heads"),
        head_dim=_release_value(raw, "attention_head_dim"),
        text_dim=_text_dim_from_release(raw),
        latent_channels=raw["in_channels"],
        patch_size=_release_value(raw, "patch_size"),
        use_depth=bool(_release_value(raw, "use_depth_cond")),
        norm_eps=RELEASE_NORM_EPS,
        upcast_attention=bool(_release_value(raw, "upcast_attention")),
    )


def config_to_release(cfg: MfMConfig) -> dict:
    """MfMConfig -> the release constructor's arguments (every one spelled out, as the release writes them).
    A norm eps other than the release's fixed 1e-6 cannot be expressed and is refused."""
    if cfg.norm_eps != RELEASE_NORM_EPS:
        raise ValueError(f"MfMConfig.norm_eps={cfg.norm_eps} cannot be exported: the release's norms always "
                         f"use {RELEASE_NORM_EPS}")
    return {
        "_class_name": "Transformer3DModel",
        **_REQUIRED_RELEASE_VALUES,
        **_IGNORED_RELEASE_VALUES,
        "adaln_norm_type": _RELEASE_ADALN_NORMS[0],
        "attention_head_dim": cfg.head_dim,
        "attention_type": "default",
        "cross_attention_dim": cfg.text_dim,
        "dropout": 0.0,
        "in_channels": cfg.latent_channels,
        "num_attention_heads": cfg.num_heads,
        "num_layers": cfg.num_layers,
        "out_channels": cfg.latent_channels,
        "patch_size": cfg.patch_size,
        "sample_size": RELEASE_SAMPLE_SIZE,
        "sequence_parallel_size": 0,
        "upcast_attention": cfg.upcast_attention,
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
