"""`mfm train`: MfM on a curated Lance `clips` table with DeepSpeed ZeRO-3 and Ulysses sequence parallelism.

    mfm train --config run.yaml [--preset 2b_360px] [--set key=value ...] [--init-from PATH] [--resume latest]
    torchrun --nproc_per_node 8 -m mfm.cli train --config run.yaml
    deepspeed --num_gpus 8 --no_local_rank --module mfm.cli train --config run.yaml

One process without a launcher works too (rank 0 of 1). The config is checked before anything starts:
a bad key or value exits with status 2 and names it. `--print-config` shows the resolved config and the
generated DeepSpeed JSON and exits.

Reads top to bottom: small helpers, then `train(cfg)`, the whole run in one function.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from config_files import ConfigError, parse_overrides
from model.geometry import sample_tokens
from model.mfm import MFM_CONFIGS, MfM
from model.release import load_transformer
from model.task_plugins import TaskRegistrationError, load_task_plugins, plugin_specs, set_task_weights
from model.task_sampling import DEFAULT_QUALITY_POLICY, set_quality_policy
from model.text_encoder import TextEncoder
from model.vae import VideoVAE
from trainer import checkpoint
from trainer.batch import BatchBuilder
from trainer.configs import TrainConfig, check_validation_tasks, deepspeed_config, load_config
from trainer.data import Batcher, ClipStream, SampleSpec, TrainLoader, holdout_offsets, open_clips, trainable_offsets
from trainer.ema import ShardedEma
from trainer.lora import peft_config
from trainer.metrics import Metrics, peak_flops
from trainer.parallel import ParallelDims, init_distributed, parallelize_mfm
from trainer.step import train_step
from trainer.validation import Validator, decode_held_out

log = logging.getLogger("trainer")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mfm train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML config (see trainer/configs.py); may name its `preset:`")
    p.add_argument("--preset", help="base preset: tiny, 2b_128px, 2b_360px, 2b_720px, 2b_multires, 8b_...")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=5e-5")  # fmt: skip
    p.add_argument("--init-from", help="start from weights: a released MfM folder, an export or a checkpoint")
    p.add_argument("--resume", help="'latest' (this run's newest checkpoint, if any) or a step folder")
    p.add_argument("--print-config", action="store_true", help="print the resolved config + DeepSpeed JSON, exit")
    p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # set by `deepspeed`
    return p.parse_args(argv)


def setup_logging(dims: ParallelDims) -> None:
    """Rank 0 logs progress; the other ranks only warnings (a skipped clip, a skipped step)."""
    logging.basicConfig(
        level=logging.INFO if dims.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {dims.rank}] %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def build_model(size: str, attention_backend: str, init_from: str | None, seed: int) -> MfM:
    """The preset's model, or the `init_from` weights (which must have the preset's architecture)."""
    want = replace(MFM_CONFIGS[size], attention_backend=attention_backend)
    torch.manual_seed(seed)  # every rank builds the same initial weights
    if init_from is None:
        return MfM(want)
    path = Path(init_from)
    path = path / "model" if (path / "model" / "config.json").is_file() else path  # a checkpoint step folder
    model = load_transformer(path, attention_backend=attention_backend)
    if model.config != want:
        raise ValueError(f"--init-from {path}: {model.config} is not model.size={size!r} ({want})")
    return model


def setup_tasks(
    plugins: list[str], weights: dict[str, float], quality_policy: dict[str, list[str]] | None = None,
) -> None:
    """Register the tasks of your own (MFM_TASK_PLUGINS, then `tasks.plugins`), then apply `tasks.weights` and
    `tasks.quality_policy` (None: the default). Every rank runs this before it draws a task; loading again is a
    no-op."""
    load_task_plugins(plugin_specs(plugins))
    set_task_weights(weights)
    try:
        set_quality_policy(DEFAULT_QUALITY_POLICY if quality_policy is None else quality_policy)
    except ValueError as exc:
        raise TaskRegistrationError(f"tasks.{exc}") from None


def check_same_lora(ckpt: Path, saved: dict, now: dict) -> None:
    """A resumed run must train the adapters it saved (save_merged may change)."""
    def adapters(d: dict) -> dict:
        return {k: v for k, v in d.items() if k != "save_merged"} if d.get("enabled") else {"enabled": False}

    if adapters(saved) != adapters(now):
        raise ValueError(f"--resume {ckpt}: saved with lora {adapters(saved)}, this run has {adapters(now)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        overrides = parse_overrides(args.overrides)
        if args.init_from:
            overrides["model.init_from"] = args.init_from
        cfg = load_config(args.config, overrides, preset=args.preset)
        # a bad plugin or quality policy stops the launch here, like a bad key
        setup_tasks(cfg.tasks.plugins, cfg.tasks.weights, cfg.tasks.quality_policy)
        check_validation_tasks(cfg.validation)
    except ConfigError as exc:
        print(f"mfm train: config error: {exc}", file=sys.stderr)
        return 2
    except TaskRegistrationError as exc:  # a task plugin that does not load or register, a bad task weight
        print(f"mfm train: config error: tasks: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        print(json.dumps(deepspeed_config(cfg, torch.cuda.is_available()), indent=2))
        return 0
    train(cfg, args.resume)
    return 0


def train(cfg: TrainConfig, resume: str | None = None) -> None:
    setup_tasks(cfg.tasks.plugins, cfg.tasks.weights, cfg.tasks.quality_policy)  # before any task is drawn or counted
    # ---- processes and device -----------------------------------------------------------------------------
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)  # before the process group, so NCCL binds this rank's GPU
    backend = cfg.parallel.backend if cfg.parallel.backend != "auto" else ("nccl" if on_gpu else "gloo")
    dims = init_distributed(cfg.parallel.sp, backend)
    setup_logging(dims)
    run_dir = Path(cfg.run_dir)
    ds_config = deepspeed_config(cfg, on_gpu)
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
    if dims.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        (run_dir / "deepspeed_config.json").write_text(json.dumps(ds_config, indent=2))
    log.info("world %d = dp %d x sp %d on %s (%s), %s", dims.world, dims.dp, dims.sp, device, backend, dtype)

    # ---- where to start: a checkpoint pins the table version -----------------------------------------------
    ckpt = checkpoint.resolve(run_dir, resume) if resume else None
    saved = checkpoint.read_trainer_state(ckpt) if ckpt else None
    if saved and saved["config"]["model"]["size"] != cfg.model.size:
        raise ValueError(f"--resume {ckpt}: saved by model.size={saved['config']['model']['size']!r}, "
                         f"this run has {cfg.model.size!r}")  # fmt: skip
    if saved:
        check_same_lora(ckpt, saved["config"].get("lora") or {"enabled": False}, cfg.lora.model_dump(mode="json"))
    version = saved["table"]["version"] if saved else cfg.data.version

    # ---- data: this DP rank's share of the table, decoded in spawned workers --------------------------------
    table = open_clips(cfg.data.table, version, cfg.data.storage_options)
    offsets = trainable_offsets(table, cfg.data.filter, cfg.validation.holdout)
    if saved and saved["table"].get("rows", len(offsets)) != len(offsets):
        raise ValueError(f"--resume {ckpt}: saved with {saved['table']['rows']} trainable rows, this run has "
                         f"{len(offsets)} (data.filter or validation.holdout changed)")  # fmt: skip
    spec = SampleSpec.from_config(cfg.data, cfg.batch_size, cfg.parallel.sp)
    packing = cfg.data.packing
    batcher = Batcher(cfg.batch_size, packing.max_tokens if packing.enabled else None)
    data_state = checkpoint.read_data_state(ckpt, dims, len(offsets)) if ckpt else None
    stream = ClipStream(cfg.data.table, table.version, cfg.data.storage_options, offsets, dims.dp_rank, dims.dp,
                        cfg.seed, spec, cfg.data.read_batch, resume=data_state)  # fmt: skip
    loader = TrainLoader(stream, batcher, cfg.data.num_workers, cfg.data.prefetch_factor)
    log.info("data: %s v%d, %d trainable rows, %d per DP rank per epoch, %s", cfg.data.table, table.version,
             len(offsets), stream.per_rank, "packed" if packing.enabled else f"buckets {spec.buckets}")  # fmt: skip

    # ---- model: LoRA, checkpointing, Ulysses, ZeRO-3 ------------------------------------------------------
    # A resumed run takes its weights from the checkpoint; with LoRA that holds the adapters only, and the
    # frozen base comes from init_from again.
    init_from = None if ckpt and not cfg.lora.enabled else cfg.model.init_from
    base = functools.partial(build_model, cfg.model.size, cfg.model.attention_backend, cfg.model.init_from, cfg.seed)
    model = build_model(cfg.model.size, cfg.model.attention_backend, init_from, cfg.seed)
    flops_of = model.forward_flops

    # ---- frozen VAE (at the latent scale the model records) and T5, and what turns samples into inputs -----
    vae = VideoVAE.from_pretrained(cfg.frozen.vae_path, dtype=dtype,
                                   scaling_factor=model.config.vae_scaling_factor).to(device)
    text_encoder = TextEncoder.from_pretrained(cfg.frozen.text_encoder_path, dtype=dtype).to(device)
    builder = BatchBuilder(vae, text_encoder, cfg.flow, cfg.seed, dims.dp_rank, device, dtype, packing.enabled)

    # ---- validation: the held-out clips and the sample set, checked before ZeRO-3 starts ------------------
    validator = None
    v = cfg.validation
    if v.every:
        held = holdout_offsets(table, cfg.data.filter, v.holdout)
        clips = decode_held_out(table, held, spec, v.seed, v.max_clips)
        if not clips:
            raise ValueError(f"validation.holdout={v.holdout}: no decodable held-out clip among {len(held)} rows of "
                             f"{cfg.data.table} (raise the share)")  # fmt: skip
        if dims.is_main:
            (run_dir / "validation").mkdir(exist_ok=True)
            (run_dir / "validation" / "holdout.json").write_text(json.dumps(sorted(table.take(
                held.tolist(), columns=["clip_id"])["clip_id"].to_pylist())))  # fmt: skip
        size = spec.buckets[0] if not packing.enabled else (cfg.data.height, cfg.data.width)
        validator = Validator(v, clips, cfg.data.frames, size, vae, text_encoder, cfg.flow.shift, dims, device,
                              dtype, run_dir)  # fmt: skip

    n_params = sum(p.numel() for p in model.parameters())
    lora = peft_config(cfg.lora) if cfg.lora.enabled else None
    engine = parallelize_mfm(model, dims, ds_config, cfg.model.gradient_checkpointing, cfg.model.compile, lora)
    ema = ShardedEma(engine.module, cfg.ema.decay) if cfg.ema.enabled else None
    step, counters = 0, {"nonfinite_steps": 0}
    if ckpt:
        changed = checkpoint.world_change(ckpt, dims)
        if changed:  # no flag needed: the universal state reshards to any world
            log.warning("resume on another world: %s; model, Adam moments and EMA resharded from %s/universal, "
                        "data positions %s", changed, ckpt.name, "resharded by the global-position rule"
                        if saved["world"]["size"] // saved["world"]["sp"] != dims.dp else "kept (same dp)")  # fmt: skip
        checkpoint.load_checkpoint(engine, ckpt, dims, ema)
        step, counters = saved["step"], saved["counters"]
        log.info("resumed from %s at step %d (table v%d, data at %s)", ckpt, step, table.version, data_state.next)
    elif resume:
        log.info("--resume %s: no checkpoint in %s yet, starting from step 0", resume, run_dir)

    peak = peak_flops(cfg.log.peak_tflops)
    step_tokens = packing.max_tokens if packing.enabled else cfg.batch_size * sample_tokens(
        cfg.data.frames, cfg.data.height, cfg.data.width)
    log.info("model %s: %.3fB parameters; up to %d latent tokens per DP replica per step, %.3g model TFLOPs "
             "(fwd+bwd); MFU against %s", cfg.model.size, n_params / 1e9, step_tokens,
             3 * flops_of(step_tokens) / 1e12, f"{peak / 1e12:.0f} TFLOP/s" if peak else "no known peak")  # fmt: skip
    metrics = Metrics(run_dir, dims, device, peak, cfg.log.every, cfg.log.tensorboard)

    # ---- the loop -----------------------------------------------------------------------------------------
    samples_log = None
    if cfg.log.samples and dims.sp_rank == 0:  # one file per DP rank: what it trained and skipped, per step
        samples_log = (run_dir / f"samples_dp{dims.dp_rank}.jsonl").open("a")
    batches = iter(loader)
    while step < cfg.steps:
        start = time.perf_counter()
        samples = next(batches)
        if samples_log is not None:
            row = {"step": step + 1, "positions": [list(s.position) for s in samples],
                   "clip_ids": [s.clip_id for s in samples], "skipped": [list(p) for p in loader.skipped_positions]}
            samples_log.write(json.dumps(row) + "\n")
            samples_log.flush()
        loader.skipped_positions.clear()
        batch = builder(samples, step)
        result = train_step(engine, batch)
        if ema is not None and not result.skipped:
            ema.update()
        counters["nonfinite_steps"] += result.skipped
        step += 1
        metrics.step(
            step, result.losses, batch.tasks, batch.tokens, sum(3 * flops_of(n) for n in batch.tokens),
            time.perf_counter() - start, engine.get_lr()[0], result.grad_norm, result.skipped,
            sum(loader.state.skipped.values()),
        )  # fmt: skip
        if validator is not None and step % v.every == 0:
            metrics.validation(validator(engine, step, ema))
        if step % cfg.checkpoint.every == 0 or step == cfg.steps:
            trainer_state = {
                "step": step, "phase": cfg.phase, "preset": cfg.preset, "config": cfg.model_dump(mode="json"),
                "table": {"uri": cfg.data.table, "version": table.version, "rows": len(offsets)},
                "counters": counters | {"skipped_clips": dict(loader.state.skipped)},
                "world": {"size": dims.world, "sp": dims.sp},
            }  # fmt: skip
            checkpoint.save_checkpoint(engine, run_dir, step, trainer_state, loader.state_dict(), dims,
                                       cfg.checkpoint.keep, ema, lora, base if cfg.lora.save_merged else None)
    batches.close()  # stops the data workers
    if samples_log is not None:
        samples_log.close()
    metrics.close()
    log.info("done: %d steps, %d skipped for a non-finite loss", step, counters["nonfinite_steps"])
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
