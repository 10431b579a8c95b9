"""The fast paths equal the reference path: activation checkpointing modes and torch.compile of whole blocks
give the eager model's forward and gradients, and a block compiles to one graph."""

from __future__ import annotations

import pytest
import torch
from test_model import TINY, random_inputs, randomized

from model.math import rope_3d
from model.mfm import MfM
from model.parallelize import apply_compile
from trainer.activation_checkpointing import apply_activation_checkpointing, checkpoint_block, checkpointing_mode

# fp32 tolerances: recomputation replays the same ops (bitwise equal up to the kernel's own determinism);
# inductor fuses and reorders the elementwise ops and reductions, which moves results by a few ulps.
RECOMPUTE_TOL = dict(atol=1e-6, rtol=1e-5)
COMPILE_TOL = dict(atol=1e-5, rtol=1e-4)


def forward_and_grads(model: MfM, inp: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = model(**inp)
    out.square().mean().backward()
    return out.detach(), {n: p.grad for n, p in model.named_parameters()}


def assert_same(got, want, tol: dict) -> None:
    torch.testing.assert_close(got[0], want[0], **tol)
    for name, grad in want[1].items():
        torch.testing.assert_close(got[1][name], grad, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("mode", ["full", "selective", "selective_matmul", True])
def test_checkpointing_modes_give_the_gradients_of_no_checkpointing(mode):
    inp = random_inputs(TINY, 9)
    reference = forward_and_grads(randomized(), inp)
    model = randomized()
    apply_activation_checkpointing(model, mode)
    assert checkpointing_mode(model) == {True: "full"}.get(mode, mode)
    assert_same(forward_and_grads(model, inp), reference, RECOMPUTE_TOL)


def test_selective_checkpointing_keeps_attention_outputs_and_less_than_no_checkpointing():
    """Saved bytes for backward per block: full < selective < selective_matmul < off."""
    from benchmark.perf.memory_model import saved_activation_bytes

    saved = {mode: saved_activation_bytes(TINY, 64, torch.float32, mode) for mode in
             ("full", "selective", "selective_matmul", "off")}  # fmt: skip
    assert saved["full"] < saved["selective"] < saved["selective_matmul"] < saved["off"], saved


def test_unknown_checkpointing_mode_is_refused():
    with pytest.raises(ValueError, match="'partial' is not one of"):
        apply_activation_checkpointing(randomized(), "partial")


def test_compiled_blocks_equal_eager_forward_and_gradients():
    """One model, block 0 without and block 1 with selective checkpointing: both compiled paths at once."""
    inp = random_inputs(TINY, 5, size=(32, 32))  # 2 x (2·2·2) tokens
    eager, compiled = randomized(), randomized()
    for model in (eager, compiled):
        checkpoint_block(model.blocks[0], "off")
        checkpoint_block(model.blocks[1], "selective")
    apply_compile(compiled)
    with torch._inductor.config.patch(compile_threads=1):  # no worker pool to start on a 2-core CI machine
        got = forward_and_grads(compiled, inp)
    assert_same(got, forward_and_grads(eager, inp), COMPILE_TOL)


@pytest.mark.parametrize("mode", ["off", "full", "selective", "selective_matmul"])
def test_a_block_compiles_without_graph_breaks(mode):
    model = randomized()
    apply_activation_checkpointing(model, mode)
    block, d = model.blocks[0], TINY.dim
    x = torch.randn(1, 8, d, requires_grad=True)
    c, text, bias = torch.randn(1, d), torch.randn(1, 7, TINY.text_dim), torch.zeros(1, 1, 1, 7)
    explanation = torch._dynamo.explain(block)(x, c, text, bias, rope_3d((2, 2, 2), TINY.head_dim))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def _compiled_ulysses_worker(rank: int, port: int) -> None:
    """One of 2 ranks of an SP group: compiled blocks (selective checkpointing) under Ulysses and ZeRO-3 give
    one device's eager forward and gradients, one graph per block, no graph break."""
    from test_model import join_sp2_rank

    dims, inp, target = join_sp2_rank(rank, port)  # first: the process group's env before DeepSpeed loads
    from deepspeed.utils import safe_get_full_grad
    from torch._dynamo.utils import counters

    from trainer.configs import deepspeed_config, load_config
    from trainer.parallel import parallelize_mfm
    from trainer.step import per_sample_loss

    reference = randomized()
    want = reference(**inp)
    per_sample_loss(want, target).mean().backward()

    cfg = load_config(overrides={"data.table": "-", "frozen.root": "-", "parallel.sp": 2, "optim.grad_clip": 0})
    engine = parallelize_mfm(randomized(), dims, deepspeed_config(cfg, on_gpu=False),
                             gradient_checkpointing="selective", compile=True)  # fmt: skip
    with torch._inductor.config.patch(compile_threads=1):
        got = engine(**inp)
        engine.backward(per_sample_loss(got, target).mean())
    torch.testing.assert_close(got, want.detach(), **COMPILE_TOL)
    for (name, p), ref in zip(engine.module.named_parameters(), reference.parameters()):
        torch.testing.assert_close(safe_get_full_grad(p), ref.grad, atol=1e-6, rtol=1e-4, msg=name)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == TINY.num_layers


@pytest.mark.slow
def test_compiled_blocks_under_ulysses_sp2_equal_one_eager_device():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_compiled_ulysses_worker, args=(port,), nprocs=2, join=True)
