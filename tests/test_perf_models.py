"""The roofline's operation list is the model's FLOPs, and it runs end to end on the CPU at a tiny size."""

from __future__ import annotations

import pytest
import torch

from benchmark.perf.roofline import PHASES, attainable_step, attention_flops, block_matmuls
from model.mfm import MFM_CONFIGS, MfM, build_on_meta


def test_timed_operations_cover_exactly_three_forward_passes_of_the_blocks():
    for size in ("tiny", "2b"):
        cfg = MFM_CONFIGS[size]
        model = build_on_meta(size) if size != "tiny" else MfM(cfg)
        for grid, batch in PHASES.values():
            tokens = grid[0] * grid[1] * grid[2]
            mms = block_matmuls(cfg, tokens, batch)
            fwd = sum(m.flops for m in mms if m.phase == "fwd")
            bwd = sum(m.flops for m in mms if m.phase == "bwd")
            assert bwd == 2 * fwd
            final = 2 * tokens * cfg.dim * cfg.patch_size**2 * cfg.latent_channels + 2 * 2 * cfg.dim**2
            per_sample_blocks = cfg.num_layers * (fwd + attention_flops(cfg, tokens, batch) // 3) // batch
            assert per_sample_blocks + final == model.forward_flops(tokens)


def test_attainable_step_runs_on_cpu_at_a_tiny_size():
    result = attainable_step(MFM_CONFIGS["tiny"], "tiny", torch.device("cpu"), torch.float32,
                             repeats=1, grid=(2, 2, 4), batch=1)
    assert result.seconds > 0 and result.attention_backend == "math"
    assert result.tokens == 16 and "attainable MFU" in result.line("tiny")


def test_saved_activations_are_linear_in_tokens_and_bookkeeping_adds_up():
    from benchmark.perf.memory_model import (
        ZERO3_BYTES_PER_PARAM,
        estimate,
        fit_activation_bytes,
        saved_activation_bytes,
    )
    from model.mfm import MfMBlock

    cfg = MFM_CONFIGS["tiny"]
    fit = fit_activation_bytes(cfg, small=16, large=64)
    assert fit.per_token > 20 * cfg.dim * 2  # at least the ~20 D-wide tensors a block must keep per token
    assert abs(saved_activation_bytes(cfg, 40) - fit.bytes(40)) <= 64  # no quadratic (attention-matrix) term

    params = cfg.num_layers * sum(p.numel() for p in MfMBlock(cfg).parameters())
    e = estimate(cfg, fit, tokens=1000, sp=2, gpus=4, checkpointing=True)
    assert e.states_gib * 2**30 == ZERO3_BYTES_PER_PARAM * params / 4
    assert e.activations_gib * 2**30 == cfg.num_layers * 500 * cfg.dim * 2
    assert e.total_gib == e.states_gib + e.activations_gib + e.working_gib


def test_selective_checkpointing_estimate_sits_between_full_and_none():
    from benchmark.perf.memory_model import estimate, fit_activation_bytes

    cfg = MFM_CONFIGS["tiny"]
    fit = fit_activation_bytes(cfg, small=16, large=64)
    kept = fit_activation_bytes(cfg, small=16, large=64, checkpointing="selective")
    by_mode = {mode: estimate(cfg, fit, tokens=1000, sp=2, gpus=4, checkpointing=mode,
                              kept=kept if mode == "selective" else None) for mode in ("off", "full", "selective")}
    assert by_mode["full"].activations_gib < by_mode["selective"].activations_gib < by_mode["off"].activations_gib
    # selective keeps the block input plus both attention outputs (bf16, D wide each) and a little more
    assert kept.per_token >= 3 * cfg.dim * 2
    with pytest.raises(ValueError, match="needs `kept`"):
        estimate(cfg, fit, tokens=1000, sp=2, gpus=4, checkpointing="selective")


def test_loader_benchmark_runs_the_trainer_stream_on_a_small_table(capsys):
    from benchmark.perf.loader_throughput import main

    assert main(["--phases", "128px", "--samples", "1", "--clips", "1", "--source-size", "144", "256"]) == 0
    stored, proxies = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "reading stored clips" in stored and "reading proxies for 128x224 352x640" in proxies
    assert all("samples/s per core" in line and "cores per GPU" in line for line in (stored, proxies))
