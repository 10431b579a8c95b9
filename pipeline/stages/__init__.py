"""Curation stages, in pipeline order, built from a `CurateConfig` by `build_stages`."""

from __future__ import annotations

import math

from pipeline.config import CurateConfig, ModelStageConfig
from pipeline.stages.aesthetic import AestheticStage
from pipeline.stages.base import Resources, Stage
from pipeline.stages.blur import BlurStage
from pipeline.stages.caption import CaptionStage, VllmCaptionStage
from pipeline.stages.clip_encode import ClipEncodeStage
from pipeline.stages.depth import DepthStage
from pipeline.stages.filter import FilterStage
from pipeline.stages.motion import MotionStage
from pipeline.stages.motion_frames import MotionFramesStage
from pipeline.stages.ocr import OcrStage
from pipeline.stages.probe import ProbeStage
from pipeline.stages.proxies import ProxyStage
from pipeline.stages.quality import QualityTagStage
from pipeline.stages.shot_split import ShotSplitStage, TransNetShotSplitStage
from pipeline.stages.text_embed import TextEmbedStage
from pipeline.stages.vae_latents import VaeLatentStage
from pipeline.stages.write import WriteStage

NAMED_CODEC_GPUS = 0.02  # GPU share of a task whose NVENC / NVDEC is asked for by name (up to 50 per GPU)


def build_stages(
    cfg: CurateConfig, clips_uri: str = "", config_hash: str = "", gpus: float = 0.0, cpus: float = 2.0
) -> list[Stage]:
    """The stage list for `cfg`; `gpus`, `cpus` = the cluster's (model stages with gpus=None share the GPUs;
    the decoding actors fill 3/4 of the CPUs unless `clip.transnet_actors` says how many)."""
    io = {"storage_options": cfg.storage.options, "cache_dir": cfg.run.cache_dir}
    cpu = Resources(cpus=cfg.run.cpus_per_task)
    per_clip = {"resources": cpu, "batch_size": cfg.run.clip_batch_size}
    threads = math.ceil(cfg.run.cpus_per_task)  # x264 threads of an encoding stage: the cores its task holds
    backend = cfg.motion.backend
    models = [c for c in (cfg.depth, cfg.caption, cfg.text, cfg.vae, cfg.aesthetic) if c.model]
    models += [cfg.motion] if backend != "farneback" else []
    models += [cfg.clip] if cfg.clip.shot_detector == "transnetv2" else []
    share = int(100 / len(models)) / 100 if models else 0.0  # GPUs split evenly between model stages

    def actor(c: ModelStageConfig) -> dict:
        gpu = c.gpus if c.gpus is not None else (share if gpus > 0 else 0.0)
        return {"resources": Resources(cpus=c.cpus, gpus=gpu), "actors": c.actors,
                "batch_size": cfg.run.clip_batch_size}  # fmt: skip

    clip, run = cfg.clip, cfg.run
    encode_gpus, decode_gpus = _codec_gpus(cfg, gpus)
    split = {"batch_size": 1, "min_frames": clip.min_frames, "max_frames": clip.max_frames, "max_side": clip.max_side,
             "reject_short": not run.score_only, "decoder": run.decoder, **io}  # fmt: skip
    encoding = {**per_clip, "resources": Resources(cpus=cpu.cpus, gpus=encode_gpus), "encoder": clip.encoder}
    if clip.shot_detector == "transnetv2":  # its actors are sized below, once the other operators are known
        shot_split: Stage = TransNetShotSplitStage(
            resources=Resources(cpus=clip.transnet_cpus), actors=clip.transnet_actors or 1,
            threshold=clip.transnet_threshold, windows=clip.transnet_batch_size, device=clip.transnet_device,
            **split)  # fmt: skip
    else:  # the decoding task also encodes (stages.group): it holds the larger codec share
        shot_split = ShotSplitStage(resources=Resources(cpus=clip.decode_cpus, gpus=max(encode_gpus, decode_gpus)),
                                    shot_threshold=clip.shot_threshold,
                                    shot_ratio=clip.shot_ratio, min_shot_frames=clip.min_shot_frames,
                                    scan_long_side=clip.scan_long_side, **split)  # fmt: skip
    stages: list[Stage] = [
        ProbeStage(resources=cpu, batch_size=1, **io),
        shot_split,
        BlurStage(n_frames=cfg.blur.n_frames, **per_clip, **io),
        MotionFramesStage(n_pairs=cfg.motion.n_pairs, pair_gap=cfg.motion.pair_gap,
                          analysis_short_side=cfg.motion.analysis_short_side, **per_clip, **io),  # fmt: skip
        MotionStage(backend=backend, raft_weights=cfg.motion.raft_weights, flow_updates=cfg.motion.flow_updates,
                    pair_gap=cfg.motion.pair_gap, **(actor(cfg.motion) if backend != "farneback" else per_clip),
                    **io),  # fmt: skip
        FilterStage(blur_threshold=cfg.blur.threshold, motion_threshold=cfg.motion.threshold,
                    score_only=run.score_only, **per_clip),  # fmt: skip
        ClipEncodeStage(crf=clip.crf, preset=clip.preset, threads=threads,
                        keep_frames=bool(cfg.depth.model or cfg.vae.model or cfg.aesthetic.model or cfg.proxies.phases
                                         or cfg.caption.model),
                        **encoding, **io),  # fmt: skip
    ]
    if cfg.ocr.on:
        o = cfg.ocr
        stages.append(OcrStage(n_frames=o.n_frames, max_side=o.max_side, border=o.border, min_iou=o.min_iou,
                               det_thresh=o.det_thresh, box_thresh=o.box_thresh, max_line_height=o.max_line_height,
                               watermark_model=o.watermark_model or "", watermark_class=o.watermark_class,
                               **actor(o), **io))  # fmt: skip
    if cfg.depth.model:
        stages.append(DepthStage(model_path=cfg.depth.model, model_name=cfg.depth.name,
                                 frames_per_forward=cfg.depth.batch_size, precision=cfg.depth.precision,
                                 **actor(cfg.depth), **io))  # fmt: skip
    if cfg.aesthetic.model:
        stages.append(AestheticStage(model_path=cfg.aesthetic.model, head_path=cfg.aesthetic.head or "",
                                     model_name=cfg.aesthetic.name, n_frames=cfg.aesthetic.n_frames,
                                     **{**actor(cfg.aesthetic), "batch_size": cfg.aesthetic.batch_size},
                                     **io))  # fmt: skip
    if cfg.proxies.phases:
        stages.append(ProxyStage(phases=cfg.proxies.phase_sizes, aspect_ratios=tuple(cfg.proxies.aspect_ratios),
                                 crf=cfg.proxies.crf, preset=clip.preset, threads=threads, **encoding))  # fmt: skip
    if cfg.vae.model:
        stages.append(VaeLatentStage(model_path=cfg.vae.model, model_name=cfg.vae.name,
                                     buckets=tuple(cfg.vae.buckets), **actor(cfg.vae), **io))  # fmt: skip
    if cfg.caption.model:  # before text_embed: the T5 embedding sees the model caption
        c = cfg.caption
        kind = VllmCaptionStage if c.backend == "vllm" else CaptionStage
        stages.append(kind(model_path=c.model, model_name=c.model_name, prompt=c.prompt,
                           max_new_tokens=c.max_new_tokens, **(actor(c) | {"batch_size": c.batch_size}), **io))
    if cfg.text.model:
        stages.append(TextEmbedStage(model_path=cfg.text.model, model_name=cfg.text.name,
                                     captions_per_forward=cfg.text.batch_size, **actor(cfg.text), **io))  # fmt: skip
    q = cfg.quality
    stages.append(QualityTagStage(min_short_side=q.min_short_side, watermark=q.watermark, text_area=q.text_area,
                                  min_caption_words=q.min_caption_words, min_aesthetic=q.min_aesthetic, **per_clip))
    stages.append(WriteStage(resources=cpu, batch_size=run.write_batch_size, clips_uri=clips_uri,
                             config_hash=config_hash, storage_options=cfg.storage.lance_options))  # fmt: skip
    if isinstance(shot_split, TransNetShotSplitStage):
        _size_decoders(shot_split, stages, cfg, cpus, gpus, share)
    return stages


def _codec_gpus(cfg: CurateConfig, gpus: float) -> tuple[float, float]:
    """-> (GPU share of an encoding task, of a decoding task) where the cluster has GPUs: for "auto",
    `run.codec_gpus`; for a GPU codec asked for by name, at least NAMED_CODEC_GPUS; for a CPU codec 0. A GPU
    codec asked for by name on a cluster without GPUs is rejected here, before any work starts."""
    encoder, decoder = cfg.clip.encoder, cfg.run.decoder
    if gpus <= 0:
        if encoder == "h264_nvenc":
            raise ValueError("clip.encoder 'h264_nvenc' needs a GPU and the cluster has none; use 'auto' or 'libx264'")
        if decoder == "cuda":
            raise ValueError("run.decoder 'cuda' needs a GPU and the cluster has none; use 'auto' or 'cpu'")
        return 0.0, 0.0

    def share(codec: str) -> float:
        if codec in ("libx264", "cpu"):
            return 0.0
        return cfg.run.codec_gpus if codec == "auto" else max(cfg.run.codec_gpus, NAMED_CODEC_GPUS)

    return share(encoder), share(decoder)


def _size_decoders(split: TransNetShotSplitStage, stages: list[Stage], cfg: CurateConfig, cpus: float, gpus: float,
                   share: float) -> None:  # fmt: skip
    """The TransNetV2 actors decode every source and run the CPU stages after it (stages.group): unless
    `clip.transnet_actors` is set, as many as 3/4 of the CPUs left once every other operator can run one task
    or its actors hold (actors keep their CPUs for the whole run: more would starve the others; the last
    quarter lets the task operators after OCR, e.g. proxies, scale out). Their GPU share is
    TransNetV2's share of the GPUs, split between them."""
    from pipeline.stages.group import group_stages

    groups = group_stages(stages)
    decoding = next(g for g in groups if g.stages[0] is split)
    reserved = sum(g.resources.cpus * max(1, g.actors) for g in groups if g is not decoding)
    if cfg.clip.transnet_actors is None:
        split.actors = max(1, int(0.75 * (cpus - reserved) / decoding.resources.cpus))
    gpu = cfg.clip.transnet_gpus
    if gpu is None:
        gpu = math.floor(share * gpus / split.actors * 1e4) / 1e4 if gpus > 0 else 0.0
    split.resources = Resources(cpus=split.resources.cpus, gpus=min(gpu, 1.0))
    for stage in decoding.stages[1:]:  # in the actor's process: they see the GPU its share holds
        stage.resources = Resources(cpus=stage.resources.cpus)


__all__ = ["Resources", "Stage", "build_stages"]
