"""Per-step metrics, reduced over data-parallel replicas and written by rank 0 only: console lines,
TensorBoard scalars and `metrics.jsonl` (one JSON object per step).

Logged: loss (mean over the step's samples) and loss per task, lr, grad norm, samples/s and latent
tokens/s over all replicas, MFU (model FLOPs from `MfM.forward_flops`, 3x for forward + backward, over the
devices' peak), peak memory (GPU allocator, else process RSS), skipped steps and skipped clips.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from model.tasks import TASKS
from trainer.parallel import ParallelDims

log = logging.getLogger(__name__)

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16 per device


def peak_flops(override_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device: the configured value, a known GPU's dense bf16 peak, or None."""
    if override_tflops:
        return override_tflops * 1e12
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


def sample_grid(videos: list[torch.Tensor], frames: int = 8) -> torch.Tensor:
    """uint8 videos (T, H, W, 3) -> one uint8 image (rows = videos, columns = up to `frames` evenly spaced
    frames), padded to the largest size."""
    h, w = max(v.shape[1] for v in videos), max(v.shape[2] for v in videos)
    cols = min(frames, max(v.shape[0] for v in videos))
    grid = torch.zeros(len(videos) * h, cols * w, 3, dtype=torch.uint8)
    for r, v in enumerate(videos):
        picks = torch.linspace(0, v.shape[0] - 1, min(cols, v.shape[0])).round().long()
        for c, i in enumerate(picks):
            grid[r * h : r * h + v.shape[1], c * w : c * w + v.shape[2]] = v[i]
    return grid


class Metrics:
    def __init__(
        self, run_dir: Path, dims: ParallelDims, device: torch.device, peak: float | None, every: int, tensorboard: bool
    ):
        self.dims, self.device, self.peak, self.every, self.run_dir = dims, device, peak, every, Path(run_dir)
        self.writer = None
        self.jsonl = None
        if dims.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.jsonl = (run_dir / "metrics.jsonl").open("a")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def step(
        self,
        step: int,
        losses: torch.Tensor,
        tasks: list[str],
        tokens: list[int],
        flops: float,
        seconds: float,
        lr: float,
        grad_norm: torch.Tensor | float | None,
        skipped_step: bool,
        skipped_clips: int,
    ) -> dict[str, Any]:
        """Reduce one step's numbers over the DP replicas; rank 0 writes them. Every rank must call it."""
        task_ids = list(TASKS)  # read per step: tasks of your own register after import (same order on every rank)
        n = len(task_ids)
        local = torch.zeros(2 * n + 5, dtype=torch.float64)
        for loss, task in zip(losses.double().cpu(), tasks):
            i = task_ids.index(task)
            local[i] += loss
            local[n + i] += 1
        local[2 * n :] = torch.tensor([len(tasks), sum(tokens), flops, skipped_clips, peak_memory_gb()])
        local, mem = local.to(self.device), local[-1:].to(self.device)  # NCCL reduces device tensors only
        dist.all_reduce(local, group=self.dims.dp_group)
        dist.all_reduce(mem, op=dist.ReduceOp.MAX)
        local = local.cpu()
        per_task_sum, per_task_n = local[:n], local[n : 2 * n]
        samples, tok, fl, clips = local[2 * n : 2 * n + 4].tolist()
        row = {
            "step": step,
            "loss": float(per_task_sum.sum() / per_task_n.sum()),
            "lr": lr,
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "samples_per_s": samples / seconds,
            "tokens_per_s": tok / seconds,
            "mfu": fl / (seconds * self.dims.world * self.peak) if self.peak else None,
            "peak_mem_gb": float(mem),
            "step_s": seconds,
            "skipped_step": skipped_step,
            "skipped_clips": int(clips),
            "loss_per_task": {t: float(per_task_sum[i] / per_task_n[i])
                              for i, t in enumerate(task_ids) if per_task_n[i]},  # fmt: skip
        }
        if self.dims.is_main:
            self._write(row)
        return row

    def _write(self, row: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for key in ("loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "mfu", "peak_mem_gb"):
                if row[key] is not None:
                    self.writer.add_scalar(f"train/{key}", row[key], row["step"])
            for task, loss in row["loss_per_task"].items():
                self.writer.add_scalar(f"loss_per_task/{task}", loss, row["step"])
            self.writer.add_scalar("train/skipped_clips", row["skipped_clips"], row["step"])
        if row["skipped_step"]:
            log.warning("step %d: non-finite loss %s: step skipped (no update)", row["step"], row["loss"])
        if row["step"] % self.every == 0 or row["skipped_step"]:
            mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a"
            grad = f"{row['grad_norm']:.3f}" if row["grad_norm"] is not None else "n/a"
            log.info(
                "step %d | loss %.4f | lr %.2e | grad %s | %.2f samples/s | %.0f tokens/s | MFU %s | mem %.2f GB",
                row["step"], row["loss"], row["lr"], grad, row["samples_per_s"], row["tokens_per_s"], mfu,
                row["peak_mem_gb"],
            )  # fmt: skip

    def validation(self, result: dict[str, Any]) -> None:
        """Rank 0 writes one validation (`trainer.validation.Validator`): `validation.jsonl`, and in TensorBoard
        the held-out loss per task at each t (`val_loss/<task>/t=<t>`) and its mean, PSNR/SSIM per manipulation
        task, and per task a grid of the samples (`val_samples/<task>`: a row per sample, up to 8 frames)."""
        if not self.dims.is_main:
            return
        step, samples = result["step"], result["samples"]
        metrics: dict[str, dict[str, float]] = {}
        for key in ("psnr", "ssim"):
            for task in {r["task"] for r in samples if key in r}:
                values = [r[key] for r in samples if r["task"] == task and key in r]
                metrics.setdefault(key, {})[task] = sum(values) / len(values)
        row = {"step": step, "ema": result["ema"], "t_values": result["t_values"], "loss": result["loss"],
               **metrics, "samples": [r["index"] for r in samples]}  # fmt: skip
        with (self.run_dir / "validation.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        mean = {task: sum(v) / len(v) for task, v in result["loss"].items()}
        log.info("validation at step %d%s: held-out loss %s%s", step, " (EMA)" if result["ema"] else "",
                 " ".join(f"{t} {v:.4f}" for t, v in mean.items()),
                 "".join(f" | {k} " + " ".join(f"{t} {v:.3f}" for t, v in m.items()) for k, m in metrics.items()))
        if self.writer is None:
            return
        for task, values in result["loss"].items():
            self.writer.add_scalar(f"val_loss/{task}", mean[task], step)
            for t, v in zip(result["t_values"], values):
                self.writer.add_scalar(f"val_loss/{task}/t={t:g}", v, step)
        for key, per_task in metrics.items():
            for task, v in per_task.items():
                self.writer.add_scalar(f"val_{key}/{task}", v, step)
        for task in dict.fromkeys(r["task"] for r in samples):
            self.writer.add_image(f"val_samples/{task}", sample_grid([r["frames"] for r in samples
                                                                       if r["task"] == task]), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.writer is not None:
            self.writer.close()
