"""Captions for the clips that came with none: a vision-language model looks at the clip's middle frame.

Two backends, one prompt: `CaptionStage` runs a transformers image-text-to-text model (`AutoModelForImageTextToText`
+ `AutoProcessor`, the processor's chat template) in an actor pool; `vllm_caption` runs the same prompt through
Ray Data's LLM batch processor (`ray.data.llm`) on a cluster with vLLM. Both run before `text_embed`, so the
T5 embedding sees the model caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.contract import codecs
from pipeline.stages.base import WORK_SCHEMA, Stage, is_active, rejecting_on_error, row_frames
from pipeline.weights import local_weights


def needs_caption(row: dict[str, Any]) -> bool:
    """An active clip whose caption is empty."""
    return is_active(row) and not (row.get("caption") or "").strip()


def middle_frame(row: dict[str, Any]) -> np.ndarray:
    """uint8 (H, W, 3): the middle stored frame (the `frames` column when kept, else the encoded `video`)."""
    if row.get("frames") is not None:
        return row_frames(row)[row["n_frames"] // 2]
    n = int(row.get("n_frames") or 1)
    return codecs.decode_video(row["video"], indices=[n // 2])[0]


def chat(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the image, then the prompt (the message shape chat templates expect)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


@dataclass
class CaptionStage(Stage):
    """Clips with an empty `caption` -> `caption` from the VLM, `caption_source` "model", `caption_model`.

    Runs in an actor pool: `setup` loads the model and processor once per actor from `model_path`.
    """

    name = "caption"
    reads = ("caption", "frames", "video", "n_frames")
    writes = ("caption", "caption_source", "caption_model")

    model_path: str = ""
    model_name: str = "vlm"
    prompt: str = "Describe this video."
    max_new_tokens: int = 64

    def setup(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"
        path = local_weights(self.model_path, self.storage_options, self.cache_dir)
        self.processor = AutoProcessor.from_pretrained(path)
        self.processor.tokenizer.padding_side = "left"  # decoder-only generation pads on the left
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.text = self.processor.apply_chat_template(chat(self.prompt), add_generation_prompt=True)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        todo = [row for row in rows if needs_caption(row)]
        if todo:
            with rejecting_on_error(todo, "model_error", self.name):
                for row, caption in zip(todo, self.generate([middle_frame(r) for r in todo]), strict=True):
                    row["caption"], row["caption_source"], row["caption_model"] = caption, "model", self.model_name
        return rows

    def generate(self, images: list[np.ndarray]) -> list[str]:
        """One caption per uint8 (H, W, 3) image, greedy."""
        import torch

        inputs = self.processor(images=images, text=[self.text] * len(images), return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = self.model.generate(**inputs.to(self.device), max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]  # the generated tokens only
        return [text.strip() for text in self.processor.batch_decode(new, skip_special_tokens=True)]


def vllm_config(stage: CaptionStage) -> Any:
    """The `ray.data.llm` vLLM engine config for `stage`: its model, actors and batch size, images on."""
    import ray.data.llm as llm

    return llm.vLLMEngineProcessorConfig(
        model_source=local_weights(stage.model_path, stage.storage_options, stage.cache_dir),
        concurrency=max(1, stage.actors), batch_size=stage.batch_size, prepare_multimodal_stage=True,
        engine_kwargs={"max_model_len": 4096},
    )  # fmt: skip


def vllm_caption(ds: Any, stage: CaptionStage) -> Any:
    """The same captioning through `ray.data.llm` (vLLM engine actors); rows that have a caption pass through."""
    import ray.data.llm as llm  # needs vllm; config.CaptionConfig refuses backend "vllm" without it
    from PIL import Image

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        messages = chat(stage.prompt)
        messages[0]["content"][0] = {"type": "image", "image": Image.fromarray(middle_frame(row))}
        return {**row, "messages": messages, "sampling_params": {"max_tokens": stage.max_new_tokens,
                                                                 "temperature": 0.0}}  # fmt: skip

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        caption = str(row.get("generated_text") or "").strip()
        row = {k: v for k, v in row.items() if k in WORK_SCHEMA.names}  # drop the processor's own columns
        return row | {"caption": caption, "caption_source": "model", "caption_model": stage.model_name}

    build = getattr(llm, "build_processor", None) or llm.build_llm_processor  # renamed in Ray 2.5x
    processor = build(vllm_config(stage), preprocess=preprocess, postprocess=postprocess)
    todo = ds.filter(needs_caption)
    done = ds.filter(lambda row: not needs_caption(row))
    return processor(todo).union(done)


@dataclass
class VllmCaptionStage(CaptionStage):
    """`CaptionStage` through vLLM: `apply` makes it Ray Data's LLM processor instead of an actor pool."""

    def apply(self, ds: Any) -> Any:
        return vllm_caption(ds, self)
