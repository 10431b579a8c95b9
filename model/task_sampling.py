"""Multi-task training draws: which tasks a clip qualifies for, which one it makes, and the dropouts.

Paper §3.3: "At each training step, we randomly sample a video input, assign a set of qualified tasks
that fits it, and select one task"; T2I, T2V and I2V are picked 3x as often as the others
(`Task.weight`); 10% (T2V) / 30% (T2I) of prompts are replaced by the null prompt; for the other
tasks the 3D condition (pixels, depth and mask) is zeroed 10% of the time, the task name staying in
the prompt.

Qualification: an image (T = 1) qualifies for the image tasks, a video (T = 4k+1) for the video
tasks whose given spans fit (VEXT needs 17 frames, FLC2V 33: the most frames the draw can give plus
one to generate); colorization needs a colour clip (a grayscale clip cannot teach it); editing needs
an edit pair. A clip's `quality_tags` (curation's `QualityTagStage`) rule out the tasks that
`QUALITY_POLICY` maps them to, before the weighting, so an untagged clip keeps the paper's 3x draws.

Default policy (after the paper: curated-but-flawed data still teaches manipulation): a flaw that the
condition also carries (a watermark or text in the given frames, a dull look, a short caption) is harmless
where the model is asked to keep what it is given (extension, transitions, inpainting, outpainting,
colorization, super-resolution, editing), but a text-driven generation task (T2V, T2I: nothing but the
caption) would learn to draw the flaw unprompted, or, with a short caption, learn from a prompt that
says too little. A low-resolution clip also stays out of super-resolution: its target is the flaw.

| tag | ruled out |
| --- | --- |
| low_res | t2v, t2i, vsr, sisr |
| watermarked, text_heavy, short_caption, low_aesthetic | t2v, t2i |

The null prompt is the empty string: the release's unconditional CFG branch carries no
task tag either. A task of your own (`model.task_plugins`) may add a rule of its own (`QUALIFIERS`).

Every draw comes from one `torch.Generator`, so a seeded generator replays a run exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from enum import Enum

import torch

from model.conditions import Clip, Condition, build_condition, clip_problem, draw_params
from model.tasks import DEFAULT_EXTRA, TASKS, Task

TEXT_DROP = {"t2v": 0.1, "t2i": 0.3}  # share of prompts replaced by NULL_PROMPT
CONDITION_DROP = 0.1  # share of 3D conditions zeroed, for tasks not in TEXT_DROP
NULL_PROMPT = ""
COLOUR_THRESHOLD = 0.02  # mean chroma (max - min channel, [-1, 1] scale) below which a clip is grayscale
# task id -> an extra rule a clip must pass, beyond fitting the task's media and frame count; filled by
# `model.task_plugins.register_task` (the 16 built-in tasks' rules are written out in `qualified_tasks`)
QUALIFIERS: dict[str, Callable[[Clip], bool]] = {}
_TEXT_ONLY = ("t2v", "t2i")
DEFAULT_QUALITY_POLICY: dict[str, tuple[str, ...]] = {
    "low_res": (*_TEXT_ONLY, "vsr", "sisr"),
    "watermarked": _TEXT_ONLY,
    "text_heavy": _TEXT_ONLY,
    "short_caption": _TEXT_ONLY,
    "low_aesthetic": _TEXT_ONLY,
}
# quality tag -> the task ids a clip carrying it never trains; `set_quality_policy` (trainer `tasks.quality_policy`)
QUALITY_POLICY: dict[str, tuple[str, ...]] = dict(DEFAULT_QUALITY_POLICY)


class Dropout(Enum):
    NONE = "none"
    TEXT = "text"
    CONDITION = "condition"


def mean_chroma(frames: torch.Tensor) -> float:
    """Mean over pixels of max(R, G, B) - min(R, G, B) for (3, T, H, W) in [-1, 1], on a subsample of
    about 8 frames and every 4th pixel (a grayscale clip gives 0)."""
    t = frames.shape[1]
    sample = frames[:, :: max(1, t // 8), ::4, ::4]
    return float((sample.amax(0) - sample.amin(0)).mean())


def check_quality_policy(policy: dict[str, list[str] | tuple[str, ...]]) -> None:
    """Every key is a `QUALITY_TAGS` tag and every value a registered task id; ValueError names the bad one."""
    from pipeline.contract.tables import QUALITY_TAGS

    for tag, task_ids in policy.items():
        if tag not in QUALITY_TAGS:
            raise ValueError(f"quality_policy: unknown quality tag {tag!r}; known: {', '.join(QUALITY_TAGS)}")
        for task_id in task_ids:
            if task_id not in TASKS:
                raise ValueError(f"quality_policy[{tag!r}]: unknown task {task_id!r}; known: {', '.join(TASKS)}")


def set_quality_policy(policy: dict[str, list[str] | tuple[str, ...]]) -> None:
    """Replace `QUALITY_POLICY` (call after the task plugins load, so their ids are known)."""
    check_quality_policy(policy)
    QUALITY_POLICY.clear()
    QUALITY_POLICY.update({tag: tuple(ids) for tag, ids in policy.items()})


def ruled_out(tags: tuple[str, ...] | list[str]) -> set[str]:
    """The task ids `tags` rule out under `QUALITY_POLICY`."""
    return {task_id for tag in tags for task_id in QUALITY_POLICY.get(tag, ())}


def qualified_tasks(clip: Clip) -> list[Task]:
    """The tasks `clip` can train, in registry order, less those its quality tags rule out."""
    colour = mean_chroma(clip.frames) > COLOUR_THRESHOLD
    out = ruled_out(clip.quality_tags)
    tasks = []
    for task in TASKS.values():
        if task.id in out or clip_problem(task, clip):
            continue
        if task.condition == "grayscale" and not colour:
            continue
        if task.is_edit and not clip.instruction:
            continue
        if task.id in QUALIFIERS and not QUALIFIERS[task.id](clip):
            continue
        tasks.append(task)
    return tasks


def sample_task(tasks: list[Task], gen: torch.Generator) -> Task:
    """One of `tasks`, picked with probability proportional to `Task.weight`."""
    weights = torch.tensor([t.weight for t in tasks], dtype=torch.float64)
    return tasks[int(torch.multinomial(weights, 1, generator=gen))]


def draw_dropout(task: Task, gen: torch.Generator) -> Dropout:
    """T2V/T2I: drop the text at their rate; other tasks: drop the 3D condition at CONDITION_DROP."""
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    if task.id in TEXT_DROP:
        return Dropout.TEXT if u < TEXT_DROP[task.id] else Dropout.NONE
    return Dropout.CONDITION if u < CONDITION_DROP else Dropout.NONE


def apply_dropout(cond: Condition, dropout: Dropout) -> Condition:
    if dropout is Dropout.TEXT:
        return replace(cond, prompt=NULL_PROMPT, text_dropped=True)
    if dropout is Dropout.CONDITION:
        zeros = {name: torch.zeros_like(getattr(cond, name)) for name in ("pixels", "depth", "mask")}
        return replace(cond, **zeros, condition_dropped=True)
    return cond


def sample_training_condition(clip: Clip, gen: torch.Generator, extra: str = DEFAULT_EXTRA) -> Condition:
    """One training sample's condition: qualify, pick a task, draw its parameters, build, drop out."""
    tasks = qualified_tasks(clip)
    if not tasks:
        shape = tuple(clip.frames.shape)
        raise ValueError(f"clip of shape {shape} qualifies for no task (T = 1 or 4k+1 >= 5; H, W x16)")
    task = sample_task(tasks, gen)
    cond = build_condition(task, clip, draw_params(task, clip, gen), extra)
    return apply_dropout(cond, draw_dropout(task, gen))


def qualifying_counts(rows: Iterable[dict]) -> dict[str, int]:
    """Per registered task id (registry order), how many of `rows` (curated `clips` rows: media_type, n_frames,
    role, edit_instruction, quality_tags) qualify, under the current `QUALITY_POLICY`. From table columns alone:
    a video counts with its longest 4k+1 window, and as colour (its chroma needs the decoded frames)."""
    counts = dict.fromkeys(TASKS, 0)
    cache: dict[tuple, list[Task]] = {}
    for row in rows:
        n = int(row.get("n_frames") or 1)
        t = 1 if row.get("media_type") == "image" else n - (n - 1) % 4
        edit = row.get("role") == "edit_source" and bool(row.get("edit_instruction"))
        key = (t, edit, tuple(sorted(row.get("quality_tags") or ())))
        if key not in cache:
            frames = _COLOUR.expand(3, t, 16, 16)
            clip = Clip(frames, None, "", source=frames if edit else None, instruction="edit" if edit else "",
                        quality_tags=key[2])  # fmt: skip
            cache[key] = qualified_tasks(clip)
        for task in cache[key]:
            counts[task.id] += 1
    return counts


_COLOUR = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1, 1)  # red: chroma 2, a colour clip
