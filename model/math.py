"""Pure functions of the MfM transformer: 3D RoPE and the one attention entry point.

Layouts: q, k, v are (B, N, H, Dh) ("bshd"); RoPE tables are (N, Dh) cos and sin, or (B, N, Dh).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# Channels of one 64-wide head given to t, h, w: 2/8, 3/8, 3/8 (paper §3.2; release: 16 | 24 | 24).
ROPE_AXES_FRACTION = (2, 3, 3)

ATTENTION_BACKENDS: dict[str, list[SDPBackend] | None] = {
    "auto": None,  # let PyTorch choose
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "math": [SDPBackend.MATH],
}


def rope_axes_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels per axis (t, h, w) of one head, each even: 64 -> (16, 24, 24)."""
    unit = head_dim // sum(ROPE_AXES_FRACTION)
    dims = tuple(f * unit for f in ROPE_AXES_FRACTION)
    if sum(dims) != head_dim or any(d % 2 for d in dims):
        raise ValueError(f"head_dim {head_dim} does not split into even t:h:w = 2:3:3 RoPE channels")
    return dims  # type: ignore[return-value]


def rope_3d(
    grid: tuple[int, int, int],
    head_dim: int,
    theta: float = 10000.0,
    offset: tuple[int, int, int] = (0, 0, 0),
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables (N, head_dim) for a (t, h, w) token grid in (t, h, w) order, w fastest.

    Each axis gets its share of channels; frequency j of an axis with d channels is theta^(-2j/d), and
    is used by the adjacent channel pair (2j, 2j+1). Positions are integers from `offset`.
    """
    tables = []
    for n, d, start in zip(grid, rope_axes_dims(head_dim), offset):
        freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)  # (d/2,)
        pos = torch.arange(start, start + n, dtype=torch.float64, device=device)
        tables.append(torch.outer(pos, freqs).repeat_interleave(2, dim=-1))  # (n, d)
    t, h, w = grid
    angles = torch.cat(
        [
            tables[0][:, None, None].expand(t, h, w, -1),
            tables[1][None, :, None].expand(t, h, w, -1),
            tables[2][None, None, :].expand(t, h, w, -1),
        ],
        dim=-1,
    ).reshape(t * h * w, head_dim)  # (N, head_dim)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs: out[2i] = x[2i]·cos − x[2i+1]·sin, out[2i+1] = x[2i+1]·cos + x[2i]·sin.

    x: (B, N, H, Dh); cos, sin: (N, Dh) or (B, N, Dh).
    """
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, :, None].to(x.dtype), sin[:, :, None].to(x.dtype)  # (B|1, N, 1, Dh)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (-x1, x0) per pair
    return x * cos + rotated * sin


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Scaled dot-product attention on (B, N, H, Dh) tensors with an optional additive bias.

    bias broadcasts to (B, H, Nq, Nk). `backend` picks the SDPA kernel (see ATTENTION_BACKENDS).
    """
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, Dh)
    kernels = ATTENTION_BACKENDS[backend]
    if kernels is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    else:
        with sdpa_kernel(kernels):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out.transpose(1, 2)  # (B, N, H, Dh)
