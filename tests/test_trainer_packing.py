"""NaViT packing (multi-resolution phase): a packed forward equals the unpacked forward of every sample, and
the pack builder keeps the token budget and the stream order."""

from __future__ import annotations

import torch
from test_model import TINY, random_inputs, randomized

from trainer.data import Batcher, Sample, native_size


def _double(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in d.items()}


def test_packed_forward_equals_unpacked_per_sample():
    model = randomized().double()
    # a 9-frame video, an image of another aspect ratio, a 5-frame video; different text lengths and motion
    samples = [_double(random_inputs(TINY, f, size=s, batch=1, seed=i))
               for i, (f, s) in enumerate([(9, (32, 48)), (1, (48, 32)), (5, (16, 64))])]  # fmt: skip
    samples[1]["text_mask"] = torch.tensor([[1, 1, 1, 0, 0, 0, 0]])
    for d, motion in zip(samples, (5.0, 0.0, 2.5)):
        d["motion_score"] = torch.tensor([motion], dtype=torch.double)
    unpacked = [model(**d)[0] for d in samples]
    packed = model.forward_packed(
        [d["x"][0] for d in samples],
        torch.cat([d["timestep"] for d in samples]),
        torch.cat([d["text"] for d in samples]),
        torch.cat([d["text_mask"] for d in samples]),
        [d["cond_pixels"][0] for d in samples],
        [d["cond_depth"][0] for d in samples],
        [d["cond_mask"][0] for d in samples],
        torch.cat([d["motion_score"] for d in samples]),
    )
    for i, (p, u) in enumerate(zip(packed, unpacked)):
        assert p.shape == u.shape
        torch.testing.assert_close(p, u, atol=1e-10, rtol=1e-10, msg=f"sample {i}")


def _sample(index: int, t: int, h: int, w: int) -> Sample:
    return Sample((0, index), f"c{index}", torch.zeros(3, t, h, w, dtype=torch.uint8), None, "", "", 0.0)


def test_packs_keep_the_token_budget_and_the_order():
    sizes = [(9, 32, 32), (1, 64, 32), (17, 32, 48), (5, 16, 16), (9, 32, 32), (1, 32, 32)]
    batcher = Batcher(batch_size=1, max_tokens=40)
    packs = [p for p in (batcher.add(_sample(i, *s)) for i, s in enumerate(sizes)) if p]
    flat = [s.position[1] for p in packs for s in p] + [index for _, index in batcher.pending()]
    assert flat == list(range(len(sizes)))  # stream order kept
    assert [[s.tokens for s in p] for p in packs] == [[12, 8], [30, 2]]  # the next sample would pass 40
    assert batcher.pending() == [(0, 4), (0, 5)]


def test_native_sizes_keep_the_area_and_split_over_sp():
    assert native_size(720, 1280, 360 * 640, 16) == (352, 640)
    assert native_size(100, 60, 10**6, 16) == (96, 48)  # never up-scaled
    h, w = native_size(720, 1280, 360 * 640, 32)  # sp=2: token rows even, so tokens split in two
    assert h % 32 == 0 and w % 32 == 0 and h * w <= 360 * 640
