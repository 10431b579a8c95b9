"""The MfM transformer: the release's own output as the known answer, shapes, RoPE, save/load, training signal."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from model.flow import flow_matching_loss, interpolate, model_timestep, sample_t, velocity_target
from model.math import apply_rope, rope_3d
from model.mfm import MFM_CONFIGS, MfM, MfMConfig, build_on_meta
from model.release import (
    config_from_release,
    export_release,
    load_release_weights,
    load_transformer,
    state_dict_from_release,
)
from model.sampling import Conditioning, sample
from trainer.activation_checkpointing import apply_activation_checkpointing

RELEASE_TINY = Path(__file__).resolve().parents[2] / "shared" / "reference" / "release-tiny"
TINY = MFM_CONFIGS["tiny"]


def release_folder(tmp_path: Path) -> Path:
    """The release-tiny weights laid out as a released `transformer/` folder."""
    folder = tmp_path / "release" / "transformer"
    folder.mkdir(parents=True)
    shutil.copy(RELEASE_TINY / "config.json", folder / "config.json")
    shutil.copy(RELEASE_TINY / "weights.safetensors", folder / "diffusion_pytorch_model.safetensors")
    return folder


def release_forward(model: MfM, inp: dict[str, torch.Tensor]) -> torch.Tensor:
    cond = inp["conditional_pixel_values"]
    return model(
        inp["hidden_states"], inp["timestep"], inp["encoder_hidden_states"], inp["encoder_attention_mask"],
        cond[:, :3], cond[:, 3:4], inp["conditional_masks"], inp["motion_score"],
    )


def random_inputs(cfg: MfMConfig, frames: int, size: tuple[int, int] = (32, 48), batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    t = (frames - 1) // 4 + 1
    mask = (torch.rand(batch, 1, frames, h, w, generator=g) > 0.5).float()
    return dict(
        x=torch.randn(batch, cfg.latent_channels, t, h // 8, w // 8, generator=g),
        timestep=torch.rand(batch, generator=g) * 1000,
        text=torch.randn(batch, 7, cfg.text_dim, generator=g),
        text_mask=torch.tensor([[1] * 5 + [0] * 2] * batch),
        cond_pixels=(torch.rand(batch, 3, frames, h, w, generator=g) * 2 - 1) * mask,
        cond_depth=torch.rand(batch, 1, frames, h, w, generator=g) * 5,
        cond_mask=mask,
        motion_score=torch.full((batch,), 5.0),
    )


def randomized(cfg: MfMConfig = TINY, seed: int = 0) -> MfM:
    """A tiny model with every weight random (a fresh one predicts zero by design)."""
    torch.manual_seed(seed)
    model = MfM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


def join_sp2_rank(rank: int, port: int) -> tuple[Any, dict[str, torch.Tensor], torch.Tensor]:
    """Rank `rank` of 2 gloo processes forming one sequence-parallel group (one thread each) -> (its
    ParallelDims, tiny inputs of 18 tokens (9 per rank), a fixed velocity target)."""
    import os

    from trainer.parallel import init_distributed

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
    torch.set_num_threads(1)
    dims = init_distributed(sp=2, backend="gloo")
    inp = random_inputs(TINY, 9, size=(32, 48), batch=2)  # 18 tokens: 9 per rank
    target = torch.randn(inp["x"].shape, generator=torch.Generator().manual_seed(1))
    return dims, inp, target


# ---- the released model's own forward --------------------------------------------------------------------


def test_release_tiny_forward_matches_release_output(tmp_path):
    torch.manual_seed(0)
    model = load_transformer(release_folder(tmp_path).parent).eval()  # pipeline root with transformer/
    inp = load_file(RELEASE_TINY / "inputs.safetensors")
    expected = load_file(RELEASE_TINY / "output.safetensors")["output"]
    with torch.no_grad():
        out = release_forward(model, inp)
    assert out.shape == expected.shape == (2, 16, 3, 6, 10)
    err = (out - expected).abs().max().item()
    assert err < 1e-5, f"max abs error {err:.3g} vs the release's output (std {expected.std():.3f})"


def test_rope_table_matches_release_pos_embed():
    pos_embed = load_file(RELEASE_TINY / "inputs.safetensors")["pos_embed"]  # (B, N, 64, 2)
    cos, sin = rope_3d((3, 3, 5), head_dim=64)
    torch.testing.assert_close(cos, pos_embed[0, ..., 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, pos_embed[0, ..., 1], atol=1e-6, rtol=0)


def test_release_weights_load_with_no_missing_or_unexpected_and_round_trip_bit_exactly(tmp_path):
    folder = release_folder(tmp_path)
    release_state = load_release_weights(folder)
    ours = state_dict_from_release(release_state)
    model = load_transformer(folder)
    assert set(ours) == set(model.state_dict())  # zero missing, zero unexpected
    export_release(model, tmp_path / "exported")
    exported = load_file(tmp_path / "exported" / "diffusion_pytorch_model.safetensors")
    assert set(exported) == set(release_state)
    for k, v in release_state.items():
        assert torch.equal(exported[k], v.float()), k
    assert config_from_release(json.loads((tmp_path / "exported" / "config.json").read_text())) == model.config


def test_from_pretrained_reads_our_folders_only_and_names_the_release_loader(tmp_path):
    folder = release_folder(tmp_path)
    with pytest.raises(ValueError, match="model.release.load_transformer"):
        MfM.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="model.release.load_transformer"):
        MfM.from_pretrained(folder.parent)


def test_release_weights_with_a_missing_key_are_rejected_by_name(tmp_path):
    folder = release_folder(tmp_path)
    state = load_release_weights(folder)
    del state["transformer_blocks.1.attn2.k_norm.weight"]
    with pytest.raises(ValueError, match=r"missing \['blocks.1.cross_attn.qk_norm.key_norm.weight'\]"):
        MfM(config_from_release(json.loads((folder / "config.json").read_text()))).load_state_dict_strict(
            state_dict_from_release(state)
        )


def test_release_config_with_unsupported_setting_is_rejected():
    raw = json.loads((RELEASE_TINY / "config.json").read_text())
    with pytest.raises(ValueError, match="use_rope=False"):
        config_from_release(raw | {"use_rope": False})


# ---- shapes, presets, configs -----------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 9, 17])
def test_video_and_image_inputs_give_latent_shaped_velocity(frames):
    model = randomized()
    inp = random_inputs(TINY, frames)
    assert inp["x"].shape[2] == (frames - 1) // 4 + 1
    out = model(**inp)
    assert out.shape == inp["x"].shape


def test_parameter_counts_of_presets_match_table_2():
    blocks = {s: sum(p.numel() for p in build_on_meta(s).blocks.parameters()) for s in ("2b", "8b")}
    assert abs(blocks["2b"] / 1e9 - 2.005) < 0.01
    assert abs(blocks["8b"] / 1e9 - 8.056) < 0.01
    assert MFM_CONFIGS["2b"].dim == 1792 and MFM_CONFIGS["8b"].dim == 3072


def test_bad_config_is_rejected_with_the_key():
    with pytest.raises(ValueError, match="attention_backend 'fast'"):
        MfMConfig(attention_backend="fast")
    with pytest.raises(ValueError, match=r"unknown MfMConfig keys \['layers'\]"):
        MfMConfig.from_dict({"layers": 3})


def test_fresh_model_predicts_zero_and_fresh_adapter_adds_nothing():
    model = MfM(TINY)
    inp = random_inputs(TINY, 9)
    assert torch.count_nonzero(model(**inp)) == 0
    cond = torch.randn(1, TINY.cond_channels, 9, 32, 32)
    assert torch.count_nonzero(model.adapter(cond)) == 0


# ---- RoPE -------------------------------------------------------------------------------------------------


def test_rope_attention_logits_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 64, generator=g).unbind(0)  # (1, 1, Dh) each as (B, N, H, Dh) with N = 1
    q, k = q[:, None], k[:, None]

    def logit(pos_q, pos_k):
        cq, sq = rope_3d((1, 1, 1), 64, offset=pos_q)
        ck, sk = rope_3d((1, 1, 1), 64, offset=pos_k)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    base = logit((1, 2, 3), (4, 0, 7))
    for shift in [(5, 0, 0), (0, 9, 0), (0, 0, 11), (3, 7, 2)]:
        moved = logit(tuple(a + s for a, s in zip((1, 2, 3), shift)), tuple(a + s for a, s in zip((4, 0, 7), shift)))
        torch.testing.assert_close(moved, base, atol=1e-4, rtol=1e-5)
    assert not torch.allclose(logit((1, 2, 3), (5, 0, 7)), base, atol=1e-3)  # a different offset changes it


def test_rope_preserves_norm_and_zero_position_is_identity():
    x = torch.randn(2, 45, 2, 64)
    cos, sin = rope_3d((3, 3, 5), 64)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(apply_rope(x[:, :1], cos[:1], sin[:1]), x[:, :1])


# ---- save / load, checkpointing, attention backends, FLOPs -----------------------------------------------


def test_save_pretrained_round_trip_and_ema_variant(tmp_path):
    model = randomized()
    model.save_pretrained(tmp_path / "ckpt")
    ema = randomized(seed=1)
    ema.save_pretrained(tmp_path / "ckpt", variant="ema")
    inp = random_inputs(TINY, 9)
    torch.testing.assert_close(MfM.from_pretrained(tmp_path / "ckpt")(**inp), model(**inp), atol=0, rtol=0)
    torch.testing.assert_close(MfM.from_pretrained(tmp_path / "ckpt", variant="ema")(**inp), ema(**inp), atol=0, rtol=0)


def test_gradient_checkpointing_gives_the_same_gradients():
    inp = random_inputs(TINY, 9)
    grads = []
    for ckpt in (False, True):
        model = randomized()
        apply_activation_checkpointing(model, ckpt)
        model(**inp).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


def test_math_backend_equals_default_backend():
    inp = random_inputs(TINY, 9)
    ref = randomized()(**inp)
    math_model = randomized(replace(TINY, attention_backend="math"))
    torch.testing.assert_close(math_model(**inp), ref, atol=1e-5, rtol=1e-5)


def test_flop_count_equals_torch_flop_counter():
    model = randomized(replace(TINY, attention_backend="math"))  # the math kernel shows its matmuls
    inp = random_inputs(TINY, 9, batch=1)  # grid 3 × 2 × 3 = 18 tokens, text 7
    with FlopCounterMode(display=False) as counter:
        model(**inp)
    per_module = counter.get_flop_counts()
    parts = [f"MfM.blocks.{i}" for i in range(TINY.num_layers)] + ["MfM.final_layer"]
    counted = sum(sum(per_module[name].values()) for name in parts)
    assert model.forward_flops(num_tokens=18, text_len=7) == counted
    # By hand, tiny: D = 2 heads x 64 = 128, N = 18, L = 7, text 32, MLP 4D, 2 layers, 2x2 patches of 16 channels.
    per_layer = (2 * 18 * 4 * 128**2  # self q, k, v, o: 2,359,296
                 + 2 * 18 * 2 * 128**2 + 2 * 7 * 2 * 32 * 128  # cross q, o | k, v: 1,179,648 + 114,688
                 + 2 * 18 * 2 * 4 * 128**2  # MLP fc1 + fc2: 4,718,592
                 + 4 * 18**2 * 128 + 4 * 18 * 7 * 128)  # attention, self + cross: 165,888 + 64,512  # fmt: skip
    assert per_layer == 8_602_624
    by_hand = 2 * per_layer + 2 * 2 * 6 * 128**2 + (2 * 18 * 128 * 4 * 16 + 2 * 2 * 128**2)  # + modulation, final
    assert model.forward_flops(num_tokens=18, text_len=7) == by_hand == 17_958_912


# ---- flow matching and sampling ---------------------------------------------------------------------------


def test_interpolation_endpoints_and_velocity_is_its_time_derivative():
    x0, noise = torch.randn(2, 16, 3, 4, 4), torch.randn(2, 16, 3, 4, 4)
    torch.testing.assert_close(interpolate(x0, noise, torch.zeros(2)), x0)
    torch.testing.assert_close(interpolate(x0, noise, torch.ones(2)), noise)
    t, dt = torch.tensor([0.3, 0.7]), 1e-3
    finite_diff = (interpolate(x0, noise, t + dt) - interpolate(x0, noise, t - dt)) / (2 * dt)
    torch.testing.assert_close(finite_diff, velocity_target(x0, noise), atol=1e-3, rtol=1e-3)


def test_logit_normal_t_is_inside_0_1_with_median_one_half():
    t = sample_t(20000, torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() < 1
    assert abs(t.median().item() - 0.5) < 0.02
    assert abs((t < 0.2689).float().mean().item() - 0.1587) < 0.01  # sigmoid(-1) is one std below


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = MfM(TINY)
    inp = random_inputs(TINY, 5, size=(16, 32), batch=2)
    x0 = inp.pop("x")
    g = torch.Generator().manual_seed(1)
    noise, t = torch.randn(x0.shape, generator=g), sample_t(2, g)
    inp.pop("timestep")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        pred = model(interpolate(x0, noise, t), model_timestep(t), **inp)
        loss = flow_matching_loss(pred, velocity_target(x0, noise)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_sampler_with_cfg_1_equals_unguided_and_cfg_changes_it():
    model = randomized().eval()
    inp = random_inputs(TINY, 9, batch=1)
    noise = inp.pop("x")
    inp.pop("timestep")
    pos = Conditioning(**inp)
    neg = pos.negative(torch.zeros_like(pos.text), torch.ones_like(pos.text_mask))
    unguided = sample(model, noise, pos, steps=4)
    guided_1 = sample(model, noise, pos, neg, guidance=1.0, steps=4)
    torch.testing.assert_close(guided_1, unguided, atol=1e-5, rtol=1e-5)
    assert (sample(model, noise, pos, neg, guidance=9.0, steps=4) - unguided).abs().max() > 1e-3
