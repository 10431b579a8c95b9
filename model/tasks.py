"""The 16 MfM tasks: one registry that training, the benchmark and generation all read.

Tasks of your own join `TASKS` through `model.task_plugins.register_task`, never by editing this table.

Every task is the same model input, a pixel-space condition [RGB * mask, depth, mask] plus a prompt
that ends in the task's name (paper §3.1). A `Task` says which condition kind builds its condition
(`model.conditions`), whether it is a generation task (depth maps on its given frames) or a
manipulation task (depth zero), how often training picks it (paper §3.3: T2I, T2V and I2V 3x the
others) and, for videos, how many frames a clip needs.

Prompt names and the release's task ids come from the released inference script
(leeruibin/MfM `infer_mfm_pipeline.py`, `task_map`); image editing has no release name, so its
name is ours. The prompt is put together exactly as the release does:
`caption + " " + extra + " " + "#task: " + name`, with `extra` "#FPS: 16." by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_EXTRA = "#FPS: 16."

Media = Literal["image", "video"]


@dataclass(frozen=True)
class Task:
    """One of the 16 tasks."""

    id: str  # our id, e.g. "flf2v"
    prompt_name: str  # the name after "#task: " in the prompt, e.g. "image-to-image transition"
    release_id: str | None  # the release CLI's id ("itrans"); None where the release has none
    media: Media  # "image": one frame; "video": T = 4k+1 frames
    condition: str  # condition kind in model.conditions.CONDITION_KINDS
    generation: bool  # True: depth maps join on the given frames; False (manipulation): depth is zero
    given: str  # what the condition gives, in words (for `mfm tasks list`)
    weight: float = 1.0  # relative training frequency among the tasks a clip qualifies for
    first_frames: tuple[int, int] = (0, 0)  # "frames" kind: given frames at the start, (fewest, most)
    last_frames: tuple[int, int] = (0, 0)  # "frames" kind: given frames at the end, (fewest, most)
    generate_extra: str = DEFAULT_EXTRA  # the extra prompt words the release uses when generating

    @property
    def is_video(self) -> bool:
        return self.media == "video"

    @property
    def is_edit(self) -> bool:
        return self.condition == "edit_source"

    @property
    def min_frames(self) -> int:
        """Fewest frames a clip needs: the largest given spans plus one frame to generate; a video at least
        MIN_VIDEO_FRAMES (one latent frame beyond the first); an image one."""
        if not self.is_video:
            return 1
        return max(MIN_VIDEO_FRAMES, self.first_frames[1] + self.last_frames[1] + 1)


# The release swaps "#FPS: 16." for these words when it generates colorization and super-resolution.
_COLOR_EXTRA = "natural, vibrant"
_SR_EXTRA = "clean, extremely detailed, high-resolution, 4k"
MIN_VIDEO_FRAMES = 5  # VAE: 4k+1 frames -> k+1 latent frames; a video has at least two latent frames
_CLIP = (8, 16)  # VEXT / FLC2V: the first (and last) 8-16 frames are given (paper §4.1)
_ONE = (1, 1)

TASKS: dict[str, Task] = {
    t.id: t
    for t in [
        Task("t2v", "text-to-video", "t2v", "video", "none", True, "nothing (text only)", 3.0),
        Task("i2v", "image-to-video", "i2v", "video", "frames", True, "first frame", 3.0, first_frames=_ONE),
        Task("vext", "video extending", "vexd", "video", "frames", True, "first 8-16 frames",
             first_frames=_CLIP),
        Task("flf2v", "image-to-image transition", "itrans", "video", "frames", True, "first and last frame",
             first_frames=_ONE, last_frames=_ONE),
        Task("flc2v", "video-to-video transition", "vtrans", "video", "frames", True,
             "first 8-16 and last 8-16 frames", first_frames=_CLIP, last_frames=_CLIP),
        Task("vinp", "video inpainting", "vinp", "video", "interior_mask", False,
             "all frames outside an interior hole (1/9-1/4 of the pixels)"),
        Task("voutp", "video outpainting", "voutp", "video", "boundary_mask", False,
             "all frames inside a boundary band (1/8-1/4 of width/height)"),
        Task("vcolor", "video colorization", "vcolor", "video", "grayscale", False, "grayscale frames",
             generate_extra=_COLOR_EXTRA),
        Task("vsr", "video super-resolution", "vsr", "video", "downsample", False,
             "frames down-sampled 2-6x, brought back to full size", generate_extra=_SR_EXTRA),
        Task("vedit", "video editing", "vedit", "video", "edit_source", False,
             "the source video; the prompt is the instruction"),
        Task("t2i", "text-to-image", "t2i", "image", "none", True, "nothing (text only)", 3.0),
        Task("sisr", "image super-resolution", "isr", "image", "downsample", False,
             "image down-sampled 2-6x, brought back to full size", generate_extra=_SR_EXTRA),
        Task("iinp", "image inpainting", "iinp", "image", "interior_mask", False,
             "the image outside an interior hole (1/9-1/4 of the pixels)"),
        Task("ioutp", "image outpainting", "ioutp", "image", "boundary_mask", False,
             "the image inside a boundary band (1/8-1/4 of width/height)"),
        Task("icolor", "image colorization", "icolor", "image", "grayscale", False, "grayscale image",
             generate_extra=_COLOR_EXTRA),
        Task("iedit", "image editing", None, "image", "edit_source", False,
             "the source image; the prompt is the instruction"),
    ]
}


def get_task(task_id: str) -> Task:
    """The task with this id (ours, or the release's such as "vexd"); ValueError lists the choices."""
    if task_id in TASKS:
        return TASKS[task_id]
    for task in TASKS.values():
        if task.release_id == task_id:
            return task
    raise ValueError(f"unknown task {task_id!r}; choose one of {', '.join(TASKS)} (a task of your own: load its "
                     "module with --task-plugin, MFM_TASK_PLUGINS or the config's tasks.plugins)")


def make_prompt(text: str, task: Task, extra: str = DEFAULT_EXTRA) -> str:
    """`text + " " + extra + " #task: name`, spaced exactly as the release builds it."""
    return f"{text} {extra} #task: {task.prompt_name}"
