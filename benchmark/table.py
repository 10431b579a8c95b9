"""The MfM-Benchmark Lance table: one row per sample, written by `mfm benchmark build`, read by run and eval.

A sample is a source clip standardized to the benchmark's size and frame count (the ground truth), a task,
and the seed that fixed its condition (`model.conditions.benchmark_condition` is a pure function of task,
ground truth and seed, so the run rebuilds the exact condition from the stored ground truth). The
condition's pixels and mask are stored too, as media, for viewing and for other methods to run on.

| column | type | meaning |
| --- | --- | --- |
| sample_id | string | "<task>-<index:03d>", the output file's stem |
| task, task_name | string | task id and its prompt name |
| media_type | string | "video" or "image" |
| index | int32 | the sample's number within its task |
| seed | int64 | fixes the condition draws and the initial noise |
| clip_id, source_uri | string | the `clips` row the ground truth came from |
| caption | string | the source clip's caption |
| instruction | string | editing tasks: the style instruction (the prompt text); "" otherwise |
| prompt | string | the full prompt the model gets (caption/instruction, extra words, task tag) |
| params | string | JSON of the condition's drawn parameters (type + fields) |
| n_frames, height, width | int32 | the ground truth's shape (an image task has 1 frame) |
| fps | float32 | frame rate of the ground truth |
| gt | large_binary | the ground truth: H.264 mp4 for videos, PNG for images (`pipeline.contract.codecs.decode_video`) |
| input | large_binary | the condition's pixels (RGB * mask; not-given pixels mid-grey), same encoding |
| mask | large_binary | the condition's mask (white = given), same encoding |

Schema metadata: `mfm.table` = "benchmark", `mfm.benchmark_version`, and `mfm.benchmark_build` (JSON: the
clips table and version it came from, the selection thresholds, sizes and seed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import pyarrow as pa
import torch

from model.conditions import Bands, Box, Clip, Condition, FrameSpans, NoParams, Params, Scale
from model.tasks import get_task
from pipeline.contract.codecs import decode_video, encode_image, encode_video
from pipeline.contract.frames import frames_to_tensor, tensor_to_frames

TABLE_NAME = "benchmark"
BENCHMARK_VERSION = "1"
TABLE_KEY = "mfm.table"
VERSION_KEY = "mfm.benchmark_version"
BUILD_KEY = "mfm.benchmark_build"
GT_CRF = 10  # H.264 quality of stored ground truth (visually lossless); the run and eval decode the same bytes

BENCHMARK_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("task_name", pa.string(), nullable=False),
        pa.field("media_type", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("params", pa.string(), nullable=False),
        pa.field("n_frames", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("fps", pa.float32(), nullable=False),
        pa.field("gt", pa.large_binary(), nullable=False),
        pa.field("input", pa.large_binary(), nullable=False),
        pa.field("mask", pa.large_binary(), nullable=False),
    ]
)
META_COLUMNS = [f.name for f in BENCHMARK_SCHEMA if f.name not in ("gt", "input", "mask")]

_PARAM_TYPES = {cls.__name__: cls for cls in (NoParams, FrameSpans, Box, Bands, Scale)}


def schema_with_build(build: dict[str, Any]) -> pa.Schema:
    return BENCHMARK_SCHEMA.with_metadata(
        {TABLE_KEY: TABLE_NAME, VERSION_KEY: BENCHMARK_VERSION, BUILD_KEY: json.dumps(build, sort_keys=True)}
    )


def check_benchmark_schema(schema: pa.Schema, uri: str) -> dict[str, Any]:
    """Raise ValueError unless `schema` is a benchmark table of our version; return its build record."""
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    if meta.get(TABLE_KEY) != TABLE_NAME or meta.get(VERSION_KEY) != BENCHMARK_VERSION:
        raise ValueError(
            f"{uri} is not an MfM-Benchmark table of version {BENCHMARK_VERSION} (metadata {TABLE_KEY}="
            f"{meta.get(TABLE_KEY)!r}, {VERSION_KEY}={meta.get(VERSION_KEY)!r}); build one with `mfm benchmark build`"
        )
    missing = [name for name in BENCHMARK_SCHEMA.names if name not in schema.names]
    if missing:
        raise ValueError(f"{uri}: benchmark table lacks columns {missing}")
    return json.loads(meta.get(BUILD_KEY, "{}"))


# --- params <-> JSON ---


def params_to_json(params: Params) -> str:
    return json.dumps({"type": type(params).__name__, **asdict(params)}, sort_keys=True)


def params_from_json(text: str) -> Params:
    d = json.loads(text)
    cls = _PARAM_TYPES[d.pop("type")]
    values = {f.name: tuple(d[f.name]) if isinstance(d[f.name], list) else d[f.name] for f in fields(cls)}
    return cls(**values)


# --- media ---


def encode_media(frames: torch.Tensor, fps: float) -> bytes:
    """(3, T, H, W) in [-1, 1] -> PNG bytes (T == 1) or H.264 mp4 bytes."""
    rgb = tensor_to_frames(frames)
    return encode_image(rgb[0]) if rgb.shape[0] == 1 else encode_video(rgb, fps, crf=GT_CRF)


def decode_media(data: bytes) -> torch.Tensor:
    """Stored media bytes -> (3, T, H, W) float in [-1, 1]."""
    return frames_to_tensor(decode_video(data))


# --- a sample ---


@dataclass(frozen=True)
class Sample:
    """One benchmark row, metadata only (media are read with `read_sample_media`)."""

    sample_id: str
    task: str
    task_name: str
    media_type: str
    index: int
    seed: int
    clip_id: str
    source_uri: str
    caption: str
    instruction: str
    prompt: str
    params: str
    n_frames: int
    height: int
    width: int
    fps: float
    row: int  # position in the table (for `take`)

    def clip(self, gt: torch.Tensor) -> Clip:
        """The clip the benchmark condition is built from: the ground truth (also the edit source)."""
        task = get_task(self.task)
        return Clip(gt, caption=self.caption, source=gt if task.is_edit else None, instruction=self.instruction)

    def check_condition(self, cond: Condition) -> None:
        """The rebuilt condition must be the stored one (same drawn parameters and prompt)."""
        if params_to_json(cond.params) != self.params or cond.prompt != self.prompt:
            raise ValueError(
                f"sample {self.sample_id}: the condition rebuilt from the stored ground truth differs from the one "
                f"the table was built with ({params_to_json(cond.params)} vs {self.params}); rebuild the table "
                "with this version of model.conditions"
            )


def read_samples(ds: Any) -> list[Sample]:
    """All samples of a benchmark dataset, in table order."""
    table = ds.to_table(columns=META_COLUMNS)
    return [Sample(**row, row=i) for i, row in enumerate(table.to_pylist())]


def read_sample_media(ds: Any, sample: Sample, column: str) -> torch.Tensor:
    """One sample's `gt`, `input` or `mask` -> (3, T, H, W) in [-1, 1]."""
    data = ds.take([sample.row], columns=[column]).column(column)[0].as_py()
    return decode_media(data)
