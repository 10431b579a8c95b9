"""`mfm train` configuration: typed sections, named presets (paper Table 3), a YAML file and `--set` overrides.

A run's config is a preset, overridden by a YAML file, overridden by `--set key=value`. Every section
forbids unknown keys; a bad key or value stops the launch with its dotted path and the allowed keys or
values (`ConfigError`), before any process group, model or data is touched. The DeepSpeed JSON is generated
from the config (`deepspeed_config`), never written by hand.

```yaml
preset: 2b_360px                      # the base (see PRESETS); everything below overrides it
run_dir: outputs/2b-360px
data: {table: s3://bucket/curated/clips.lance, num_workers: 6}
frozen: {root: /models/MfM-Pipeline-2B}   # vae/, text_encoder/, tokenizer/ (the release's pipeline folder)
model: {init_from: outputs/2b-128px/checkpoints/step_00170000}
tasks: {plugins: [model.task_examples.deblur], weights: {vdeblur: 3.0}}   # a task of your own, trained 3x
```
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config_files import ConfigError, apply_overrides, read_yaml, validate
from model.geometry import SIZE_MULTIPLE, is_coded_length, sample_tokens
from model.math import ATTENTION_BACKENDS
from model.mfm import MFM_CONFIGS, MfM, build_on_meta
from model.task_sampling import DEFAULT_QUALITY_POLICY
from pipeline.contract.buckets import DEFAULT_ASPECT_RATIOS, aspect_buckets
from pipeline.contract.tables import QUALITY_TAGS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    size: Literal["tiny", "2b", "8b"] = "tiny"  # MFM_CONFIGS preset
    # start from weights: a released MfM folder (or its transformer/), an MfM export, or a checkpoint step folder
    init_from: str | None = None
    attention_backend: Literal[tuple(ATTENTION_BACKENDS)] = "auto"  # type: ignore[valid-type]
    # recompute blocks in backward: true/"full" keeps block inputs only; "selective" also keeps attention
    # outputs; "selective_matmul" also keeps Linear outputs (recomputes only elementwise ops); false/"off"
    gradient_checkpointing: bool | Literal["off", "full", "selective", "selective_matmul"] = False
    compile: bool = False  # torch.compile each block (after checkpointing, before ZeRO-3)


class FrozenConfig(_Section):
    """The frozen VAE and T5: local folders (or object-store paths their from_pretrained reads), never a hub."""

    root: str | None = None  # a pipeline folder holding vae/, text_encoder/ and tokenizer/
    vae: str | None = None  # overrides root for the VAE
    text_encoder: str | None = None  # overrides root for T5

    @model_validator(mode="after")
    def _paths(self) -> FrozenConfig:
        for name in ("vae", "text_encoder"):
            if getattr(self, name) is None and self.root is None:
                raise ValueError(f"set frozen.root (a folder with vae/ and text_encoder/) or frozen.{name}")
        return self

    @property
    def vae_path(self) -> str:
        return self.vae or str(self.root)

    @property
    def text_encoder_path(self) -> str:
        return self.text_encoder or str(self.root)


class ImageShareConfig(_Section):
    """Share of samples trained as images (paper §3.3: pure text-image pairs first, then video injected until
    the image-to-video ratio is 0.1). Constant `start` for `hold_steps`, then linear to `end` over `decay_steps`.
    A video clip drawn as an image gives one of its frames; image rows are always images."""

    start: float = Field(0.1, ge=0, le=1)
    end: float = Field(0.1, ge=0, le=1)
    hold_steps: int = Field(0, ge=0)
    decay_steps: int = Field(0, ge=0)

    def at(self, step: float) -> float:
        if step < self.hold_steps:
            return self.start
        if self.decay_steps == 0:
            return self.end
        done = min(1.0, (step - self.hold_steps) / self.decay_steps)
        return (1 - done) * self.start + done * self.end


class PackingConfig(_Section):
    """Multi-resolution phase (NaViT): samples keep their aspect ratio and are packed under a token budget."""

    enabled: bool = False
    max_tokens: int = Field(90_000, ge=1)  # latent tokens per pack (97x720x1280 = 25·45·80)
    max_sample_tokens: int | None = Field(None, ge=1)  # one sample at most (default max_tokens): fewer frames else


class DataConfig(_Section):
    table: str  # required: the curated `clips` Lance table (local path or s3:// / gs://)
    version: int | None = Field(None, ge=1)  # table version; None: the latest at launch (resume pins it)
    storage_options: dict[str, str] = Field(default_factory=dict)  # Lance object-store options
    filter: str | None = None  # extra Lance SQL filter, ANDed with `passed`
    frames: int = Field(49, ge=1)  # T of a video sample, 4k+1
    height: int = Field(128, ge=SIZE_MULTIPLE)  # the phase size; buckets keep its area
    width: int = Field(224, ge=SIZE_MULTIPLE)
    aspect_ratios: list[float] = Field(default_factory=lambda: list(DEFAULT_ASPECT_RATIOS), min_length=1)
    target_fps: float = Field(16.0, ge=0)  # frames are taken with the stride nearest this rate; 0: every frame
    default_motion: float = Field(5.0, ge=0)  # motion score of a video row that has none (release default)
    image_share: ImageShareConfig = Field(default_factory=ImageShareConfig)
    packing: PackingConfig = Field(default_factory=PackingConfig)
    num_workers: int = Field(2, ge=0)  # DataLoader workers (spawned: Lance is not fork-safe)
    prefetch_factor: int = Field(2, ge=1)
    read_batch: int = Field(4, ge=1)  # rows per Lance read
    proxies: bool = True  # read the smallest stored proxy that covers the sample size (schema v2), not the clip

    @field_validator("frames")
    @classmethod
    def _frames(cls, frames: int) -> int:
        if not is_coded_length(frames):
            raise ValueError("must be 1 or 4k+1 (the VAE compresses time 4x)")
        return frames

    @field_validator("height", "width")
    @classmethod
    def _side(cls, side: int) -> int:
        if side % SIZE_MULTIPLE:
            raise ValueError(f"must be a multiple of {SIZE_MULTIPLE}")
        return side

    @field_validator("aspect_ratios")
    @classmethod
    def _ratios(cls, ratios: list[float]) -> list[float]:
        if any(r <= 0 for r in ratios):
            raise ValueError("must all be > 0 (width / height)")
        return ratios

    def buckets(self, multiple: int = SIZE_MULTIPLE) -> list[tuple[int, int]]:
        """(H, W) per aspect ratio, about height·width pixels, sides multiples of `multiple`."""
        return aspect_buckets(self.height, self.width, self.aspect_ratios, multiple)


class OptimConfig(_Section):
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)  # linear from 0
    schedule: Literal["constant", "linear", "cosine"] = "constant"  # after warmup
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine floor
    grad_clip: float = Field(1.0, ge=0)  # global-norm clipping; 0: off

    @model_validator(mode="after")
    def _warmup(self) -> OptimConfig:
        if self.schedule != "constant" and self.warmup_steps < 1:
            raise ValueError(f"schedule {self.schedule!r} needs warmup_steps >= 1 (DeepSpeed's schedulers)")
        return self


class ParallelConfig(_Section):
    sp: int = Field(1, ge=1)  # Ulysses sequence-parallel degree: divides the heads and every sample's tokens
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl on GPU, gloo on CPU


class FlowConfig(_Section):
    logit_mean: float = 0.0  # logit-normal t (SD3)
    logit_std: float = Field(1.0, gt=0)
    shift: float = Field(1.0, gt=0)  # SD3 timestep shift toward noise; 1: none


class EmaConfig(_Section):
    enabled: bool = False
    decay: float = Field(0.9999, gt=0, lt=1)


class CheckpointConfig(_Section):
    every: int = Field(1000, ge=1)  # steps
    keep: int = Field(3, ge=1)  # newest step folders kept


class LoraTrainConfig(_Section):
    """Fine-tune LoRA adapters (peft) on a frozen base, e.g. `model.init_from` = the released weights."""

    enabled: bool = False
    rank: int = Field(16, ge=1)
    alpha: float = Field(16.0, gt=0)  # the update is scaled by alpha / rank
    dropout: float = Field(0.0, ge=0, lt=1)  # on the adapters' input
    targets: list[str] = Field(default_factory=lambda: list(MfM.lora_targets), min_length=1)  # Linear leaf names
    train_adapter: bool = False  # also train the condition adapter (model.adapter) fully
    save_merged: bool = False  # each checkpoint also gets model/: the base with the adapters merged in


class LogConfig(_Section):
    every: int = Field(10, ge=1)  # console lines every N steps (metrics.jsonl and TensorBoard get every step)
    tensorboard: bool = True
    peak_tflops: float | None = Field(None, gt=0)  # per device, for MFU; None: known GPUs, else no MFU
    samples: bool = False  # samples_dp{r}.jsonl: the positions and clip ids each DP rank trains, per step


class SampleEntry(_Section):
    """One fixed validation sample: a task, its prompt, the noise seed and, for a task with an input, the
    held-out clip (index in the held-out clips sorted by clip_id) whose frames it is conditioned on."""

    task: str
    prompt: str = ""  # default: the clip's caption (the task's text; an edit's instruction)
    seed: int = 0
    clip: int | None = Field(None, ge=0)


def read_samples(path: str | Path) -> list[SampleEntry]:
    """The validation sample set: a YAML list of `SampleEntry` mappings (or `{samples: [...]}`)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    entries = data.get("samples") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of {{task, prompt, seed, clip}} entries")
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(SampleEntry.model_validate(entry))
        except Exception as exc:  # pydantic's message names the bad key
            raise ValueError(f"{path}: entry {i}: {exc}") from None
    return out


class ValidationConfig(_Section):
    """Validation during training (`trainer/validation.py`), on the EMA weights when EMA is on: the
    flow-matching loss of held-out clips at fixed t with fixed noise, per task, and a fixed sample set."""

    every: int = Field(0, ge=0)  # steps between validations; 0: off
    holdout: float = Field(0.0, ge=0, lt=1)  # share of rows held out by clip_id hash, never trained on
    t_values: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9], min_length=1)
    tasks: list[str] = Field(default_factory=lambda: ["t2v", "i2v", "vsr"], min_length=1)  # held-out loss tasks
    max_clips: int = Field(16, ge=1)  # held-out clips in the loss (the first by clip_id)
    samples: str | None = None  # YAML file of SampleEntry; None: no sample generation
    steps: int = Field(10, ge=1)  # Euler steps per sample
    guidance: float = Field(1.0, ge=1.0)  # CFG scale; 1: one unguided branch
    seed: int = 0  # the fixed noise and conditions

    @field_validator("t_values")
    @classmethod
    def _t_values(cls, ts: list[float]) -> list[float]:
        if any(not 0 < t < 1 for t in ts):
            raise ValueError(f"must all be in (0, 1) (t = 1 is pure noise); got {ts}")
        return ts

    @field_validator("samples")
    @classmethod
    def _samples(cls, path: str | None) -> str | None:
        if path is not None:
            if not Path(path).is_file():
                raise ValueError(f"{path}: no such file (a YAML list of {{task, prompt, seed, clip}})")
            read_samples(path)
        return path

    @model_validator(mode="after")
    def _holdout(self) -> ValidationConfig:
        if self.every and not self.holdout:
            raise ValueError("validation.every needs validation.holdout > 0: the held-out split to validate on")
        return self


class TasksConfig(_Section):
    """Tasks of your own (`model.task_plugins`) and the tasks' training weights."""

    # modules defining TASK_PLUGINS, by dotted name or .py path, loaded on every rank before the data
    plugins: list[str] = Field(default_factory=list)
    weights: dict[str, float] = Field(default_factory=dict)  # task id -> training weight, replacing the registry's
    # quality tag -> task ids a clip with that tag never trains (model.task_sampling: default table and why);
    # task ids are checked against the registry once the plugins load (`train.setup_tasks`)
    quality_policy: dict[str, list[str]] = Field(
        default_factory=lambda: {tag: list(ids) for tag, ids in DEFAULT_QUALITY_POLICY.items()})

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in weights.items() if not w > 0}
        if bad:
            raise ValueError(f"weights must be > 0 (relative training frequencies); got {bad}")
        return weights

    @field_validator("quality_policy")
    @classmethod
    def _policy_tags(cls, policy: dict[str, list[str]]) -> dict[str, list[str]]:
        bad = [tag for tag in policy if tag not in QUALITY_TAGS]
        if bad:
            raise ValueError(f"unknown quality tag(s) {bad}; known: {list(QUALITY_TAGS)}")
        return policy


class TrainConfig(_Section):
    preset: str = "tiny"  # the preset this config started from (recorded)
    phase: str = "tiny"  # name of the training phase, e.g. 360px (recorded in checkpoints)
    run_dir: str = "outputs/train"
    steps: int = Field(20, ge=1)
    batch_size: int = Field(2, ge=1)  # samples per micro-batch per GPU (bs/GPU); packs per GPU when packing
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    frozen: FrozenConfig  # required: where the VAE and T5 load from
    data: DataConfig  # required: at least `table`
    optim: OptimConfig = Field(default_factory=OptimConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    lora: LoraTrainConfig = Field(default_factory=LoraTrainConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    @model_validator(mode="after")
    def _lora(self) -> TrainConfig:
        if not self.lora.enabled:
            return self
        from model.lora import check_targets  # peft only for LoRA runs (benchmark/perf has no peft)

        try:  # the preset's module names, on the meta device (no memory)
            check_targets(build_on_meta(self.model.size), self.lora.targets)
        except ValueError as exc:
            raise ValueError(f"lora.targets: {exc}") from None
        if self.ema.enabled:
            raise ValueError("ema.enabled with lora.enabled is not supported (the EMA averages all weights)")
        return self

    @model_validator(mode="after")
    def _parallel(self) -> TrainConfig:
        sp, heads = self.parallel.sp, MFM_CONFIGS[self.model.size].num_heads
        if heads % sp:
            raise ValueError(f"parallel.sp={sp} must divide the {heads} heads of model.size={self.model.size!r}")
        packing = self.data.packing
        if packing.enabled:
            if self.batch_size != 1:
                raise ValueError(f"packing packs one sequence per GPU: set batch_size=1 (got {self.batch_size})")
            one_frame = sample_tokens(1, self.data.height, self.data.width)
            if min(packing.max_tokens, packing.max_sample_tokens or packing.max_tokens) < one_frame:
                raise ValueError(f"data.packing: one {self.data.height}x{self.data.width} frame is {one_frame} "
                                 "tokens, more than max_tokens / max_sample_tokens")  # fmt: skip
            return self
        for h, w in self.data.buckets():
            tokens = sample_tokens(self.data.frames, h, w)
            if tokens % sp:
                raise ValueError(f"bucket {self.data.frames}x{h}x{w} has {tokens} tokens, not divisible by sp={sp}")
        return self


def check_validation_tasks(v: ValidationConfig) -> None:
    """`validation.tasks` and the sample set's tasks are registered tasks (call after the task plugins load);
    ConfigError names the bad one."""
    from model.tasks import get_task

    named = [(f"validation.tasks[{i}]", t) for i, t in enumerate(v.tasks)]
    named += [(f"validation.samples ({v.samples}) entry {i}", e.task) for i, e in
              enumerate(read_samples(v.samples) if v.samples else [])]  # fmt: skip
    for where, task in named:
        try:
            get_task(task)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------
# Presets: paper Table 3 (lr 1e-4 / 8e-5 / 5e-5 / 5e-5, bs/GPU 16 / 2 / 1 / 1, SP 1 / 1 / 2 / 2, iterations
# 170k / 100k / 50k / 40k, sizes 49x128x224, 89x352x640, 97x720x1280, multi-res) for 2B and 8B, and `tiny`.
# A later phase starts from the previous one: `--init-from <run>/checkpoints/step_XXXXXXXX`.
# ---------------------------------------------------------------------------------------------------------


def tiny() -> dict[str, Any]:
    """Minutes on a CPU: the tiny model on 9x32x32 clips; the smoke test and the tests' base."""
    return {
        "phase": "tiny", "steps": 20, "batch_size": 2,
        "model": {"size": "tiny"},
        "data": {"frames": 9, "height": 32, "width": 32, "aspect_ratios": [1.0], "target_fps": 0,
                 "num_workers": 1, "image_share": {"start": 0.25, "end": 0.25}},
        "optim": {"lr": 1e-3, "grad_clip": 1.0},
        "checkpoint": {"every": 10, "keep": 2},
        "log": {"every": 1},
    }  # fmt: skip


def _phase(size: str, name: str, **overrides: Any) -> Callable[[], dict[str, Any]]:
    table3 = {
        "128px": {"steps": 170_000, "batch_size": 16, "optim": {"lr": 1e-4, "warmup_steps": 1000},
                  "data": {"frames": 49, "height": 128, "width": 224,
                           "image_share": {"start": 1.0, "end": 0.1, "hold_steps": 10_000, "decay_steps": 90_000}}},
        "360px": {"steps": 100_000, "batch_size": 2, "optim": {"lr": 8e-5, "warmup_steps": 500},
                  "data": {"frames": 89, "height": 352, "width": 640}},
        "720px": {"steps": 50_000, "batch_size": 1, "optim": {"lr": 5e-5, "warmup_steps": 500},
                  "parallel": {"sp": 2}, "data": {"frames": 97, "height": 720, "width": 1280}},
        "multires": {"steps": 40_000, "batch_size": 1, "optim": {"lr": 5e-5, "warmup_steps": 500},
                     "parallel": {"sp": 2},
                     "data": {"frames": 97, "height": 720, "width": 1280,
                              "packing": {"enabled": True, "max_tokens": sample_tokens(97, 720, 1280)}}},
    }[name]  # fmt: skip

    def preset() -> dict[str, Any]:
        base = {
            "phase": name, "model": {"size": size, "gradient_checkpointing": True},
            "data": {"num_workers": 6, "image_share": {"start": 0.1, "end": 0.1}},
            "optim": {"weight_decay": 0.0, "grad_clip": 1.0},
            "checkpoint": {"every": 1000, "keep": 3}, "log": {"every": 10},
        }  # fmt: skip
        return _merge(_merge(base, table3), overrides)

    return preset


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {"tiny": tiny}
for _size in ("2b", "8b"):
    for _name in ("128px", "360px", "720px", "multires"):
        PRESETS[f"{_size}_{_name}"] = _phase(_size, _name)


# ---------------------------------------------------------------------------------------------------------
# Loading: preset <- YAML <- --set, checked as a whole
# ---------------------------------------------------------------------------------------------------------


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, preset: str | None = None
) -> TrainConfig:
    """The run's config: `preset` (or the YAML's `preset:` key, else "tiny"), then the YAML file, then
    `overrides` ({"a.b": value}). Raises ConfigError naming every bad key or value."""
    data = apply_overrides(read_yaml(path), overrides)
    name = preset or data.get("preset") or "tiny"
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    merged = _merge(PRESETS[name](), data) | {"preset": name}
    return validate(TrainConfig, merged, path)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update (`over` wins); a non-dict value replaces the whole subtree."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---------------------------------------------------------------------------------------------------------
# The DeepSpeed JSON
# ---------------------------------------------------------------------------------------------------------


def deepspeed_config(cfg: TrainConfig, on_gpu: bool) -> dict[str, Any]:
    """ZeRO-3, AdamW (torch's implementation: no op build), warmup + schedule, clipping; bf16 on GPU and
    fp32 on CPU unless `parallel.precision` says otherwise. We feed batches ourselves, so the batch keys
    only tell DeepSpeed the micro-batch (one step = one micro-batch; no accumulation)."""
    o = cfg.optim
    bf16 = cfg.parallel.precision == "bf16" or (cfg.parallel.precision == "auto" and on_gpu)
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": o.grad_clip,
        "steps_per_print": 2**31 - 1,  # we log
        "optimizer": {"type": "AdamW", "params": {
            "lr": o.lr, "betas": list(o.betas), "eps": o.eps, "weight_decay": o.weight_decay, "torch_adam": True}},
        "zero_optimization": {
            "stage": 3, "overlap_comm": on_gpu, "contiguous_gradients": True,
            "reduce_scatter": True,  # averages over dp·sp ranks: the Ulysses gradient scale relies on it
            "stage3_gather_16bit_weights_on_model_save": False},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
    }  # fmt: skip
    warmup = {"warmup_num_steps": o.warmup_steps}
    if o.schedule == "constant" and o.warmup_steps:
        ds["scheduler"] = {"type": "WarmupLR", "params": warmup | {
            "warmup_min_lr": 0.0, "warmup_max_lr": o.lr, "warmup_type": "linear"}}  # fmt: skip
    elif o.schedule == "linear":
        ds["scheduler"] = {"type": "WarmupDecayLR", "params": warmup | {
            "warmup_min_lr": 0.0, "warmup_max_lr": o.lr, "warmup_type": "linear", "total_num_steps": cfg.steps}}
    elif o.schedule == "cosine":
        ds["scheduler"] = {"type": "WarmupCosineLR", "params": warmup | {
            "total_num_steps": cfg.steps, "warmup_min_ratio": 0.0, "cos_min_ratio": o.min_lr_ratio,
            "warmup_type": "linear"}}  # fmt: skip
    return ds
