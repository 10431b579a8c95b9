"""The MfM transformer (paper §3, Table 2): a DiT with 3D full attention, cross-attention to T5, AdaLN from
timestep + motion score, 3D RoPE, QK RMSNorm over the inner dim, and a conv adapter for the 3D condition.

Reads top to bottom: helpers, embedders, attention, `MfMBlock`, `FinalLayer`, `MfM`, presets. Structure and
constants follow the released model (official-mfm-facts.md); `model/release.py` maps its weight names to ours.

`MfM.forward` takes a batch of same-size latents; `MfM.forward_packed` takes a list of latents of different
sizes and packs them into one token sequence (NaViT, the paper's multi-resolution phase): self-attention stays
within each sample, every token gets its own sample's timestep/motion modulation, text and RoPE grid, so each
output equals the unpacked one. Training concerns (activation checkpointing, compile, sharding) are applied
from outside by trainer/parallel.py; loading a released folder is model/release.py's `load_transformer`.

Precision under bf16 follows the release: with `MfMConfig.fp32_islands` these run in fp32 and cast back —
the RoPE rotation (`apply_rope`), every RMSNorm (QK-norm, `norm_cross`, `norm_mlp`; `RMSNorm`), the AdaLN
modulation outputs and the modulate op (`adaln`, `modulate`), the residual gates (`gated`), and the final
layer's modulate. Linears, LayerNorms, attention (unless `upcast_attention`) and residual sums stay in the
model's dtype. In fp32 every island is the identity.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from model.adapter import ConditionAdapter
from model.geometry import VAE_SCALING_FACTOR
from model.math import ATTENTION_BACKENDS, apply_rope, at_least_fp32, attention, rope_3d

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TEXT_PAD_BIAS = -10000.0  # additive attention bias on padded text tokens (release value)

@dataclass(frozen=True)
class MfMConfig:
    num_layers: int = 28
    num_heads: int = 28
    head_dim: int = 64
    text_dim: int = 2048  # T5 hidden size (cross-attention key/value input)
    latent_channels: int = 16  # CogVideoX VAE
    patch_size: int = 2
    mlp_ratio: int = 4
    use_depth: bool = True  # condition channels [R, G, B, depth, mask]; without depth [R, G, B, mask]
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    attention_backend: str = "auto"
    upcast_attention: bool = False  # attention kernel on fp32 q, k, v (the release's `upcast_attention`)
    fp32_islands: bool = True  # RoPE, RMSNorm, AdaLN modulate and gates in fp32 under bf16 (see module doc)
    vae_scaling_factor: float = VAE_SCALING_FACTOR  # the VAE latent scale the model is trained at

    def __post_init__(self):
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention_backend {self.attention_backend!r} is not one of {sorted(ATTENTION_BACKENDS)}"
            )
        for f in ("num_layers", "num_heads", "head_dim", "text_dim", "latent_channels", "patch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"MfMConfig.{f} must be >= 1, got {getattr(self, f)}")

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def cond_channels(self) -> int:
        return 5 if self.use_depth else 4

    @classmethod
    def from_dict(cls, d: dict) -> MfMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MfMConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)


#################################################################################
#                                  Helpers                                      #
#################################################################################


def adaln(mod: torch.Tensor, fp32: bool) -> torch.Tensor:
    """An AdaLN modulation Linear's output (B, k·D), in fp32 when `fp32` (an island: shift, scale, gate)."""
    return at_least_fp32(mod) if fp32 else mod


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: x·(1 + scale) + shift on (B, N, D) tokens, computed in shift's dtype (fp32 under the islands)
    and returned in x's; shift and scale come from `per_token`."""
    return (x.to(shift.dtype) * (1 + scale) + shift).to(x.dtype)


def gated(gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """AdaLN-Zero's residual branch gate·y, computed in gate's dtype (fp32 under the islands), in y's dtype."""
    return (gate * y.to(gate.dtype)).to(y.dtype)


@dataclass(frozen=True)
class Packing:
    """Samples packed into one sequence (batch 1): the sample of every (local) token, and each sample's length.

    `sample_of_token` follows the tokens through sequence-parallel sharding; `seq_lens` always describes the
    full sequence (what attention sees after Ulysses' all-to-all).
    """

    sample_of_token: torch.Tensor  # (N,) long
    seq_lens: tuple[int, ...]  # tokens per sample, summing to N


def per_token(mod: torch.Tensor, packing: Packing | None) -> torch.Tensor:
    """Per-sample modulation (B, k·D) -> broadcast over tokens: (B, 1, k·D), or (1, N, k·D) when packed."""
    return mod[:, None] if packing is None else mod[packing.sample_of_token][None]


def sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) -> (B, dim) = [cos | sin] with freq_k = max_period^(-k / (dim/2 - 1)) (diffusers' Timesteps with
    flip_sin_to_cos=True, downscale_freq_shift=1). t is used as given (0–1000 timesteps, raw motion score)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


#################################################################################
#                               Embedders                                       #
#################################################################################


class ScalarEmbedder(nn.Module):
    """A scalar per sample (timestep or motion score) -> (B, D) via a 256-channel sinusoid and a 2-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoid(s, self.freq_dim).to(self.mlp[0].weight.dtype))  # (B, D)


class PatchEmbed(nn.Module):
    """Latent (B, C, T, h, w) -> tokens on a (T, h/p, w/p) grid, width D: a per-frame p×p conv, no temporal patch."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = self.proj(x.transpose(1, 2).flatten(0, 1))  # (B·T, D, h/p, w/p)
        return y.unflatten(0, (b, -1)).transpose(1, 2)  # (B, D, T, h/p, w/p)


#################################################################################
#                                Attention                                      #
#################################################################################


class RMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` (same `weight`) that, with `fp32`, normalises and applies the weight in fp32 and returns
    the input's dtype, as the release's RMSNorm does; fp32 and fp64 inputs take `nn.RMSNorm`'s own path."""

    def __init__(self, dim: int, eps: float, fp32: bool = True):
        super().__init__(dim, eps=eps)
        self.fp32 = fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fp32 or x.dtype in (torch.float32, torch.float64):
            return super().forward(x)
        return (F.rms_norm(x.float(), self.normalized_shape, eps=self.eps) * self.weight.float()).to(x.dtype)


class QKNorm(nn.Module):
    """RMSNorm of queries and keys over the whole inner dim (all heads at once), each with its own weight."""

    def __init__(self, dim: int, eps: float, fp32: bool = True):
        super().__init__()
        self.query_norm = RMSNorm(dim, eps, fp32)
        self.key_norm = RMSNorm(dim, eps, fp32)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q), self.key_norm(k)


class CoreAttention(nn.Module):
    """softmax(q·kᵀ/√d + bias)·v on (B, N, H, Dh). Its own module so sequence parallelism can wrap it.

    With `seq_lens` (packed samples) attention is block-diagonal: one kernel call per sample's span. `upcast`
    runs the kernel in fp32 (see `attention`).
    """

    def __init__(self, backend: str = "auto", upcast: bool = False):
        super().__init__()
        self.backend = backend
        self.upcast = upcast

    def forward(self, q, k, v, bias: torch.Tensor | None = None, seq_lens: tuple[int, ...] | None = None):
        if seq_lens is None:
            return attention(q, k, v, bias, backend=self.backend, upcast=self.upcast)
        spans = zip(q.split(seq_lens, dim=1), k.split(seq_lens, dim=1), v.split(seq_lens, dim=1))
        outs = [attention(*qkv, backend=self.backend, upcast=self.upcast) for qkv in spans]
        return torch.cat(outs, dim=1)  # (1, N, H, Dh)


class Attention(nn.Module):
    """Multi-head attention with biased projections, QK-norm, and RoPE on the queries (and on the keys when
    they are the same tokens). Self-attention when `context` is None, cross-attention otherwise."""

    def __init__(self, cfg: MfMConfig, context_dim: int):
        super().__init__()
        dim = cfg.dim
        self.num_heads = cfg.num_heads
        self.fp32_rope = cfg.fp32_islands
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(context_dim, dim)
        self.v_proj = nn.Linear(context_dim, dim)
        self.o_proj = nn.Linear(dim, dim)
        self.qk_norm = QKNorm(dim, cfg.norm_eps, cfg.fp32_islands)
        self.core_attention = CoreAttention(cfg.attention_backend, cfg.upcast_attention)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        context: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        seq_lens: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        kv_in = x if context is None else context
        q, k = self.qk_norm(self.q_proj(x), self.k_proj(kv_in))  # (B, N, D), (B, L, D)
        v = self.v_proj(kv_in)
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)) for t in (q, k, v))  # (B, N|L, H, Dh)
        q = apply_rope(q, *rope, fp32=self.fp32_rope)
        if context is None:
            k = apply_rope(k, *rope, fp32=self.fp32_rope)
        out = self.core_attention(q, k, v, bias, seq_lens)  # (B, N, H, Dh)
        return self.o_proj(out.flatten(-2))  # (B, N, D)


#################################################################################
#                                 Core MfM                                      #
#################################################################################


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class MfMBlock(nn.Module):
    """GoKu block: AdaLN-Zero self-attention, plain cross-attention to text, AdaLN-Zero gated MLP."""

    def __init__(self, cfg: MfMConfig):
        super().__init__()
        d = cfg.dim
        self.fp32_adaln = cfg.fp32_islands
        self.modulation = nn.Linear(d, 6 * d)
        self.norm_attn = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.self_attn = Attention(cfg, d)
        self.norm_cross = RMSNorm(d, cfg.norm_eps, cfg.fp32_islands)
        self.cross_attn = Attention(cfg, cfg.text_dim)
        self.norm_mlp = RMSNorm(d, cfg.norm_eps, cfg.fp32_islands)
        self.mlp = MLP(d, cfg.mlp_ratio * d)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        text: torch.Tensor,
        text_bias: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        packing: Packing | None = None,
    ) -> torch.Tensor:
        mod = per_token(adaln(self.modulation(F.silu(c)), self.fp32_adaln), packing)  # (B, 1, 6D) or (1, N, 6D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        seq_lens = None if packing is None else packing.seq_lens
        attn = self.self_attn(modulate(self.norm_attn(x), shift_msa, scale_msa), rope, seq_lens=seq_lens)
        x = x + gated(gate_msa, attn)
        x = x + self.cross_attn(self.norm_cross(x), rope, context=text, bias=text_bias)
        x = x + gated(gate_mlp, self.mlp(modulate(self.norm_mlp(x), shift_mlp, scale_mlp)))
        return x  # (B, N, D)


class FinalLayer(nn.Module):
    """AdaLN (shift, scale) then a linear to p·p·C values per token."""

    def __init__(self, cfg: MfMConfig):
        super().__init__()
        d = cfg.dim
        self.fp32_adaln = cfg.fp32_islands
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.modulation = nn.Linear(d, 2 * d)
        self.linear = nn.Linear(d, cfg.patch_size**2 * cfg.latent_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor, packing: Packing | None = None) -> torch.Tensor:
        shift, scale = per_token(adaln(self.modulation(F.silu(c)), self.fp32_adaln), packing).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, p·p·C)


class TokenSharding(nn.Module):
    """Where sequence parallelism splits the token sequence and gathers it back: identity on one device.

    trainer/parallel.py swaps in a split/gather over its process group; the model holds no collectives.
    """

    def shard(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x

    def gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x


class MfM(nn.Module):
    """Velocity prediction v(x_t, t, motion, text, 3D condition) on CogVideoX latents."""

    _no_split_modules = ("MfMBlock",)
    # Linear leaf names LoRA adapts by default (model/lora.py): every attention projection and both MLP layers
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")

    def __init__(self, cfg: MfMConfig):
        super().__init__()
        self.config = cfg
        d = cfg.dim
        self.adapter = ConditionAdapter(cfg.cond_channels, d)
        self.patch_embed = PatchEmbed(cfg.latent_channels, d, cfg.patch_size)
        self.t_embedder = ScalarEmbedder(d)
        self.motion_embedder = ScalarEmbedder(d)
        self.blocks = nn.ModuleList(MfMBlock(cfg) for _ in range(cfg.num_layers))
        self.final_layer = FinalLayer(cfg)
        self.token_sharding = TokenSharding()
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier Linears with zero bias; AdaLN modulations and the output layer at zero, so every block starts
        as the identity and the model predicts zero velocity. (The adapter zeroes its own conv_out.)"""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for block in self.blocks:
            nn.init.zeros_(block.modulation.weight)
            nn.init.zeros_(block.modulation.bias)
        for layer in (self.final_layer.modulation, self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        cond_pixels: torch.Tensor,
        cond_depth: torch.Tensor,
        cond_mask: torch.Tensor,
        motion_score: torch.Tensor,
    ) -> torch.Tensor:
        """
        x:            (B, C, t, h, w) noisy latent (samples of different sizes: `forward_packed`)
        timestep:     (B,) on the 0–1000 scale (1000 = pure noise)
        text:         (B, L, text_dim) T5 states; text_mask (B, L), 1/True = real token, 0 = padding
        cond_pixels:  (B, 3, T, H, W) RGB in [-1, 1] times the mask, T = 4(t-1)+1, H = 8h, W = 8w
        cond_depth:   (B, 1, T, H, W) raw depth on given frames of generation tasks, else 0
        cond_mask:    (B, 1, T, H, W) 1 = given pixel, 0 = to generate
        motion_score: (B,) raw motion score (5 for video by default, 0 for images)
        returns       (B, C, t, h, w) velocity (noise − x0)
        """
        cfg, p = self.config, self.config.patch_size
        b, _, t, h, w = x.shape
        grid = (t, h // p, w // p)
        tokens = self.embed(x, cond_pixels, cond_depth, cond_mask)  # (B, N, D), (t, h, w) order, w fastest
        c = self.t_embedder(timestep) + self.motion_embedder(motion_score)  # (B, D)
        text = text.to(x.dtype)
        text_bias = ((1.0 - text_mask.to(x.dtype)) * TEXT_PAD_BIAS)[:, None, None]  # (B, 1, 1, L)
        rope = rope_3d(grid, cfg.head_dim, cfg.rope_theta, device=x.device)  # (N, Dh) cos, sin
        out = self.transformer(tokens, c, text, text_bias, rope)  # (B, N, p·p·C)
        return self.unpatchify(out, grid)

    def embed(self, x: torch.Tensor, cond_pixels, cond_depth, cond_mask) -> torch.Tensor:
        """Latent (B, C, t, h, w) + pixel condition -> tokens (B, N, D): patch embedding plus the adapter."""
        parts = [cond_pixels, cond_depth, cond_mask] if self.config.use_depth else [cond_pixels, cond_mask]
        cond = torch.cat(parts, dim=1).to(x.dtype)  # (B, C_cond, T, H, W)
        tokens = self.patch_embed(x) + self.adapter(cond)  # (B, D, t, h/p, w/p)
        return tokens.flatten(2).transpose(1, 2)  # (B, N, D)

    def transformer(
        self,
        tokens: torch.Tensor,
        c: torch.Tensor,
        text: torch.Tensor,
        text_bias: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        packing: Packing | None = None,
    ) -> torch.Tensor:
        """The blocks and the final layer, (B, N, D) -> (B, N, p·p·C), the sequence split across
        sequence-parallel ranks in between (`token_sharding`; identity on one device)."""
        shard = self.token_sharding.shard
        tokens = shard(tokens, dim=1)  # (B, N/sp, D)
        rope = tuple(shard(r, dim=0) for r in rope)
        if packing is not None:  # per-token sample ids and text bias follow the tokens
            packing = Packing(shard(packing.sample_of_token, dim=0), packing.seq_lens)
            text_bias = shard(text_bias, dim=2)  # (1, 1, N/sp, S·L)
        tokens = self.run_blocks(tokens, c, text, text_bias, rope, packing)
        out = self.final_layer(tokens, c, packing)  # (B, N/sp, p·p·C)
        return self.token_sharding.gather(out, dim=1)  # (B, N, p·p·C)

    def run_blocks(
        self,
        tokens: torch.Tensor,
        c: torch.Tensor,
        text: torch.Tensor,
        text_bias: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        packing: Packing | None = None,
    ) -> torch.Tensor:
        """The block stack on (B, N/sp, D) tokens; `model.step_cache` replaces it on an instance to reuse work
        between sampling steps."""
        for block in self.blocks:
            tokens = block(tokens, c, text, text_bias, rope, packing)
        return tokens

    def forward_packed(
        self,
        xs: list[torch.Tensor],
        timestep: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        cond_pixels: list[torch.Tensor],
        cond_depth: list[torch.Tensor],
        cond_mask: list[torch.Tensor],
        motion_score: torch.Tensor,
    ) -> list[torch.Tensor]:
        """S samples of different sizes as one sequence (NaViT); output i equals the unpacked forward of sample i.

        xs: S latents (C, t, h, w); cond_*: S pixel conditions (3 | 1, T, H, W); timestep, motion_score (S,);
        text (S, L, text_dim) and text_mask (S, L). Returns S velocities (C, t, h, w).
        Self-attention is block-diagonal (`CoreAttention` with `seq_lens`); cross-attention reads all S·L
        text tokens with the other samples' tokens masked like padding, so every token sees its own text only.
        """
        cfg, p = self.config, self.config.patch_size
        grids = [(x.shape[1], x.shape[2] // p, x.shape[3] // p) for x in xs]
        seq_lens = tuple(math.prod(g) for g in grids)
        embedded = [self.embed(x[None], px[None], d[None], m[None]) for x, px, d, m in
                    zip(xs, cond_pixels, cond_depth, cond_mask)]  # fmt: skip
        tokens = torch.cat(embedded, dim=1)  # (1, N, D)
        dtype, device = tokens.dtype, tokens.device
        c = self.t_embedder(timestep) + self.motion_embedder(motion_score)  # (S, D)
        s, length = text_mask.shape
        sample_of_token = torch.repeat_interleave(torch.arange(s, device=device), torch.tensor(seq_lens, device=device))
        sample_of_text = torch.arange(s, device=device).repeat_interleave(length)  # (S·L,)
        keep = (sample_of_token[:, None] == sample_of_text[None]) & text_mask.bool().flatten()[None]  # (N, S·L)
        text_bias = ((~keep).to(dtype) * TEXT_PAD_BIAS)[None, None]  # (1, 1, N, S·L)
        ropes = [rope_3d(g, cfg.head_dim, cfg.rope_theta, device=device) for g in grids]
        rope = (torch.cat([r[0] for r in ropes]), torch.cat([r[1] for r in ropes]))  # (N, Dh) cos, sin
        packing = Packing(sample_of_token, seq_lens)
        out = self.transformer(tokens, c, text.to(dtype).flatten(0, 1)[None], text_bias, rope, packing)  # (1, N, ·)
        return [self.unpatchify(o, g)[0] for o, g in zip(out.split(seq_lens, dim=1), grids)]

    def unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, N, p·p·C), channel index (pᵢ·p + qᵢ)·C + c -> (B, C, t, h, w)."""
        p, c = self.config.patch_size, self.config.latent_channels
        t, gh, gw = grid
        out = out.reshape(out.shape[0], t, gh, gw, p, p, c)
        out = torch.einsum("nfhwpqc->ncfhpwq", out)
        return out.reshape(out.shape[0], c, t, gh * p, gw * p)

    # ---- FLOPs (for MFU) --------------------------------------------------------------------------------

    def forward_flops(self, num_tokens: int, text_len: int = 77) -> int:
        """Matmul FLOPs of one forward per sample of `num_tokens` tokens: 2 per multiply-add of every block
        Linear, plus attention as 4·N²·D (self) and 4·N·L·D (cross) per layer. Embedders and the adapter are
        left out (well under 1% at every training size)."""
        cfg, d, n = self.config, self.config.dim, num_tokens
        per_layer = (
            2 * n * (4 * d * d)  # self-attention q, k, v, o
            + 2 * n * (2 * d * d) + 2 * text_len * (2 * cfg.text_dim * d)  # cross q, o | k, v
            + 2 * n * (2 * cfg.mlp_ratio * d * d)  # MLP
            + 4 * n * n * d  # self-attention scores and weighted sum
            + 4 * n * text_len * d  # cross-attention
        )
        modulation = 2 * (6 * d * d) * cfg.num_layers  # once per sample, not per token
        final = 2 * n * d * cfg.patch_size**2 * cfg.latent_channels + 2 * (2 * d * d)
        return cfg.num_layers * per_layer + modulation + final

    # ---- save / load (diffusers-style: config.json + safetensors) ----------------------------------------

    def save_pretrained(self, path: str | Path, variant: str | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps({"_class_name": "MfM", **asdict(self.config)}, indent=2))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, path / _weights_name(variant), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        variant: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        **overrides,
    ) -> MfM:
        """Load our checkpoint folder (`save_pretrained`'s config.json + safetensors); `overrides` replace config
        fields. A released `transformer/` folder or pipeline root loads with `model.release.load_transformer`."""
        path = Path(path)
        if not (path / CONFIG_NAME).exists():
            raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; expected an MfM checkpoint folder (a pipeline root "
                                    "or a released folder loads with model.release.load_transformer)")
        raw = json.loads((path / CONFIG_NAME).read_text())
        if raw.get("_class_name") != "MfM":
            raise ValueError(f"{path} is not an MfM checkpoint folder (its config's _class_name is "
                             f"{raw.get('_class_name')!r}); load a released folder with model.release.load_transformer")
        cfg = MfMConfig.from_dict({k: v for k, v in raw.items() if k != "_class_name"} | overrides)
        return cls.from_state_dict(cfg, load_file(path / _weights_name(variant)), dtype, device)

    @classmethod
    def from_state_dict(
        cls,
        cfg: MfMConfig,
        state: dict[str, torch.Tensor],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> MfM:
        """Build on the meta device and load `state`, which must hold every parameter by our names."""
        with torch.device("meta"):
            model = cls(cfg)
        model.load_state_dict_strict(state)
        return model.to(device=device, dtype=dtype)

    def load_state_dict_strict(self, state: dict[str, torch.Tensor]) -> None:
        """Load every parameter (built on meta or not), failing with the missing and unexpected names."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and state[k].shape != v.shape]
        if missing or unexpected or wrong:
            raise ValueError(f"state dict does not fit MfM{self.config}: missing {missing}, "
                             f"unexpected {unexpected}, wrong shapes {wrong}")
        self.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)


def _weights_name(variant: str | None) -> str:
    return WEIGHTS_NAME if variant is None else WEIGHTS_NAME.replace(".safetensors", f".{variant}.safetensors")


#################################################################################
#                                 Presets                                       #
#################################################################################

MFM_CONFIGS: dict[str, MfMConfig] = {
    "tiny": MfMConfig(num_layers=2, num_heads=2, head_dim=64, text_dim=32),
    "2b": MfMConfig(num_layers=28, num_heads=28, head_dim=64, text_dim=2048),  # D 1792, FFN 7168
    "8b": MfMConfig(num_layers=40, num_heads=48, head_dim=64, text_dim=2048),  # D 3072, FFN 12288
}


def build_on_meta(size: str) -> MfM:
    """The model of a preset with no memory behind its parameters (for counting)."""
    if size not in MFM_CONFIGS:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(MFM_CONFIGS)}")
    with torch.device("meta"):
        return MfM(MFM_CONFIGS[size])
