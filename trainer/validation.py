"""Validation during training, every `validation.every` steps, on the EMA weights when EMA is on.

- Held-out loss: the clips `trainer.data.is_held_out` keeps out of training (the first `max_clips` by clip_id,
  decoded once at start-up, the image share off), per task in `validation.tasks` with the benchmark's
  condition (`model.conditions.benchmark_condition`, a function of task, clip and seed), get the
  flow-matching loss at each fixed t of `t_values` with fixed noise: the same inputs at every validation and
  in every run, so the curve is comparable across steps and runs.
- Samples: the fixed sample set (`validation.samples`, `SampleEntry`s) is generated with `MfMPipeline`'s
  sampling and written under `<run_dir>/validation/step_XXXXXXXX/` as mp4/png; PSNR/SSIM against the held-out
  clip for the manipulation tasks (tasks that are not generation tasks).

ZeRO-3: every forward goes through the engine, whose hooks gather each module's parameters, so every rank must
run the same number of forwards. Items are dealt round-robin over the DP ranks (an SP group runs its item
together), and a rank with fewer items re-runs its first one and drops the result, so all ranks stay in
lock-step. Losses are summed over the DP ranks; the sp-rank-0 ranks write their own samples and send them to
rank 0 for TensorBoard (a grid per task).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lance
import numpy as np
import torch
import torch.distributed as dist
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from model.conditions import Clip, Condition, benchmark_condition, clip_problem
from model.flow import interpolate, model_timestep, velocity_target
from model.output_files import media_suffix, write_media
from model.pipeline import MfMPipeline, SamplingOptions, unit_frames
from model.sampling import make_scheduler
from model.tasks import get_task, make_prompt
from model.text_encoder import TextEncoder
from model.vae import VideoVAE
from pipeline.contract.frames import to_signed
from trainer.batch import seed_of
from trainer.configs import ImageShareConfig, SampleEntry, ValidationConfig, read_samples
from trainer.data import DEPTH_COLUMNS, READ_COLUMNS, Sample, SampleSpec, decode_sample, read_edit_target, take_row
from trainer.ema import ShardedEma
from trainer.parallel import ParallelDims
from trainer.step import per_sample_loss

log = logging.getLogger(__name__)


def decode_held_out(
    ds: lance.LanceDataset, offsets: np.ndarray, spec: SampleSpec, seed: int, limit: int
) -> list[Sample]:
    """The first `limit` held-out rows by clip_id, decoded at the phase size as videos (image rows stay images),
    with fixed frame windows. A row that does not decode is logged and left out."""
    proxies = spec.proxies and "proxies" in ds.schema.names
    columns = [c for c in READ_COLUMNS if c != "video"] + (["proxies"] if proxies else DEPTH_COLUMNS)
    rows = ds.take(offsets.tolist(), columns=[*columns, "_rowid"]).to_pylist() if len(offsets) else []
    order = sorted(range(len(rows)), key=lambda i: rows[i]["clip_id"])
    spec = SampleSpec(**{**vars(spec), "image_share": ImageShareConfig(start=0.0, end=0.0)})
    samples = []
    for i in order:
        if len(samples) == limit:
            break
        row = rows[i] | {"video": ds.take_blobs("video", ids=[rows[i]["_rowid"]])[0]}
        try:
            target = read_edit_target(ds, row["edit_target_clip_id"], proxies) if row["role"] == "edit_source" else None
            more = functools.partial(take_row, ds, int(offsets[i]))
            rng = np.random.default_rng([seed, len(samples)])
            samples.append(decode_sample(row, (-1, len(samples)), 0.0, spec, rng, target, more))
        except Exception as exc:  # a broken clip must not stop training
            log.warning("validation: held-out clip %s does not decode (%s): left out", row["clip_id"], exc)
    return samples


def clip_of(sample: Sample, prompt: str | None = None) -> Clip:
    frames = to_signed(sample.frames).float()  # (3, T, H, W) in [-1, 1]
    depth = None if sample.depth is None else sample.depth.float()
    source = None if sample.source is None else to_signed(sample.source).float()
    text = prompt or sample.caption
    return Clip(frames, depth, text, source=source, instruction=prompt or sample.instruction)


@dataclass
class LossItem:
    task: str
    clip: int
    cond: Condition
    x0: torch.Tensor  # (1, C, t, h, w) latents of the clip's frames
    noise: torch.Tensor  # (1, C, t, h, w) fixed
    text: torch.Tensor  # (1, L, D)
    text_mask: torch.Tensor
    motion: float


@dataclass
class SampleItem:
    index: int
    entry: SampleEntry
    cond: Condition
    reference: torch.Tensor | None  # (T, H, W, 3) in [0, 1]: the clip, for PSNR/SSIM of a manipulation task


class Validator:
    """Built once before the model (it checks the sample set against the held-out clips); `__call__` runs one
    validation on every rank and returns rank 0's numbers."""

    def __init__(
        self, cfg: ValidationConfig, clips: list[Sample], frames: int, size: tuple[int, int], vae: VideoVAE,
        text_encoder: TextEncoder, shift: float, dims: ParallelDims, device: torch.device, dtype: torch.dtype,
        run_dir: Path,
    ):  # fmt: skip
        self.cfg, self.clips, self.dims, self.device, self.dtype = cfg, clips, dims, device, dtype
        self.vae, self.text_encoder, self.shift, self.run_dir = vae, text_encoder, shift, Path(run_dir)
        self.samples = self._sample_items(read_samples(cfg.samples) if cfg.samples else [], frames, size)
        self.losses = self._loss_items()
        if not self.losses:
            raise ValueError(f"validation: none of the {len(clips)} held-out clips fits validation.tasks {cfg.tasks}")
        log.info("validation every %d steps: %d held-out clips, %d (task, clip) losses at t=%s, %d samples",
                 cfg.every, len(clips), len(self.losses), cfg.t_values, len(self.samples))  # fmt: skip

    def _sample_items(self, entries: list[SampleEntry], frames: int, size: tuple[int, int]) -> list[SampleItem]:
        items = []
        for i, e in enumerate(entries):
            task = get_task(e.task)
            where = f"validation.samples ({self.cfg.samples}) entry {i}"
            if e.clip is None:
                if task.condition != "none":
                    raise ValueError(f"{where}: task {task.id} conditions on a clip: give `clip` (a held-out index)")
                t = frames if task.is_video else 1
                zeros = torch.zeros(1, t, *size)
                prompt = make_prompt(e.prompt, task, task.generate_extra)
                cond = Condition(task.id, torch.zeros(3, t, *size), zeros, zeros.clone(), prompt)
                items.append(SampleItem(i, e, cond, None))
                continue
            if e.clip >= len(self.clips):
                raise ValueError(f"{where}: clip {e.clip}, but the hold-out has {len(self.clips)} decodable clips")
            sample = self.clips[e.clip]
            clip = clip_of(sample, e.prompt or None)
            problem = clip_problem(task, clip if task.is_video else clip.first_frame())
            if problem:
                raise ValueError(f"{where}: held-out clip {e.clip} ({sample.clip_id}) does not fit {task.id}: "
                                 f"{problem}")
            cond = benchmark_condition(task, clip, e.seed, sample.extra)
            ref = None
            if not task.generation:
                ref = unit_frames(to_signed(sample.frames[:, : cond.pixels.shape[1]]).float())
            items.append(SampleItem(i, e, cond, ref))
        return items

    @torch.no_grad()
    def _loss_items(self) -> list[LossItem]:
        items = []
        for task_id in self.cfg.tasks:
            task = get_task(task_id)
            for c, sample in enumerate(self.clips):
                clip = clip_of(sample)
                if clip_problem(task, clip if task.is_video else clip.first_frame()):
                    continue
                cond = benchmark_condition(task, clip, seed_of(self.cfg.seed, c))
                frames = clip.frames[:, : cond.pixels.shape[1]]  # an image task takes the first frame
                x0 = self.vae.encode(frames[None].to(self.device))  # (1, C, t, h, w)
                gen = torch.Generator().manual_seed(seed_of(self.cfg.seed, c, len(items), 3))
                noise = torch.randn(x0.shape, generator=gen).to(self.device)
                text, mask = self.text_encoder.encode([cond.prompt])
                motion = sample.motion_score if task.is_video else 0.0
                items.append(LossItem(task.id, c, cond, x0, noise, text, mask, motion))
        return items

    def _mine(self, n: int) -> tuple[list[int], int]:
        """This DP rank's item indices and the number of lock-step rounds every rank runs."""
        return list(range(self.dims.dp_rank, n, self.dims.dp)), math.ceil(n / self.dims.dp)

    @torch.no_grad()
    def heldout_loss(self, engine: Any) -> dict[str, list[float]]:
        """Per task, the mean held-out loss at each t of `t_values` (all t of a clip in one forward)."""
        ts = torch.tensor(self.cfg.t_values)
        n = len(ts)
        tasks = list(dict.fromkeys(i.task for i in self.losses))
        sums = torch.zeros(len(tasks), n + 1, dtype=torch.float64)  # per t, and the item count
        mine, rounds = self._mine(len(self.losses))
        for r in range(rounds):
            item = self.losses[mine[r] if r < len(mine) else mine[0] if mine else 0]
            x0, noise = item.x0.expand(n, *item.x0.shape[1:]), item.noise.expand(n, *item.noise.shape[1:])
            inputs = {k: v.to(self.device, self.dtype).expand(n, *v.shape[1:])
                      for k, v in item.cond.to_model_inputs().items()}  # fmt: skip
            pred = engine(
                x=interpolate(x0, noise, ts.to(self.device)).to(self.dtype),
                timestep=model_timestep(ts).to(self.device),
                text=item.text.to(self.device, self.dtype).expand(n, -1, -1),
                text_mask=item.text_mask.to(self.device).expand(n, -1),
                motion_score=torch.full((n,), item.motion, device=self.device), **inputs,
            )  # fmt: skip
            if r < len(mine):  # a padding round's result is dropped
                row = tasks.index(item.task)
                sums[row, :n] += per_sample_loss(pred, velocity_target(x0, noise)).double().cpu()
                sums[row, n] += 1
        sums = sums.to(self.device)
        dist.all_reduce(sums, group=self.dims.dp_group)
        sums = sums.cpu()
        return {t: (sums[i, :n] / sums[i, n]).tolist() for i, t in enumerate(tasks) if sums[i, n]}

    @torch.no_grad()
    def generate(self, engine: Any, step: int) -> list[dict[str, Any]]:
        """Sample the fixed set; the writers (sp rank 0) write their samples; rank 0 gets every sample's
        uint8 frames and PSNR/SSIM (an empty list elsewhere)."""
        if not self.samples:
            return []
        pipe = MfMPipeline(engine, self.vae, self.text_encoder, None, make_scheduler(self.shift))
        options = SamplingOptions(steps=self.cfg.steps, guidance=self.cfg.guidance)
        out_dir = self.run_dir / "validation" / f"step_{step:08d}"
        mine, rounds = self._mine(len(self.samples))
        done = []
        for r in range(rounds):
            item = self.samples[mine[r] if r < len(mine) else mine[0] if mine else 0]
            video = pipe.sample(item.cond, item.entry.seed, options)  # (3, T, H, W) in [-1, 1]
            if r >= len(mine) or self.dims.sp_rank:
                continue
            frames = unit_frames(video)  # (T, H, W, 3) in [0, 1]
            task = get_task(item.entry.task)
            write_media(frames, out_dir / f"{item.index:02d}_{task.id}{media_suffix(task)}", 16.0)
            row: dict[str, Any] = {"index": item.index, "task": task.id, "frames": (frames * 255).round().byte()}
            if item.reference is not None:
                a, b = frames.permute(0, 3, 1, 2), item.reference.permute(0, 3, 1, 2)  # (T, 3, H, W)
                row["psnr"] = float(peak_signal_noise_ratio(a, b, data_range=1.0))
                row["ssim"] = float(structural_similarity_index_measure(a, b, data_range=1.0))
            done.append(row)
        if self.dims.sp_rank:
            return []
        everything: list[Any] = [None] * self.dims.dp if self.dims.is_main else []
        dist.gather_object(done, everything if self.dims.is_main else None, dst=0, group=self.dims.dp_group)
        return sorted((r for part in everything for r in part), key=lambda r: r["index"]) if self.dims.is_main else []

    def __call__(self, engine: Any, step: int, ema: ShardedEma | None = None) -> dict[str, Any]:
        """One validation (every rank calls it): the held-out losses and the samples, with the EMA if given."""
        swap = ema.applied(engine.optimizer) if ema is not None else contextlib.nullcontext()
        with swap:
            losses = self.heldout_loss(engine)
            samples = self.generate(engine, step)
        return {"step": step, "ema": ema is not None, "t_values": self.cfg.t_values, "loss": losses,
                "samples": samples}  # fmt: skip
