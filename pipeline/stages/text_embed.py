"""Caption -> T5 token embeddings (the kept tokens, float16) for every passed clip."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.stages.base import Stage, is_active, rejecting_on_error
from pipeline.weights import local_weights


@dataclass
class TextEmbedStage(Stage):
    """`caption` -> `text_emb`, `text_emb_tokens`, `text_emb_dim`, `text_encoder`.

    Runs in an actor pool: `setup` loads model.text_encoder.TextEncoder once per actor.
    """

    name = "text_embed"
    reads = ("caption",)
    writes = ("text_emb", "text_emb_tokens", "text_emb_dim", "text_encoder")

    model_path: str = ""
    model_name: str = "t5"
    captions_per_forward: int = 16

    def setup(self) -> None:
        import torch

        from model.text_encoder import TextEncoder

        device = "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"
        path = local_weights(self.model_path, self.storage_options, self.cache_dir)
        self.encoder = TextEncoder.from_pretrained(path).to(device)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        todo = [row for row in rows if is_active(row)]
        for start in range(0, len(todo), self.captions_per_forward):
            chunk = todo[start : start + self.captions_per_forward]
            with rejecting_on_error(chunk, "model_error", self.name):
                embeddings = self.encoder.encode_trimmed([row.get("caption") or "" for row in chunk])  # (n, D) each
                for row, emb in zip(chunk, embeddings, strict=True):
                    row["text_emb"] = emb.numpy().astype("float16").tobytes()
                    row["text_emb_tokens"], row["text_emb_dim"] = int(emb.shape[0]), int(emb.shape[1])
                    row["text_encoder"] = self.model_name
        return rows
