"""Per-clip quality tags from the scores other stages wrote: what `qualified_tasks` in the trainer rules out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.contract.tables import QUALITY_TAGS
from pipeline.stages.base import Stage


@dataclass
class QualityTagStage(Stage):
    """Scores -> `quality_tags` (in `QUALITY_TAGS` order); a tag whose signal column is null is not set.

    low_res: source short side < min_short_side; watermarked: watermark >= watermark; text_heavy:
    text_area >= text_area; short_caption: fewer than min_caption_words words; low_aesthetic: aesthetic <
    min_aesthetic. Cheap and CPU-only: runs last, before write.
    """

    name = "quality_tags"
    reads = ("source_width", "source_height", "watermark", "text_area", "caption", "aesthetic")
    writes = ("quality_tags",)

    min_short_side: int = 256
    watermark: float = 0.5
    text_area: float = 0.05
    min_caption_words: int = 5
    min_aesthetic: float = 4.5

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if row.get("is_clip"):
                row["quality_tags"] = self.tags(row)
        return rows

    def tags(self, row: dict[str, Any]) -> list[str]:
        """The tags of one clip row."""
        w, h = row.get("source_width"), row.get("source_height")
        flagged = {
            "low_res": w is not None and h is not None and min(w, h) < self.min_short_side,
            "watermarked": _at_least(row.get("watermark"), self.watermark),
            "text_heavy": _at_least(row.get("text_area"), self.text_area),
            "short_caption": row.get("caption") is not None and len(row["caption"].split()) < self.min_caption_words,
            "low_aesthetic": row.get("aesthetic") is not None and row["aesthetic"] < self.min_aesthetic,
        }
        return [tag for tag in QUALITY_TAGS if flagged[tag]]


def _at_least(value: float | None, threshold: float) -> bool:
    return value is not None and value >= threshold
