"""LoRA fine-tuning (peft): under ZeRO-3 + Ulysses over 2 gloo processes only the adapters train (the base
stays bit-identical, the optimizer holds adapter-sized state only) and the loss falls on a repeated batch;
`mfm train` with LoRA saves peft adapter folders (and a merged export on request) and resumes; generation
with an adapter equals generation with the merged weights; a target naming no module is refused."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from config_files import ConfigError
from model.lora import add_lora, lora_config
from model.mfm import MFM_CONFIGS, MfM
from trainer.configs import load_config

REQUIRED = {"data.table": "clips.lance", "frozen.root": "models"}
RANK, STEPS, LR = 4, 12, 1e-2


# ---- a target that does not exist ------------------------------------------------------------------------------


def test_a_target_naming_no_module_is_refused_with_the_names_that_exist(capsys):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=REQUIRED | {"lora.enabled": True, "lora.targets": ["q_proj", "qkv"]})
    msg = str(err.value)
    assert "lora.targets" in msg and "['qkv']" in msg
    assert "its Linear layers are named: 0, 2, fc1, fc2, k_proj, linear, modulation, o_proj, q_proj, v_proj" in msg
    from trainer.train import main

    assert main(["--set", "data.table=t", "--set", "frozen.root=m", "--set", "lora.enabled=true",
                 "--set", "lora.targets=[to_q]"]) == 2  # fmt: skip
    assert "['to_q'] name no Linear layer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="name no Linear layer"):  # the same check when injecting directly
        add_lora(MfM(MFM_CONFIGS["tiny"]), lora_config(RANK, RANK, targets=["fc3"]))
    assert load_config(overrides=REQUIRED | {"lora.enabled": True}).lora.targets == list(MfM.lora_targets)


# ---- ZeRO-3 + Ulysses sp=2 over 2 gloo processes ------------------------------------------------------------------


def _lora_worker(rank: int, port: int, out: str) -> None:
    """One of 2 ranks of one SP group (Ulysses sp=2, ZeRO-3 over both, activation checkpointing on): LoRA
    steps on one repeated batch; rank 0 writes what it measured to `out`."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
    torch.set_num_threads(1)
    import deepspeed
    import torch.distributed as dist
    from deepspeed.utils import safe_get_full_optimizer_state
    from test_model import TINY, random_inputs, randomized

    from trainer.configs import deepspeed_config
    from trainer.lora import peft_config, trainable_parameters
    from trainer.parallel import init_distributed, parallelize_mfm
    from trainer.step import PreparedBatch, train_step

    dims = init_distributed(sp=2, backend="gloo")
    inp = random_inputs(TINY, 9, size=(32, 48), batch=2)  # 18 tokens: 9 per rank
    target = torch.randn(inp["x"].shape, generator=torch.Generator().manual_seed(1))
    base = randomized()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = load_config(overrides={"data.table": "-", "frozen.root": "-", "parallel.sp": 2, "optim.lr": LR,
                                 "lora.enabled": True, "lora.rank": RANK, "lora.alpha": RANK})  # fmt: skip
    engine = parallelize_mfm(base, dims, deepspeed_config(cfg, on_gpu=False), True, lora=peft_config(cfg.lora))
    lora = trainable_parameters(engine.module)
    batch = PreparedBatch(inp, target, ["t2v", "t2v"], [18, 18])
    losses = [train_step(engine, batch).losses.mean().item() for _ in range(STEPS)]

    # the optimizer: its parameters are the LoRA weights, and its state is their size
    managed = [p for group in engine.optimizer.fp16_groups for p in group]
    full_states = {n: safe_get_full_optimizer_state(p, "exp_avg") for n, p in lora.items()}  # a collective
    local = sum(t.numel() for s in engine.optimizer.optimizer.state.values() for k, t in s.items() if k == "exp_avg")
    flat = torch.tensor([local, len(engine.optimizer.optimizer.state)])
    dist.all_reduce(flat)
    # the base after training, gathered from its partitions, by our names again
    frozen = {n: p for n, p in engine.module.named_parameters() if not p.requires_grad}
    with deepspeed.zero.GatheredParameters(list(frozen.values())):
        base_after = {n.replace(".base_layer.", "."): p.detach().clone() for n, p in frozen.items()}
    with deepspeed.zero.GatheredParameters(list(lora.values())):
        lora_b_norm = sum(p.norm().item() for n, p in lora.items() if "lora_B" in n)
    if rank == 0:
        Path(out).write_text(json.dumps({
            "losses": losses,
            "lora": {"count": len(lora), "numel": sum(p.ds_numel for p in lora.values()),
                     "names_all_lora": all(".lora_A." in n or ".lora_B." in n for n in lora)},
            "optimizer": {"params": len(managed), "params_are_lora": {id(p) for p in managed} == {
                id(p) for p in lora.values()}, "numel": sum(p.ds_numel for p in managed)},
            "full_states": {"count": sum(s is not None for s in full_states.values()),
                            "numel": sum(s.numel() for s in full_states.values() if s is not None),
                            "shapes_match": all(tuple(s.shape) == tuple(lora[n].ds_shape)
                                                for n, s in full_states.items())},
            "flat_state": {"numel_all_ranks": int(flat[0]), "tensors": int(flat[1])},
            "base": {"names_match": sorted(base_after) == sorted(original),
                     "identical": all(torch.equal(base_after[k], original[k]) for k in original),
                     "count": len(base_after)},
            "lora_b_norm": lora_b_norm,
        }))  # fmt: skip
    dist.barrier()


@pytest.fixture(scope="module")
def zero3_lora(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lora_zero3") / "result.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_lora_worker, args=(port, str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_lora_under_zero3_and_ulysses_trains_only_the_adapters(zero3_lora):
    r = zero3_lora
    lora = r["lora"]
    # 2 blocks x (4 self + 4 cross projections + fc1 + fc2) x (A, B) = 40 tensors
    assert lora["count"] == 40 and lora["names_all_lora"]
    assert r["base"]["names_match"] and r["base"]["identical"], r["base"]  # every base weight bit-identical
    assert r["lora_b_norm"] > 0  # B starts at zero: the adapters did move
    opt = r["optimizer"]
    assert opt["params_are_lora"] and (opt["params"], opt["numel"]) == (lora["count"], lora["numel"])
    full = r["full_states"]
    assert full["shapes_match"] and (full["count"], full["numel"]) == (lora["count"], lora["numel"])
    # the flat fp32 partitions' Adam state over both ranks: exactly the LoRA elements (all even: no padding)
    assert r["flat_state"]["numel_all_ranks"] == lora["numel"]


@pytest.mark.slow
def test_lora_loss_falls_on_a_repeated_batch(zero3_lora):
    losses = zero3_lora["losses"]
    assert losses[-1] < 0.85 * losses[0], losses  # 1.37 -> 1.05 in 12 steps at lr 1e-2
