"""Text-box math for the OCR stage: covered area, normalised boxes and a persistence (watermark) score.

Boxes are PP-OCR detector quadrilaterals (N, 4, 2) in pixels, or axis-aligned [x0, y0, x1, y1] in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np


def text_area(quads: np.ndarray, height: int, width: int) -> float:
    """Share of an (H, W) frame covered by the union of the quadrilaterals (overlaps counted once)."""
    if len(quads) == 0:
        return 0.0
    mask = np.zeros((height, width), np.uint8)
    for q in quads:  # one call per box: a single fillPoly of several polygons XORs their overlaps
        cv2.fillPoly(mask, [np.round(q).astype(np.int32)], 1)
    return float(mask.mean())


def normalised_boxes(quads: np.ndarray, height: int, width: int) -> list[list[float]]:
    """Quadrilaterals (N, 4, 2) px -> axis-aligned [x0, y0, x1, y1] in [0, 1]."""
    boxes = []
    for q in quads:
        x0, y0 = q.min(axis=0) / (width, height)
        x1, y1 = q.max(axis=0) / (width, height)
        boxes.append([float(np.clip(v, 0.0, 1.0)) for v in (x0, y0, x1, y1)])
    return boxes


def in_border(box: list[float], band: float) -> bool:
    """True when the box lies wholly inside the band of width `band` along one of the four borders."""
    x0, y0, x1, y1 = box
    return x1 <= band or y1 <= band or x0 >= 1 - band or y0 >= 1 - band


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def watermark_score(frames_boxes: list[list[list[float]]], band: float = 0.15, min_iou: float = 0.5) -> float | None:
    """0-1 score of border overlays that stay put: for each pair of consecutive sampled frames, the best IoU
    between a border box of one and a border box of the next (0 when below `min_iou`), averaged over the
    pairs. None with fewer than two frames (persistence is unknown)."""
    if len(frames_boxes) < 2:
        return None
    border = [[b for b in boxes if in_border(b, band)] for boxes in frames_boxes]
    pair_scores = []
    for prev, nxt in zip(border[:-1], border[1:]):
        best = max((iou(a, b) for a in prev for b in nxt), default=0.0)
        pair_scores.append(best if best >= min_iou else 0.0)
    return float(np.mean(pair_scores))


def text_lines(quads: np.ndarray, height: int, max_line_height: float) -> np.ndarray:
    """The quadrilaterals (N, 4, 2) no taller than `max_line_height` of the frame: a "line" taller than that is
    the detector answering a texture (seen on panning synthetic textures: one box over the whole frame)."""
    if len(quads) == 0:
        return quads
    tall = (quads[..., 1].max(axis=1) - quads[..., 1].min(axis=1)) > max_line_height * height
    return quads[~tall]
