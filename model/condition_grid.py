"""A picture of a condition, like the paper's Figure 3: pixel, depth and mask rows over a few frames.

Masks are checked by looking: white = given, black = to generate. Pixels are drawn as the model sees
them (RGB * mask, so generated regions show as mid-gray 0); depth is scaled by its maximum.
"""

from __future__ import annotations

import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from model.conditions import Condition, NoParams
from model.tasks import get_task

BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
FONT_SIZE = 13
ROW_LABEL_WIDTH = 64
PAD = 6
MIN_WIDTH = 640


def grid_columns(mask: torch.Tensor, max_columns: int = 8) -> list[int]:
    """Frames to show for a (1, T, H, W) mask: the first, the last, both sides of every switch between
    frames with and without given pixels, then evenly spaced frames up to `max_columns`."""
    t = mask.shape[1]
    has_given = (mask.flatten(2).amax(-1)[0] > 0).tolist()  # (T,)
    keys = {0, t - 1}
    for i in range(1, t):
        if has_given[i] != has_given[i - 1]:
            keys |= {i - 1, i}
    columns = sorted(keys)
    if len(columns) > max_columns:
        columns = [columns[round(j * (len(columns) - 1) / (max_columns - 1))] for j in range(max_columns)]
    for i in np.linspace(0, t - 1, max_columns).round().astype(int).tolist():
        if len(columns) >= min(max_columns, t):
            break
        if i not in columns:
            columns.append(i)
    return sorted(set(columns))


def _to_image(plane: torch.Tensor, size: tuple[int, int], nearest: bool) -> Image.Image:
    """(C, H, W) in [0, 1] -> a PIL image resized to `size` (w, h)."""
    array = (plane.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return image.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)


def condition_grid(
    cond: Condition, depth_note: str = "", max_columns: int = 8, cell: int | None = None
) -> Image.Image:
    """Rows pixels / depth / mask, one column per chosen frame, the task, prompt and parameters as a title.
    `cell`: the longer side of a frame in the picture (default: the frame's own, within 128-256)."""
    h, w = cond.pixels.shape[-2:]
    cell = cell or min(256, max(128, h, w))
    scale = cell / max(h, w)
    cell_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    upscale = scale >= 1
    columns = grid_columns(cond.mask, max_columns)
    depth_max = float(cond.depth.max())
    rows = [
        ("pixels", lambda i: _to_image(cond.pixels[:, i] * 0.5 + 0.5, cell_size, upscale)),
        ("depth", lambda i: _to_image(cond.depth[:, i] / max(depth_max, 1e-8), cell_size, upscale)),
        ("mask", lambda i: _to_image(cond.mask[:, i], cell_size, True)),
    ]

    font = ImageFont.load_default(size=FONT_SIZE)
    width = max(MIN_WIDTH, ROW_LABEL_WIDTH + len(columns) * (cell_size[0] + PAD) + PAD)
    chars = max(20, int(width / (FONT_SIZE * 0.55)))
    title = [f"{cond.task}: {cond.prompt.rsplit('#task: ', 1)[-1]}   condition {tuple(cond.pixels.shape)}"]
    title += textwrap.wrap(f"prompt: {cond.prompt!r}", chars)
    if not isinstance(cond.params, NoParams):
        title += textwrap.wrap(f"params: {cond.params}", chars)
    role = "generation task: depth on given pixels" if get_task(cond.task).generation else "manipulation task: depth 0"
    title += textwrap.wrap(f"depth: {depth_note or 'as given'}; {role}; max {depth_max:.3g}", chars)
    flags = [name for name, on in [("text dropped", cond.text_dropped), ("condition dropped", cond.condition_dropped)]
             if on]
    if flags:
        title.append("dropout: " + ", ".join(flags))
    line = FONT_SIZE + 4
    top = PAD + len(title) * line + PAD + line  # title, then the frame labels
    height = top + len(rows) * (cell_size[1] + PAD) + PAD

    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for k, text in enumerate(title):
        draw.text((PAD, PAD + k * line), text, fill=TEXT, font=font)
    for c, i in enumerate(columns):
        x = ROW_LABEL_WIDTH + c * (cell_size[0] + PAD)
        draw.text((x, top - line), f"t={i}", fill=TEXT, font=font)
        for r, (_, render) in enumerate(rows):
            grid.paste(render(i), (x, top + r * (cell_size[1] + PAD)))
    for r, (name, _) in enumerate(rows):
        draw.text((PAD, top + r * (cell_size[1] + PAD) + cell_size[1] // 2 - line // 2), name, fill=TEXT, font=font)
    return grid
