"""Curation stages, in pipeline order, built from a `CurateConfig` by `build_stages`."""

from __future__ import annotations

from pipeline.config import CurateConfig, ModelStageConfig
from pipeline.stages.base import Resources, Stage
from pipeline.stages.blur import BlurStage
from pipeline.stages.caption import CaptionStage, VllmCaptionStage
from pipeline.stages.clip_encode import ClipEncodeStage
from pipeline.stages.depth import DepthStage
from pipeline.stages.filter import FilterStage
from pipeline.stages.motion import MotionStage
from pipeline.stages.motion_frames import MotionFramesStage
from pipeline.stages.probe import ProbeStage
from pipeline.stages.proxies import ProxyStage
from pipeline.stages.quality import QualityTagStage
from pipeline.stages.shot_split import ShotSplitStage
from pipeline.stages.text_embed import TextEmbedStage
from pipeline.stages.vae_latents import VaeLatentStage
from pipeline.stages.write import WriteStage


def build_stages(cfg: CurateConfig, clips_uri: str = "", config_hash: str = "", gpus: float = 0.0) -> list[Stage]:
    """The stage list for `cfg`; `gpus` = GPUs in the cluster (model stages with gpus=None share them)."""
    io = {"storage_options": cfg.storage.options, "cache_dir": cfg.run.cache_dir}
    cpu = Resources(cpus=cfg.run.cpus_per_task)
    per_clip = {"resources": cpu, "batch_size": cfg.run.clip_batch_size}
    backend = cfg.motion.backend
    models = [c for c in (cfg.depth, cfg.caption, cfg.text, cfg.vae) if c.model]
    models += [cfg.motion] if backend != "farneback" else []
    share = int(100 / len(models)) / 100 if models else 0.0  # GPUs split evenly between model stages

    def actor(c: ModelStageConfig) -> dict:
        gpu = c.gpus if c.gpus is not None else (share if gpus > 0 else 0.0)
        return {"resources": Resources(cpus=c.cpus, gpus=gpu), "actors": c.actors,
                "batch_size": cfg.run.clip_batch_size}  # fmt: skip

    clip, run = cfg.clip, cfg.run
    stages: list[Stage] = [
        ProbeStage(resources=cpu, batch_size=1, **io),
        ShotSplitStage(resources=cpu, batch_size=1, min_frames=clip.min_frames, max_frames=clip.max_frames,
                       shot_threshold=clip.shot_threshold, shot_ratio=clip.shot_ratio,
                       min_shot_frames=clip.min_shot_frames,
                       scan_long_side=clip.scan_long_side, max_side=clip.max_side,
                       reject_short=not run.score_only, **io),  # fmt: skip
        BlurStage(n_frames=cfg.blur.n_frames, **per_clip, **io),
        MotionFramesStage(n_pairs=cfg.motion.n_pairs, pair_gap=cfg.motion.pair_gap,
                          analysis_short_side=cfg.motion.analysis_short_side, **per_clip, **io),  # fmt: skip
        MotionStage(backend=backend, raft_weights=cfg.motion.raft_weights, flow_updates=cfg.motion.flow_updates,
                    pair_gap=cfg.motion.pair_gap, **(actor(cfg.motion) if backend != "farneback" else per_clip),
                    **io),  # fmt: skip
        FilterStage(blur_threshold=cfg.blur.threshold, motion_threshold=cfg.motion.threshold,
                    score_only=run.score_only, **per_clip),  # fmt: skip
        ClipEncodeStage(crf=clip.crf, preset=clip.preset,
                        keep_frames=bool(cfg.depth.model or cfg.vae.model or cfg.proxies.phases or cfg.caption.model),
                        **per_clip, **io),  # fmt: skip
    ]
    if cfg.depth.model:
        stages.append(DepthStage(model_path=cfg.depth.model, model_name=cfg.depth.name,
                                 frames_per_forward=cfg.depth.batch_size, precision=cfg.depth.precision,
                                 **actor(cfg.depth), **io))  # fmt: skip
    if cfg.proxies.phases:
        stages.append(ProxyStage(phases=cfg.proxies.phase_sizes, aspect_ratios=tuple(cfg.proxies.aspect_ratios),
                                 crf=cfg.proxies.crf, preset=clip.preset, **per_clip))  # fmt: skip
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
    return stages


__all__ = ["Resources", "Stage", "build_stages"]
