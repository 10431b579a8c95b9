"""MUSIQ, the multi-scale image quality transformer (Ke et al., ICCV 2021), as pyiqa ports it, without pyiqa.

Parameter names follow pyiqa's `pyiqa/archs/musiq_arch.py`, so its released checkpoints (KonIQ-10k
`musiq_koniq_ckpt-e95806b9.pth`, SPAQ `musiq_spaq_ckpt-358bb6af.pth`: the same architecture, one regression
output) load strictly. What pyiqa's eval-mode `forward` does, and we do:

    pixels [0, 1] -> [-1, 1]; per scale (longer side 224, then 384, each a bicubic resize that keeps the aspect
    ratio; then the original resolution) cut 32x32 patches with TF 'SAME' zero padding, tag each with its
    hash-grid cell (10x10) and scale id, zero-pad the resized scales to ceil(L / 32)^2 patches (mask 0);
    a BiT root + one bottleneck embeds each patch, a 14-layer ViT reads [cls, patches], a linear head on cls
    gives the MOS, about 0-100 for these checkpoints (VBench divides by 100).

`load(path)` reads a safetensors file (its metadata may name the config) or the original .pth
(`torch.load(weights_only=True)`); `python -m benchmark.vbench.musiq convert IN.pth OUT.safetensors` converts.
`PRESETS["tiny"]` is the same structure, small, for tests and the demo.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

ARCH = "musiq"


@dataclass(frozen=True)
class MusiqConfig:
    """Architecture and preprocessing; the defaults are pyiqa's `MUSIQ()` (its KonIQ / SPAQ checkpoints)."""

    patch_size: int = 32
    hidden_size: int = 384
    mlp_dim: int = 1152
    num_heads: int = 6
    num_layers: int = 14
    hash_grid: int = 10  # hash-based spatial position embedding: a hash_grid x hash_grid table
    longer_sides: tuple[int, ...] = (224, 384)  # resized scales, by longer side
    original_max_len: int | None = -1  # patches from the original resolution: -1 all, None no such scale
    stem_dim: int = 64  # BiT root width; the bottleneck gives 4x (GroupNorm(32) needs a multiple of 32)

    def __post_init__(self):
        if self.patch_size % 4 or self.hidden_size % self.num_heads or self.stem_dim % 32:
            raise ValueError(f"MusiqConfig: patch_size {self.patch_size} must be a multiple of 4, hidden_size "
                             f"{self.hidden_size} of num_heads {self.num_heads}, stem_dim {self.stem_dim} of 32")

    @property
    def num_scales(self) -> int:
        return len(self.longer_sides) + (self.original_max_len is not None)


PRESETS: dict[str, MusiqConfig] = {
    "default": MusiqConfig(),
    "tiny": MusiqConfig(patch_size=8, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=2, hash_grid=4,
                        longer_sides=(16, 32), stem_dim=32),
}  # fmt: skip


# --- preprocessing ---


class Patches(NamedTuple):
    """A multi-scale patch sequence of L patches per image (pyiqa packs the same into one tensor)."""

    pixels: torch.Tensor  # (N, L, 3 * p * p), each patch flattened channel-major (c, y, x)
    position: torch.Tensor  # (N, L) long, hash-grid cell: row * hash_grid + col
    scale: torch.Tensor  # (N, L) long, scale id (sorted longer sides, then the original)
    mask: torch.Tensor  # (N, L) bool, False for padding


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF 'SAME' zero padding of (..., H, W) for a kernel / stride, the odd pixel bottom / right."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def hash_positions(grid: int, rows: int, cols: int) -> torch.Tensor:
    """Each cell of a rows x cols patch grid -> its hash-grid cell, row-major, (rows * cols,) long.

    Row i maps to grid row floor(i * grid / rows) (nearest-neighbour resampling of arange(grid), as pyiqa
    does it with `F.interpolate`, whose float rounding we keep), likewise columns."""
    table = torch.arange(grid, dtype=torch.float32)[None, None]  # (1, 1, G)
    r = F.interpolate(table, size=rows, mode="nearest")[0, 0].long()  # (rows,)
    c = F.interpolate(table, size=cols, mode="nearest")[0, 0].long()  # (cols,)
    return (r[:, None] * grid + c[None, :]).reshape(-1)


def resize_longer_side(image: torch.Tensor, longer: int) -> torch.Tensor:
    """(N, C, H, W) -> bicubic resize (no antialias) to longer side `longer`, sides round(s * H), round(s * W)."""
    h, w = image.shape[-2:]
    s = longer / max(h, w)
    size = (max(round(h * s), 1), max(round(w * s), 1))  # >= 1: pyiqa fails on a side that rounds to 0
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False)


def scale_patches(image: torch.Tensor, patch: int, grid: int, scale_id: int, max_len: int) -> Patches:
    """(N, 3, H, W) -> its non-overlapping patches, zero-padded or cut to `max_len` (all when max_len < 0)."""
    n = image.shape[0]
    rows, cols = math.ceil(image.shape[-2] / patch), math.ceil(image.shape[-1] / patch)
    pixels = F.unfold(same_pad(image, patch, patch), patch, stride=patch).transpose(1, 2)  # (N, rows*cols, 3pp)
    position = hash_positions(grid, rows, cols).to(image.device).expand(n, -1)  # (N, rows*cols)
    scale = torch.full_like(position, scale_id)
    mask = torch.ones_like(position, dtype=torch.bool)
    if max_len < 0:
        return Patches(pixels, position, scale, mask)
    extra = max(max_len - pixels.shape[1], 0)  # padding: zero pixels, cell 0, scale 0, mask False
    return Patches(F.pad(pixels, (0, 0, 0, extra))[:, :max_len], F.pad(position, (0, extra))[:, :max_len],
                   F.pad(scale, (0, extra))[:, :max_len], F.pad(mask, (0, extra))[:, :max_len])


def multiscale_patches(image: torch.Tensor, cfg: MusiqConfig) -> Patches:
    """Normalised (N, 3, H, W) -> the patches of every scale, concatenated along L."""
    p = cfg.patch_size
    parts = [scale_patches(resize_longer_side(image, side), p, cfg.hash_grid, i, math.ceil(side / p) ** 2)
             for i, side in enumerate(sorted(cfg.longer_sides))]  # fmt: skip
    if cfg.original_max_len is not None:
        parts.append(scale_patches(image, p, cfg.hash_grid, len(cfg.longer_sides), cfg.original_max_len))
    return Patches(*(torch.cat(field, dim=1) for field in zip(*parts)))


def normalize(frames01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], MUSIQ's input range."""
    return (frames01 - 0.5) * 2


# --- patch embedder: a BiT (ResNet-v2, weight-standardised) root and one bottleneck ---


class WSConv2d(nn.Conv2d):
    """Bias-free conv with weight standardisation (per output channel, std + 1e-5) and TF 'SAME' padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(cin, cout, kernel, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(same_pad(x, self.kernel_size[0], self.stride[0]), w, None, self.stride)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convs, GroupNorm(32) after each, plus a projected shortcut; width = cin."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.gn1 = WSConv2d(cin, cin, 1), nn.GroupNorm(32, cin, eps=1e-4)
        self.conv2, self.gn2 = WSConv2d(cin, cin, 3), nn.GroupNorm(32, cin, eps=1e-4)
        self.conv3, self.gn3 = WSConv2d(cin, cout, 1), nn.GroupNorm(32, cout, eps=1e-4)
        self.conv_proj, self.gn_proj = WSConv2d(cin, cout, 1), nn.GroupNorm(32, cout, eps=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.gn_proj(self.conv_proj(x))  # (B, cout, h, w)
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        return F.relu(self.gn3(self.conv3(y)) + shortcut)  # (B, cout, h, w)


# --- transformer ---


class Attention(nn.Module):
    """Multi-head self-attention; a pair with a padded token gets logit -1e3 (pyiqa's fill, not -inf)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool -> (B, L, D)."""
        b, n, d = x.shape
        q, k, v = (f(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for f in (self.query, self.key, self.value))  # (B, nh, L, hs) each  # fmt: skip
        logits = q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5  # (B, nh, L, L)
        both = mask[:, None, :, None] & mask[:, None, None, :]  # (B, 1, L, L)
        att = logits.masked_fill(~both, -1e3).softmax(dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attention(norm1 x), then x + mlp(norm2 x)."""

    def __init__(self, dim: int, mlp_dim: int, heads: int):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class HashPositionEmbedding(nn.Module):
    """A learned (1, G * G, D) table indexed by each patch's hash-grid cell."""

    def __init__(self, grid: int, dim: int):
        super().__init__()
        self.position_emb = nn.Parameter(torch.empty(1, grid * grid, dim))
        nn.init.normal_(self.position_emb, std=0.02)

    def forward(self, position: torch.Tensor) -> torch.Tensor:
        return self.position_emb[0][position]  # (B, L, D)


class ScaleEmbedding(nn.Module):
    """A learned (S, D) table indexed by each patch's scale id."""

    def __init__(self, num_scales: int, dim: int):
        super().__init__()
        self.scale_emb = nn.Parameter(torch.empty(num_scales, dim))
        nn.init.normal_(self.scale_emb, std=0.02)

    def forward(self, scale: torch.Tensor) -> torch.Tensor:
        return self.scale_emb[scale]  # (B, L, D)


class Encoder(nn.Module):
    """Adds the position and scale embeddings, prepends cls, runs the blocks, LayerNorms."""

    def __init__(self, cfg: MusiqConfig):
        super().__init__()
        d = cfg.hidden_size
        self.posembed_input = HashPositionEmbedding(cfg.hash_grid, d)
        self.scaleembed_input = ScaleEmbedding(cfg.num_scales, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.transformer = nn.ModuleDict({f"encoderblock_{i}": EncoderBlock(d, cfg.mlp_dim, cfg.num_heads)
                                          for i in range(cfg.num_layers)})  # fmt: skip

    def forward(self, tokens: torch.Tensor, patches: Patches) -> torch.Tensor:
        """tokens (B, L, D) -> (B, 1 + L, D), cls first."""
        x = tokens + self.posembed_input(patches.position) + self.scaleembed_input(patches.scale)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + L, D)
        mask = F.pad(patches.mask, (1, 0), value=True)  # (B, 1 + L)
        for block in self.transformer.values():
            x = block(x, mask)
        return self.encoder_norm(x)


# --- the model ---


class Musiq(nn.Module):
    """Float frames (N, 3, H, W) in [0, 1] -> quality (N, 1), the checkpoint's MOS scale (0-100 for KonIQ)."""

    def __init__(self, cfg: MusiqConfig = PRESETS["default"]):
        super().__init__()
        self.cfg = cfg
        token_side = cfg.patch_size // 4  # the root conv and the pool each halve
        self.conv_root = WSConv2d(3, cfg.stem_dim, 7, stride=2)
        self.gn_root = nn.GroupNorm(32, cfg.stem_dim, eps=1e-6)
        self.block1 = Bottleneck(cfg.stem_dim, 4 * cfg.stem_dim)
        self.embedding = nn.Linear(4 * cfg.stem_dim * token_side**2, cfg.hidden_size)
        self.transformer_encoder = Encoder(cfg)
        self.head = nn.Linear(cfg.hidden_size, 1)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patches (B, L, 3 * p * p) -> tokens (B, L, D)."""
        b, n, _ = pixels.shape
        p = self.cfg.patch_size
        x = pixels.reshape(b * n, 3, p, p)
        x = F.relu(self.gn_root(self.conv_root(x)))  # (B*L, stem, p/2, p/2)
        x = F.max_pool2d(same_pad(x, 3, 2), 3, 2)  # (B*L, stem, p/4, p/4)
        x = self.block1(x)  # (B*L, 4 stem, p/4, p/4)
        return self.embedding(x.permute(0, 2, 3, 1).reshape(b, n, -1))  # channels last, as the TF original

    def score_patches(self, patches: Patches) -> torch.Tensor:
        """A patch sequence -> quality (B, 1)."""
        x = self.transformer_encoder(self.embed(patches.pixels), patches)  # (B, 1 + L, D)
        return self.head(x[:, 0])  # one class: pyiqa's dist_to_mos is the identity

    def forward(self, frames01: torch.Tensor) -> torch.Tensor:
        return self.score_patches(multiscale_patches(normalize(frames01.float()), self.cfg))


# --- files ---


def unwrap_state(state: dict) -> dict[str, torch.Tensor]:
    """pyiqa's checkpoint dict -> our state dict: the "params" entry if there is one, no "module." prefix."""
    state = state.get("params", state)
    return {k.removeprefix("module."): v for k, v in state.items()}


def config_of(path: Path) -> MusiqConfig | None:
    """The config a safetensors file's metadata names, or None."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("arch") != ARCH or "config" not in meta:
        return None
    raw = json.loads(meta["config"])
    return MusiqConfig(**{**raw, "longer_sides": tuple(raw["longer_sides"])})


def load(path: str | Path, device: str | torch.device = "cpu", cfg: MusiqConfig | None = None) -> Musiq:
    """A frozen eval-mode Musiq from safetensors or pyiqa's .pth; the file's config, else `cfg`, else the
    default. ValueError lists missing / unexpected names (the load is strict)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        cfg = config_of(path) or cfg
        state = load_file(str(path))
    else:
        state = unwrap_state(torch.load(path, map_location="cpu", weights_only=True))
    with torch.device("meta"):
        model = Musiq(cfg or PRESETS["default"])
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"musiq: {path} does not fit {model.cfg}: missing {missing[:5]} ({len(missing)}), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)})")
    model.load_state_dict(state, strict=True, assign=True)  # shape mismatches raise here
    return model.eval().requires_grad_(False).to(device)


def save(model: Musiq, path: str | Path) -> Path:
    """Safetensors with the config in the metadata, so `load` rebuilds the same structure."""
    meta = {"arch": ARCH, "config": json.dumps(asdict(model.cfg))}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return Path(path)


def tiny(seed: int = 0, **overrides) -> Musiq:
    """A random-init `PRESETS["tiny"]` (its head bias at 50, mid-scale, so scores look like MOS)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Musiq(replace(PRESETS["tiny"], **overrides))
    with torch.no_grad():
        model.head.bias.fill_(50.0)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.vbench.musiq")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="pyiqa's MUSIQ .pth -> safetensors (checked by a strict load)")
    convert.add_argument("src", type=Path)
    convert.add_argument("dst", type=Path)
    convert.add_argument("--preset", choices=sorted(PRESETS), default="default")
    args = parser.parse_args(argv)
    model = load(args.src, cfg=PRESETS[args.preset])
    save(model, args.dst)
    print(f"{args.src} -> {args.dst}: {len(model.state_dict())} tensors, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, preset {args.preset}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
