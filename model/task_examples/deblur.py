"""Video deblurring (`vdeblur`): the worked example of a task of your own (README, "A task of your own").

    mfm tasks show --task-plugin model.task_examples.deblur --task vdeblur --input clip.mp4 --out grid.png
    mfm generate --task-plugin model.task_examples.deblur --task vdeblur --video blurry.mp4 ...
    tasks: {plugins: [model.task_examples.deblur]}          # in a training config

The condition: every frame given (mask all ones), blurred by a Gaussian whose standard deviation is drawn
per sample, uniformly in BLUR_SIGMA pixels, the same on every frame (a camera's defocus or shake is one blur
for a short clip). A manipulation task: the model is told nothing about depth (depth zero). Any video clip
qualifies that fits the video tasks' rule (T = 4k+1 >= 5 frames), so this module sets no `qualifies` rule.
When generating, the user's blurry video is the condition as it is: no blur is added.

The blur is separable: a normalized 1-D Gaussian of radius ceil(3 sigma) (at most the frame's shorter side
less one), along the height then the width, the frame reflected at its borders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.conditions import Clip, ConditionKind, Shape
from model.task_inputs import UserInputs
from model.task_plugins import TaskPlugin
from model.tasks import Task

BLUR_SIGMA = (0.5, 3.0)  # Gaussian standard deviation range, in pixels


@dataclass(frozen=True)
class Blur:
    """The drawn blur: the Gaussian's standard deviation and the kernel's radius, in pixels."""

    sigma: float
    radius: int


def gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    """(2 radius + 1,) weights of a Gaussian of std `sigma`, summing to one."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(frames: torch.Tensor, blur: Blur) -> torch.Tensor:
    """(3, T, H, W) -> the same, each frame blurred (separable, reflected borders)."""
    c, t, h, w = frames.shape
    r = blur.radius
    k = gaussian_kernel(blur.sigma, r).to(frames)
    x = frames.transpose(0, 1).reshape(t * c, 1, h, w)  # (T·3, 1, H, W)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))  # along H
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))  # along W
    return x.reshape(t, c, h, w).transpose(0, 1)


def draw_blur(task: Task, shape: Shape, gen: torch.Generator, benchmark: bool) -> Blur:
    """A seeded sigma in BLUR_SIGMA (training and benchmark alike, as super-resolution's factor)."""
    _, h, w = shape
    low, high = BLUR_SIGMA
    sigma = low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))
    return Blur(sigma, min(math.ceil(3 * sigma), min(h, w) - 1))


def blurred_frames(clip: Clip, params: Blur) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels: the blurred clip; mask: all ones (every pixel given)."""
    return gaussian_blur(clip.frames, params), torch.ones_like(clip.frames[:1])


VDEBLUR = Task(
    id="vdeblur",  # the id of `--task`, of output files and benchmark rows
    prompt_name="video deblurring",  # the prompt ends in "#task: video deblurring"
    release_id=None,  # the released inference script has no such task
    media="video",  # T = 4k+1 frames
    condition="gaussian_blur",  # the condition kind below (CONDITION_KINDS["gaussian_blur"])
    generation=False,  # manipulation: depth maps stay zero
    given="all frames, Gaussian-blurred (sigma 0.5-3 px)",  # for `mfm tasks list`
    weight=1.0,  # as often as the other manipulation tasks (T2V, I2V and T2I have 3)
    generate_extra="clean, sharp, extremely detailed",  # prompt words at generation, as SR's
)

TASK_PLUGINS = [
    TaskPlugin(
        VDEBLUR,
        kind=ConditionKind(draw_blur, blurred_frames),
        user_inputs=UserInputs(("video",), "one blurry video to sharpen"),
    )
]
