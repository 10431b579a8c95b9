"""bf16 numerics: the release's fp32 islands, `upcast_attention`, and fp32 guidance in the sampler."""

from __future__ import annotations

from dataclasses import replace

import torch
from test_model import TINY, random_inputs, randomized

from model.math import attention
from model.sampling import Conditioning, guided_velocity, sample

BF16 = torch.bfloat16


def bf16_exact(t: torch.Tensor) -> torch.Tensor:
    """t rounded to the nearest bf16 value, kept in fp32."""
    return t.to(BF16).float() if t.is_floating_point() else t


def bf16_error(fp32_islands: bool, seed: int = 0) -> tuple[float, float]:
    """(max abs, relative L2) error of a bf16 forward against the fp32 forward of the same bf16-exact weights
    and inputs, so that only the arithmetic differs. The timestep stays fp32, as the sampler passes it."""
    raw = random_inputs(TINY, 17, batch=2, seed=seed)
    inp = {k: v if k == "timestep" else bf16_exact(v) for k, v in raw.items()}
    reference = randomized(seed=seed)
    model = randomized(replace(TINY, fp32_islands=fp32_islands), seed=seed)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(bf16_exact(p))
        want = reference(**inp)
        got = model.to(BF16)(**{k: v if k == "timestep" else v.to(BF16) for k, v in inp.items()}).float()
    return (got - want).abs().max().item(), ((got - want).norm() / want.norm()).item()


def test_bf16_forward_with_fp32_islands_is_closer_to_fp32_than_plain_bf16():
    """The islands, in fp32 under a bf16 model as in the release: the RoPE rotation (fp32 cos/sin tables), the
    RMSNorms (QK-norm, norm_cross, norm_mlp), the AdaLN modulation outputs and the modulate op (blocks and
    final layer), and the residual gates. Linears, LayerNorms, attention and residual sums stay bf16."""
    with_islands, plain = bf16_error(True), bf16_error(False)
    print(
        f"bf16 vs fp32, max abs / rel L2: islands {with_islands[0]:.4g} / {with_islands[1]:.4g}, "
        f"plain {plain[0]:.4g} / {plain[1]:.4g}"
    )
    assert with_islands[1] < plain[1], (with_islands, plain)
    assert with_islands[1] < 0.01  # bf16's own precision, not a bug


def test_fp32_islands_leave_the_fp32_forward_bit_exact():
    inp = random_inputs(TINY, 9)
    on, off = randomized(), randomized(replace(TINY, fp32_islands=False, upcast_attention=True))
    with torch.no_grad():
        assert torch.equal(on(**inp), off(**inp))


def test_upcast_attention_runs_the_kernel_in_fp32_and_returns_bf16():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 45, 2, 64, generator=g).to(BF16) for _ in range(3))
    bias = torch.zeros(2, 1, 1, 45, dtype=BF16)
    bias[..., -5:] = -10000.0
    out = attention(q, k, v, bias, upcast=True)
    assert out.dtype == BF16
    assert torch.equal(out, attention(q.float(), k.float(), v.float(), bias.float()).to(BF16))


def test_guidance_and_euler_steps_run_in_fp32_under_a_bf16_model():
    v_pos, v_neg = torch.randn(2, 16, 3, 4, 4).to(BF16).unbind(0)
    v = guided_velocity(v_pos, v_neg, 9.0)
    assert v.dtype == torch.float32
    assert torch.equal(v, v_neg.float() + 9.0 * (v_pos.float() - v_neg.float()))

    model = randomized().to(BF16).eval()
    inp = random_inputs(TINY, 9, batch=1)
    noise = inp.pop("x").to(BF16)
    inp.pop("timestep")
    pos = Conditioning(**{k: v.to(BF16) if k.startswith("cond_") or k == "text" else v for k, v in inp.items()})
    neg = pos.negative(torch.zeros_like(pos.text), torch.ones_like(pos.text_mask))
    assert sample(model, noise, pos, neg, guidance=9.0, steps=2).dtype == torch.float32
