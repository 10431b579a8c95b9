"""Text and watermark signals of each clip from PP-OCR's text detector (rapidocr, ONNX models in its wheel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.contract import codecs
from pipeline.ops import ocr
from pipeline.ops.blur import sample_indices
from pipeline.stages.base import Stage, is_active, rejecting_on_error, row_frames
from pipeline.weights import local_weights


@dataclass
class OcrStage(Stage):
    """Stored clip -> `text_area`, `text_boxes`, `watermark` from the PP-OCR detector on `n_frames` sampled frames.

    Runs in an actor pool: `setup` builds one detector-only RapidOCR per actor (CPU, or ONNX Runtime's CUDA
    provider when the stage holds a GPU and onnxruntime-gpu is installed). Frames are shrunk to `max_side`.
    """

    name = "ocr"
    reads = ("video", "frames", "n_frames", "height", "width")
    writes = ("text_area", "text_boxes", "watermark")

    n_frames: int = 4
    max_side: int = 640  # detector input: longest side, px
    border: float = 0.15  # watermark: boxes wholly inside this share of a side
    min_iou: float = 0.5  # watermark: consecutive-frame box matches below this count as 0
    det_thresh: float = 0.3  # detector pixel threshold
    box_thresh: float = 0.5  # detector box score threshold
    max_line_height: float = 0.35  # boxes taller than this share of the frame are not text lines: dropped
    watermark_model: str = ""  # optional learned watermark classifier (ONNX); "" off
    watermark_class: int = 0  # the classifier's output index that means "watermarked"

    def setup(self) -> None:
        import onnxruntime
        import torch
        from rapidocr import RapidOCR

        cuda = (self.resources.gpus > 0 and torch.cuda.is_available()
                and "CUDAExecutionProvider" in onnxruntime.get_available_providers())  # fmt: skip
        threads = max(1, round(self.resources.cpus))
        self.provider = "cuda" if cuda else "cpu"
        self.engine = RapidOCR(params={
            "Global.use_cls": False, "Global.use_rec": False, "Global.log_level": "error",
            "Det.limit_type": "max", "Det.limit_side_len": self.max_side,
            "Det.thresh": self.det_thresh, "Det.box_thresh": self.box_thresh,
            "EngineConfig.onnxruntime.use_cuda": cuda,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })  # fmt: skip
        self.detect(np.zeros((64, 64, 3), np.uint8))  # loads the shipped det model now, not on the first clip
        self.classifier = None
        if self.watermark_model:
            path = local_weights(self.watermark_model, self.storage_options, self.cache_dir)
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
            self.classifier = WatermarkClassifier(onnxruntime.InferenceSession(path, providers=providers),
                                                  self.watermark_class)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if not is_active(row) or (row.get("video") is None and row.get("frames") is None):
                continue
            with rejecting_on_error(row, "model_error", self.name):
                boxes, areas = [], []
                frames = self._frames(row)
                for frame in frames:
                    h, w = frame.shape[:2]
                    quads = ocr.text_lines(self.detect(frame), h, self.max_line_height)
                    areas.append(ocr.text_area(quads, h, w))
                    boxes.append(ocr.normalised_boxes(quads, h, w))
                row["text_area"] = float(np.mean(areas))
                row["text_boxes"] = boxes[0]
                row["watermark"] = ocr.watermark_score(boxes, self.border, self.min_iou)
                if self.classifier is not None:  # either finds the overlay: text that stays put, or the classifier
                    learned = self.classifier(frames)
                    row["watermark"] = learned if row["watermark"] is None else max(row["watermark"], learned)
        return rows

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> text quadrilaterals (N, 4, 2) in the frame's pixels."""
        out = self.engine(np.ascontiguousarray(frame[..., ::-1]), use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(out, "boxes", None)
        return np.zeros((0, 4, 2), np.float32) if boxes is None or len(boxes) == 0 else np.asarray(boxes)

    def _frames(self, row: dict[str, Any]) -> np.ndarray:
        """`n_frames` frames spread over the stored clip, longest side <= `max_side`: uint8 (N, h, w, 3)."""
        indices = sample_indices(0, row["n_frames"], self.n_frames)
        frames = row_frames(row)[indices] if row.get("frames") is not None else codecs.decode_video(
            row["video"], indices)  # fmt: skip
        scale = self.max_side / max(frames.shape[1:3])
        if scale >= 1:
            return frames
        size = (max(1, round(frames.shape[2] * scale)), max(1, round(frames.shape[1] * scale)))
        return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


class WatermarkClassifier:
    """A learned watermark classifier in ONNX (e.g. LAION's watermark detector, exported): frames (N, 3, S, S),
    RGB in [0, 1] normalised with ImageNet's mean and std, -> logits (N, C); the score is the mean softmax
    probability of `positive` over the sampled frames. S is the model's input size (224 when dynamic)."""

    MEAN = np.array([0.485, 0.456, 0.406], np.float32)
    STD = np.array([0.229, 0.224, 0.225], np.float32)

    def __init__(self, session: Any, positive: int = 0) -> None:
        self.session, self.positive = session, positive
        spec = session.get_inputs()[0]
        self.input = spec.name
        self.size = spec.shape[-1] if isinstance(spec.shape[-1], int) else 224

    def __call__(self, frames: np.ndarray) -> float:
        x = np.stack([cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_AREA) for f in frames])
        x = ((x.astype(np.float32) / 255.0 - self.MEAN) / self.STD).transpose(0, 3, 1, 2)  # (N, 3, S, S)
        logits = self.session.run(None, {self.input: np.ascontiguousarray(x)})[0].astype(np.float64)  # (N, C)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return float((p[:, self.positive] / p.sum(axis=1)).mean())
