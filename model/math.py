"""Pure functions of the MfM transformer: 3D RoPE and the one attention entry point.

Layouts: q, k, v are (B, N, H, Dh) ("bshd"); RoPE tables are (N, Dh) cos and sin, or (B, N, Dh), always fp32.
Under bf16 the rotation can run in fp32 (`apply_rope(fp32=True)`) and attention can be upcast to fp32
(`attention(upcast=True)`, the release's `upcast_attention`); in fp32 both are the identity.
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


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """t in fp32 if it is of a narrower float type (bf16, fp16); fp32 and fp64 tensors are returned as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


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


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fp32: bool = True) -> torch.Tensor:
    """Rotate interleaved channel pairs: out[2i] = x[2i]·cos − x[2i+1]·sin, out[2i+1] = x[2i+1]·cos + x[2i]·sin.

    x: (B, N, H, Dh); cos, sin: (N, Dh) or (B, N, Dh). With `fp32` (the release's way) the rotation runs in
    fp32 on the fp32 tables and the result is cast back to x's dtype; without it the tables are cast to x's.
    """
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, :, None], sin[:, :, None]  # (B|1, N, 1, Dh)
    out_dtype = x.dtype
    if fp32:
        x = at_least_fp32(x)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (-x1, x0) per pair
    return (x * cos + rotated * sin).to(out_dtype)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    upcast: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention on (B, N, H, Dh) tensors with an optional additive bias.

    bias broadcasts to (B, H, Nq, Nk). `backend` picks the SDPA kernel (see ATTENTION_BACKENDS). `upcast`
    (the release's `upcast_attention`) runs the kernel on fp32 q, k, v and bias and returns q's dtype.
    """
    out_dtype = q.dtype
    if upcast:
        q, k, v = at_least_fp32(q), at_least_fp32(k), at_least_fp32(v)
        bias = None if bias is None else at_least_fp32(bias)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, Dh)
    kernels = ATTENTION_BACKENDS[backend]
    if kernels is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    else:
        with sdpa_kernel(kernels):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out.transpose(1, 2).to(out_dtype)  # (B, N, H, Dh)
