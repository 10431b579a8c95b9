"""Aspect-ratio buckets: the sample sizes of a training stage. The trainer crops samples to them; curation
stores proxies that cover them, so the trainer's crop needs no resampling."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from model.geometry import SIZE_MULTIPLE, size_problem

DEFAULT_ASPECT_RATIOS = (9 / 16, 3 / 4, 1.0, 4 / 3, 16 / 9)  # width / height


def parse_size(text: str) -> tuple[int, int]:
    """"HxW" with H and W positive multiples of 16 -> (H, W); ValueError naming the text otherwise."""
    h, _, w = text.partition("x")
    if not (h.isdigit() and w.isdigit()) or size_problem(int(h), int(w)):
        raise ValueError(f"size {text!r} is not 'HxW' with H and W positive multiples of {SIZE_MULTIPLE}")
    return int(h), int(w)


def aspect_buckets(
    height: int, width: int, ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS, multiple: int = SIZE_MULTIPLE
) -> list[tuple[int, int]]:
    """(H, W) per aspect ratio, about height·width pixels, sides multiples of `multiple`."""
    area = height * width
    out = []
    for ratio in ratios:
        h = max(multiple, round(math.sqrt(area / ratio) / multiple) * multiple)
        w = max(multiple, round(math.sqrt(area * ratio) / multiple) * multiple)
        if (h, w) not in out:
            out.append((h, w))
    return out


def nearest_bucket(h: int, w: int, buckets: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to w/h (in log space)."""
    return min(buckets, key=lambda b: abs(math.log((w / h) / (b[1] / b[0]))))


def cover_size(h: int, w: int, size: tuple[int, int]) -> tuple[int, int]:
    """An (h, w) frame scaled to cover `size` (H, W): sides even, rounded up, so both are at least H and W."""
    scale = max(size[0] / h, size[1] / w)
    return 2 * math.ceil(round(h * scale, 6) / 2), 2 * math.ceil(round(w * scale, 6) / 2)
