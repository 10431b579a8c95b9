"""Process groups and `parallelize_mfm`: LoRA adapters (optional), activation checkpointing, torch.compile per
block, Ulysses sequence parallelism, then ZeRO-3, applied to a single-device `MfM` from outside, in that order,
each step logged (torchtitan's way).

Ulysses and compile come from `model.parallelize` (shared with sampling), which says what stays exact
under the token split.

Gradients: every SP rank computes the same loss on the same gathered output. `SequenceSharding.gather` is
an all-gather whose backward is its adjoint, a reduce-scatter (sum) of the output gradient: with the loss
replicated, rank r receives sp times the gradient of its own token slice, so its parameter gradient is sp
times the part that flows through its tokens. ZeRO-3's gradient reduce-scatter averages over all dp·sp
ranks (`"reduce_scatter": true`, pinned in `configs.deepspeed_config`), which leaves the exact gradient of
the full sequence, averaged over the data-parallel replicas. A test checks sp=2 against one device.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from model.mfm import MfM, MfMBlock
from model.parallelize import apply_compile, apply_ulysses
from trainer.activation_checkpointing import apply_activation_checkpointing

if TYPE_CHECKING:
    from peft import LoraConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParallelDims:
    """Where this process sits: world = dp · sp, SP groups are consecutive ranks (DeepSpeed's layout)."""

    rank: int
    world: int
    sp: int
    local_rank: int
    sp_group: Any  # ProcessGroup of this rank's SP group (None when sp == 1)
    dp_group: Any  # ProcessGroup of the ranks with this SP rank: one per data-parallel replica

    @property
    def dp(self) -> int:
        return self.world // self.sp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(sp: int, backend: str) -> ParallelDims:
    """Join (or, without a launcher, create a one-process) process group and build the SP and DP groups.

    `backend`: "nccl" / "gloo". Under `torchrun` or `deepspeed` the usual env (RANK, WORLD_SIZE, MASTER_*)
    is set; a plain `mfm train` gets rank 0 of 1 on a free local port.
    """
    import deepspeed

    if "RANK" not in os.environ:  # one process, no launcher
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    if world % sp:
        raise ValueError(f"parallel.sp={sp} must divide the world size {world}")
    sp_group = None
    if sp > 1:
        from deepspeed.runtime.sequence_parallel import parallel_state_sp

        parallel_state_sp.initialize_sequence_parallel(sp)  # groups [0..sp), [sp..2sp), ...
        sp_group = parallel_state_sp.get_sequence_parallel_group()
    dp_group = None
    for sp_rank in range(sp):  # every rank creates every group, in the same order
        group = dist.new_group(list(range(sp_rank, world, sp)))
        if rank % sp == sp_rank:
            dp_group = group
    return ParallelDims(rank, world, sp, int(os.environ.get("LOCAL_RANK", 0)), sp_group, dp_group)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_blocks_zero3_leaves(model: MfM) -> None:
    """Let ZeRO-3 gather a block's parameters at the block, not at each Linear: its per-module hooks are
    `torch.compiler.disable`d, so hooks inside a compiled block would break its graph at every Linear."""
    from deepspeed.utils import set_z3_leaf_modules

    set_z3_leaf_modules(model, [MfMBlock])


def parallelize_mfm(
    model: MfM,
    dims: ParallelDims,
    ds_config: dict[str, Any],
    gradient_checkpointing: bool | str,
    compile: bool = False,
    lora: LoraConfig | None = None,
):
    """LoRA (peft's `lora` config: adapters injected, every other parameter frozen), then activation
    checkpointing (a mode of `apply_activation_checkpointing`: False/"off", True/"full",
    "selective", "selective_matmul"), then torch.compile per block, then Ulysses (sp > 1), then ZeRO-3 via
    `deepspeed.initialize`; returns the DeepSpeed engine. The order is fixed: checkpointing replaces each
    block's forward, compile takes the block with its checkpointing, Ulysses swaps modules inside the blocks
    (before the first call, so the compiled graph sees them), and ZeRO-3 partitions the finished module tree,
    giving the optimizer only the parameters that require grad (with LoRA: the adapters)."""
    import deepspeed

    if lora is not None:
        from model.lora import add_lora  # peft only when asked (benchmark/perf runs without it)

        add_lora(model, lora)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("parallelize 0/4: LoRA r=%d alpha=%g on %s%s: %d trainable of %d parameters", lora.r,
                 lora.lora_alpha, ",".join(sorted(lora.target_modules)), " + the condition adapter" if
                 lora.modules_to_save else "", trained, sum(p.numel() for p in model.parameters()))  # fmt: skip
    else:
        log.info("parallelize 0/4: LoRA off")
    mode = apply_activation_checkpointing(model, gradient_checkpointing)
    log.info("parallelize 1/4: activation checkpointing %s on %d blocks", mode, len(model.blocks))
    if compile:
        make_blocks_zero3_leaves(model)
        apply_compile(model)
        log.info("parallelize 2/4: torch.compile on each of %d blocks", len(model.blocks))
    else:
        log.info("parallelize 2/4: torch.compile off")
    mpu = None
    if dims.sp > 1:
        from deepspeed.runtime.sequence_parallel import parallel_state_sp as mpu

        heads = model.config.num_heads
        if heads % dims.sp:
            raise ValueError(f"sequence-parallel size {dims.sp} must divide the {heads} attention heads")
        apply_ulysses(model, dims.sp_group)
        log.info("parallelize 3/4: Ulysses sp=%d on %d self-attentions (%d heads per rank)",
                 dims.sp, len(model.blocks), heads // dims.sp)  # fmt: skip
    else:
        log.info("parallelize 3/4: Ulysses off (sp=1)")
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config, mpu=mpu
    )
    log.info("parallelize 4/4: ZeRO-3 over %d ranks (dp=%d x sp=%d), bf16=%s",
             dims.world, dims.dp, dims.sp, ds_config["bf16"]["enabled"])  # fmt: skip
    return engine
