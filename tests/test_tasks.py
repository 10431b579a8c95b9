"""The 16 tasks: registry, condition builders (training / benchmark / generation), task sampling, `mfm tasks`."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from model.condition_grid import grid_columns
from model.conditions import (
    BAND_FRACTION,
    HOLE_AREA,
    SR_FACTORS,
    Clip,
    FrameSpans,
    Scale,
    benchmark_condition,
    build_condition,
    draw_params,
    stack_conditions,
)
from model.task_inputs import condition_from_files, condition_from_media, read_video
from model.task_sampling import (
    CONDITION_DROP,
    DEFAULT_QUALITY_POLICY,
    NULL_PROMPT,
    QUALITY_POLICY,
    TEXT_DROP,
    Dropout,
    draw_dropout,
    qualified_tasks,
    ruled_out,
    sample_task,
    sample_training_condition,
    set_quality_policy,
)
from model.tasks import DEFAULT_EXTRA, TASKS, get_task, make_prompt
from model.tasks_cli import main as tasks_main

# The release's inference script (leeruibin/MfM infer_mfm_pipeline.py, `task_map`): release id -> prompt name.
RELEASE_TASK_MAP = {
    "t2i": "text-to-image", "icolor": "image colorization", "isr": "image super-resolution",
    "iinp": "image inpainting", "ioutp": "image outpainting", "t2v": "text-to-video", "i2v": "image-to-video",
    "vexd": "video extending", "itrans": "image-to-image transition", "vtrans": "video-to-video transition",
    "vedit": "video editing", "vcolor": "video colorization", "vsr": "video super-resolution",
    "vinp": "video inpainting", "voutp": "video outpainting",
}  # fmt: skip
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True)
FRAME_COUNTS = (1, 5, 9, 17, 21, 33, 37)


def make_clip(t: int, h: int, w: int, seed: int = 0, colour: bool = True) -> Clip:
    """Random frames (colour or gray), random raw depth in [0, 6), a caption, and an edit source."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(3, t, h, w, generator=g) * 2 - 1
    if not colour:
        frames = frames[:1].expand(3, -1, -1, -1).clone()
    depth = torch.rand(1, t, h, w, generator=g) * 6
    source = torch.rand(3, t, h, w, generator=g) * 2 - 1
    return Clip(frames, depth, "a red car drives by", source=source, instruction="make it snow")


def given_rectangle(plane: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the 1s in a (H, W) 0/1 plane, asserting they fill that rectangle."""
    rows = plane.any(1).nonzero().flatten()
    cols = plane.any(0).nonzero().flatten()
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    assert plane.sum() == (bottom - top) * (right - left), "the region is not one rectangle"
    return top, bottom, left, right


def write_video(path, frames: np.ndarray, fps: int = 16) -> None:
    """(T, H, W, 3) uint8 -> an H.264 file (real encode, as users' files are)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def smooth_frames(t: int, h: int, w: int, shift: int = 0) -> np.ndarray:
    """Colour gradients that move one pixel a frame: codec-friendly test video."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [
        np.stack([(xx + i + shift) * 255 // (w + t + shift), yy * 255 // h, 128 + 0 * xx], -1) for i in range(t)
    ]
    return np.stack(frames).astype(np.uint8)


# --- registry ---


def test_registry_matches_the_release_names_and_paper_weights():
    assert len(TASKS) == 16
    assert {t.release_id: t.prompt_name for t in TASKS.values() if t.release_id} == RELEASE_TASK_MAP
    assert TASKS["iedit"].prompt_name == "image editing" and TASKS["iedit"].release_id is None
    assert {t.id for t in TASKS.values() if t.weight == 3.0} == {"t2v", "t2i", "i2v"}
    assert {t.id for t in TASKS.values() if t.generation} == {"t2v", "i2v", "vext", "flf2v", "flc2v", "t2i"}
    assert get_task("vexd") is TASKS["vext"]
    assert (TASKS["vext"].min_frames, TASKS["flc2v"].min_frames, TASKS["i2v"].min_frames) == (17, 33, 5)
    with pytest.raises(ValueError, match="unknown task 'v2v'.*t2v"):
        get_task("v2v")
    # spaced as the release: prompt + " " + added_prompt + " " + "#task: ..."
    assert make_prompt("a cat", TASKS["vinp"]) == "a cat #FPS: 16. #task: video inpainting"


# --- training-mode conditions: properties over many draws ---


@st.composite
def task_clip_seed(draw):
    task = TASKS[draw(st.sampled_from(sorted(TASKS)))]
    counts = [t for t in FRAME_COUNTS if t >= task.min_frames] if task.is_video else [1]
    t = draw(st.sampled_from([c for c in counts if c > 1] if task.is_video else counts))
    h, w = draw(st.sampled_from([16, 32, 48])), draw(st.sampled_from([16, 32, 80]))
    return task, make_clip(t, h, w, seed=draw(st.integers(0, 1000))), draw(st.integers(0, 2**31 - 1))


@SETTINGS
@given(task_clip_seed())
def test_training_conditions_follow_their_task(case):
    task, clip, seed = case
    cond = build_condition(task, clip, draw_params(task, clip, torch.Generator().manual_seed(seed)))
    frames, mask = clip.frames, cond.mask
    _, t, h, w = frames.shape
    assert cond.pixels.shape == frames.shape and mask.shape == cond.depth.shape == (1, t, h, w)
    assert ((mask == 0) | (mask == 1)).all()
    text = clip.instruction if task.is_edit else clip.caption
    assert cond.prompt == f"{text} {DEFAULT_EXTRA} #task: {task.prompt_name}"
    # depth: the clip's on given pixels of generation tasks, zero for manipulation tasks
    assert torch.equal(cond.depth, clip.depth * mask if task.generation else torch.zeros_like(mask))

    kind, p = task.condition, cond.params
    if kind == "none":
        assert not cond.pixels.any() and not mask.any() and not cond.depth.any()
    elif kind == "frames":
        assert task.first_frames[0] <= p.first <= task.first_frames[1]
        assert task.last_frames[0] <= p.last <= task.last_frames[1]
        per_frame = mask.flatten(2).amin(-1)[0], mask.flatten(2).amax(-1)[0]
        want = torch.tensor([1.0 if i < p.first or i >= t - p.last else 0.0 for i in range(t)])
        assert torch.equal(per_frame[0], want) and torch.equal(per_frame[1], want)  # whole frames, exactly those
        assert torch.equal(cond.pixels, frames * mask)
    elif kind == "interior_mask":
        hole = mask[0] == 0  # (T, H, W)
        assert (hole == hole[:1]).all(), "the hole moves between frames"
        top, bottom, left, right = given_rectangle(hole[0])
        assert top >= 1 and left >= 1 and bottom <= h - 1 and right <= w - 1, "the hole touches the border"
        assert HOLE_AREA[0] <= hole[0].float().mean() <= HOLE_AREA[1]
        assert torch.equal(cond.pixels, frames * mask)
    elif kind == "boundary_mask":
        assert (mask == mask[:, :1]).all()
        top, bottom, left, right = given_rectangle(mask[0, 0] == 1)
        bands = [(top + h - bottom, h), (left + w - right, w)]
        for band, size in bands:
            assert band == 0 or math.ceil(size * BAND_FRACTION[0]) <= band <= math.floor(size * BAND_FRACTION[1])
        assert any(band for band, _ in bands)
        assert torch.equal(cond.pixels, frames * mask)
    elif kind == "grayscale":
        assert mask.all()
        assert torch.equal(cond.pixels[0], cond.pixels[1]) and torch.equal(cond.pixels[1], cond.pixels[2])
        rgb = frames * 0.5 + 0.5
        luma = 0.2989 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        torch.testing.assert_close(cond.pixels[0], luma * 2 - 1, atol=1e-5, rtol=0)
    elif kind == "downsample":
        assert mask.all() and SR_FACTORS[0] <= p.factor <= SR_FACTORS[1]
        assert p.size == (max(1, round(h / p.factor)), max(1, round(w / p.factor)))
        x = frames.transpose(0, 1)
        low = F.interpolate(x, size=p.size, mode="bicubic", antialias=True, align_corners=False)
        up = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1).transpose(0, 1)
        assert torch.equal(cond.pixels, up)
        assert (cond.pixels - frames).abs().mean() > 0.05  # detail is lost
    elif kind == "edit_source":
        assert mask.all() and torch.equal(cond.pixels, clip.source)
    else:
        raise AssertionError(f"untested condition kind {kind}")


# --- benchmark mode: a pure function of (task, clip, seed) ---


@settings(max_examples=12, deadline=None, derandomize=True)
@given(st.integers(0, 2**31 - 1))
def test_benchmark_conditions_are_bit_identical_for_a_seed(seed):
    clip = make_clip(37, 32, 48)
    for task in TASKS.values():
        a, b = benchmark_condition(task, clip, seed), benchmark_condition(task.id, clip, seed)
        assert a.params == b.params and a.prompt == b.prompt
        for name in ("pixels", "depth", "mask"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (task.id, name)


def test_benchmark_uses_appendix_a_spans_and_first_frames():
    clip = make_clip(37, 32, 48)
    spans = {tid: benchmark_condition(tid, clip, 0).params for tid in ("i2v", "vext", "flf2v", "flc2v")}
    assert spans == {"i2v": FrameSpans(1, 0), "vext": FrameSpans(8, 0), "flf2v": FrameSpans(1, 1),
                     "flc2v": FrameSpans(8, 8)}  # fmt: skip
    icolor = benchmark_condition("icolor", clip, 0)  # image tasks: the first frame
    assert icolor.pixels.shape == (3, 1, 32, 48)
    assert torch.equal(icolor.pixels, benchmark_condition("vcolor", clip, 0).pixels[:, :1])
    masks = {benchmark_condition("vinp", clip, s).params for s in range(8)}
    assert len(masks) > 1, "the seed does not move the mask"


# --- qualification and sampling ---


def test_qualification():
    video = make_clip(33, 16, 16)
    assert [t.id for t in qualified_tasks(video)] == [t.id for t in TASKS.values() if t.is_video]
    assert "flc2v" not in {t.id for t in qualified_tasks(make_clip(17, 16, 16))}
    assert "vext" in {t.id for t in qualified_tasks(make_clip(17, 16, 16))}
    assert {t.id for t in qualified_tasks(make_clip(9, 16, 16))}.isdisjoint({"vext", "flc2v"})
    image = make_clip(1, 16, 32)
    assert [t.id for t in qualified_tasks(image)] == [t.id for t in TASKS.values() if not t.is_video]
    gray = make_clip(9, 16, 16, colour=False)
    assert {t.id for t in qualified_tasks(gray)} == {"t2v", "i2v", "flf2v", "vinp", "voutp", "vsr", "vedit"}
    no_pair = Clip(video.frames, video.depth, "a caption")
    assert "vedit" not in {t.id for t in qualified_tasks(no_pair)}
    for bad in (make_clip(8, 16, 16), make_clip(9, 20, 16)):  # T not 4k+1; H not a multiple of 16
        assert qualified_tasks(bad) == []
        with pytest.raises(ValueError, match="qualifies for no task"):
            sample_training_condition(bad, torch.Generator())
    with pytest.raises(ValueError, match=r"vext \(video extending\): needs T = 4k\+1 >= 17"):
        build_condition("vext", make_clip(9, 16, 16), FrameSpans(8, 0))


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("frames", [33, 1])
def test_task_frequencies_follow_the_3x_rule(frames):
    tasks = qualified_tasks(make_clip(frames, 16, 16))
    gen, n = torch.Generator().manual_seed(1), 20_000
    counts = {t.id: 0 for t in tasks}
    for _ in range(n):
        counts[sample_task(tasks, gen).id] += 1
    rule = {t.id: 3.0 if t.id in ("t2v", "t2i", "i2v") else 1.0 for t in tasks}  # paper §3.3
    total = sum(rule.values())  # video: 3 (t2v) + 3 (i2v) + 8 others; image: 3 (t2i) + 5 others
    for task in tasks:
        assert within_binomial(counts[task.id], n, rule[task.id] / total), (task.id, counts)


QUALITY_TAG_NAMES = tuple(DEFAULT_QUALITY_POLICY)


@pytest.mark.parametrize("frames", [33, 1])
def test_tagged_clips_never_draw_a_ruled_out_task_and_untagged_keep_3x(frames):
    """3000 seeded full training draws over random tag subsets: no draw is a task the tags rule out, each
    tagged clip's remaining tasks keep their relative weights, and 20,000 untagged draws keep the paper's 3x."""
    base = make_clip(frames, 16, 16)
    rng, n_tagged = np.random.default_rng(7), 3000
    seen_out, per_task = set(), {}
    for i in range(n_tagged):
        tags = tuple(t for t in QUALITY_TAG_NAMES if rng.random() < 0.4)
        clip = Clip(base.frames, base.depth, base.caption, base.source, base.instruction, quality_tags=tags)
        out = ruled_out(tags)
        cond = sample_training_condition(clip, torch.Generator().manual_seed(i))
        assert cond.task not in out, (tags, cond.task)
        seen_out |= out
        per_task[cond.task] = per_task.get(cond.task, 0) + 1
    text_only = {"t2v", "t2i"} & {t.id for t in qualified_tasks(base)}
    assert text_only <= seen_out  # the draws did tag clips (the assertion above could fail)
    # one fully flawed clip: exactly the policy's tasks are gone, the rest keep their weights (i2v still 3x)
    flawed = Clip(base.frames, base.depth, base.caption, base.source, base.instruction,
                  quality_tags=QUALITY_TAG_NAMES)
    kept = qualified_tasks(flawed)
    assert [t.id for t in kept] == [t.id for t in qualified_tasks(base) if t.id not in ruled_out(QUALITY_TAG_NAMES)]
    for tasks, seed in ((kept, 3), (qualified_tasks(base), 1)):
        gen, n = torch.Generator().manual_seed(seed), 20_000
        counts = {t.id: 0 for t in tasks}
        for _ in range(n):
            counts[sample_task(tasks, gen).id] += 1
        rule = {t.id: 3.0 if t.id in ("t2v", "t2i", "i2v") else 1.0 for t in tasks}  # paper §3.3
        for task in tasks:
            assert within_binomial(counts[task.id], n, rule[task.id] / sum(rule.values())), (task.id, counts)


def test_quality_policy_can_be_replaced_and_is_checked():
    try:
        set_quality_policy({"watermarked": ["vinp"]})
        clip = make_clip(33, 16, 16)
        marked = Clip(clip.frames, clip.depth, clip.caption, clip.source, clip.instruction,
                      quality_tags=("watermarked",))
        ids = [t.id for t in qualified_tasks(marked)]
        assert "vinp" not in ids and "t2v" in ids  # the new table, not the default
        assert marked.first_frame().quality_tags == ("watermarked",)
        with pytest.raises(ValueError, match="unknown quality tag 'blurry'"):
            set_quality_policy({"blurry": ["t2v"]})
        with pytest.raises(ValueError, match=r"quality_policy\['low_res'\]: unknown task 't3v'"):
            set_quality_policy({"low_res": ["t3v"]})
        assert QUALITY_POLICY == {"watermarked": ("vinp",)}  # a refused table changes nothing
    finally:
        set_quality_policy(DEFAULT_QUALITY_POLICY)


@pytest.mark.parametrize(("task_id", "kind", "rate"), [
    ("t2v", Dropout.TEXT, TEXT_DROP["t2v"]), ("t2i", Dropout.TEXT, TEXT_DROP["t2i"]),
    ("vinp", Dropout.CONDITION, CONDITION_DROP), ("i2v", Dropout.CONDITION, CONDITION_DROP),
])  # fmt: skip
def test_dropout_rates(task_id, kind, rate):
    gen, n = torch.Generator().manual_seed(2), 20_000
    draws = [draw_dropout(TASKS[task_id], gen) for _ in range(n)]
    assert set(draws) <= {kind, Dropout.NONE}
    assert within_binomial(draws.count(kind), n, rate)


def test_training_draws_are_consistent_and_replayable():
    clip = make_clip(33, 16, 16)
    gen = torch.Generator().manual_seed(3)
    conds = [sample_training_condition(clip, gen) for _ in range(400)]
    assert {c.task for c in conds} == {t.id for t in qualified_tasks(clip)}
    for c in conds:
        if c.text_dropped:
            assert c.task in TEXT_DROP and c.prompt == NULL_PROMPT
        elif c.condition_dropped:
            assert c.task not in TEXT_DROP and not (c.pixels.any() or c.depth.any() or c.mask.any())
            assert c.prompt.endswith(f"#task: {get_task(c.task).prompt_name}")
        else:
            assert c.prompt.endswith(f"#task: {get_task(c.task).prompt_name}")
    assert any(c.text_dropped for c in conds) and any(c.condition_dropped for c in conds)
    gen = torch.Generator().manual_seed(3)
    replay = [sample_training_condition(clip, gen) for _ in range(40)]
    for a, b in zip(conds, replay):
        assert a.task == b.task and a.params == b.params and torch.equal(a.mask, b.mask)
        assert torch.equal(a.pixels, b.pixels) and torch.equal(a.depth, b.depth)


def test_stack_conditions_gives_the_model_inputs():
    clip = make_clip(9, 16, 32)
    conds = [benchmark_condition(t, clip, 0) for t in ("t2v", "i2v", "vinp")]
    batch = stack_conditions(conds)
    assert batch["cond_pixels"].shape == (3, 3, 9, 16, 32) and batch["cond_mask"].shape == (3, 1, 9, 16, 32)
    assert torch.equal(batch["cond_depth"][1], conds[1].depth)
    assert conds[0].to_model_inputs()["cond_pixels"].shape == (1, 3, 9, 16, 32)
    with pytest.raises(ValueError, match="share one"):
        stack_conditions([conds[0], benchmark_condition("t2i", clip, 0)])


# --- generation from user files ---


@pytest.fixture(scope="module")
def media_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    image = smooth_frames(1, 32, 48)[0]
    Image.fromarray(image).save(d / "a.png")
    Image.fromarray(255 - image).save(d / "b.png")
    Image.fromarray(image[::4, ::4]).save(d / "small.png")  # 8 x 12
    hole = np.full((32, 48), 255, np.uint8)
    hole[8:24, 16:32] = 0  # black = fill
    Image.fromarray(hole).save(d / "mask.png")
    write_video(d / "a.mp4", smooth_frames(13, 32, 48))
    write_video(d / "b.mp4", smooth_frames(13, 32, 48, shift=40))
    write_video(d / "long.mp4", smooth_frames(21, 32, 48))
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return d


def _luma(frames: torch.Tensor) -> torch.Tensor:  # a stand-in depth function: (N, 3, H, W) -> (N, 1, H, W)
    return frames.mean(1, keepdim=True) + 1


def test_wrong_generation_inputs_name_the_task_and_its_needs(media_files):
    d = media_files
    cases = [
        ("flf2v", [d / "a.png"], None, r"flf2v \(image-to-image transition\) needs two images"),
        ("i2v", [d / "a.mp4"], None, r"i2v \(image-to-video\) needs one image"),
        ("flc2v", [d / "a.mp4", d / "a.png"], None, "flc2v .* needs two videos"),
        ("t2v", [d / "a.png"], None, "t2v .* needs no input file"),
        ("vinp", [d / "a.mp4"], None, "vinp .* needs a mask"),
        ("vcolor", [d / "a.mp4"], d / "mask.png", "vcolor .* takes no mask"),
        ("i2v", [d / "a.txt"], None, "unknown media type '.txt'"),
        ("vsr", [d / "broken.mp4"], None, "broken.mp4: cannot read video"),
    ]
    for task, inputs, mask, message in cases:
        with pytest.raises(ValueError, match=message):
            condition_from_files(task, inputs, "a prompt", mask)
    image = torch.zeros(3, 1, 32, 48)
    with pytest.raises(ValueError, match=r"flf2v .* needs two images .*got 1 input\(s\): an image 32x48"):
        condition_from_media("flf2v", [image], "a prompt")
    with pytest.raises(ValueError, match="vinp: the mask must mark pixels to keep"):
        condition_from_media("vinp", [torch.zeros(3, 9, 32, 48)], "p", mask=torch.ones(3, 1, 32, 48))


def test_generation_conditions_from_files(media_files):
    d = media_files
    image = torch.from_numpy(smooth_frames(1, 32, 48)[0]).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W)

    i2v = condition_from_files("i2v", [d / "a.png"], "a dog runs", num_frames=9, depth_fn=_luma)
    assert i2v.pixels.shape == (3, 9, 32, 48) and torch.equal(i2v.pixels[:, 0], image)
    assert i2v.mask[:, 0].all() and not i2v.mask[:, 1:].any()
    assert torch.equal(i2v.depth[:, 0], _luma(image[None])[0]) and not i2v.depth[:, 1:].any()
    assert i2v.prompt == "a dog runs #FPS: 16. #task: image-to-video"

    flf2v = condition_from_files("flf2v", [d / "a.png", d / "b.png"], "p", num_frames=9)
    torch.testing.assert_close(flf2v.pixels[:, -1], -image, atol=1e-6, rtol=0)  # b.png = 255 - a.png
    assert flf2v.params == FrameSpans(1, 1)
    assert not flf2v.depth.any()  # no depth_fn: zeros

    a, b = read_video(d / "a.mp4"), read_video(d / "b.mp4")
    flc2v = condition_from_files("flc2v", [d / "a.mp4", d / "b.mp4"], "p", num_frames=17, given_frames=4)
    assert torch.equal(flc2v.pixels[:, :4], a[:, -4:]) and torch.equal(flc2v.pixels[:, -4:], b[:, :4])
    assert flc2v.mask.flatten(2).amax(-1)[0].tolist() == [1.0] * 4 + [0.0] * 9 + [1.0] * 4

    vinp = condition_from_files("vinp", [d / "a.mp4"], "p", d / "mask.png", num_frames=97)
    assert vinp.pixels.shape == (3, 13, 32, 48)  # 13 frames = 4k+1
    hole = vinp.mask[0] == 0
    assert hole[:, 8:24, 16:32].all() and hole.sum() == 13 * 16 * 16 and not vinp.depth.any()
    inverted = condition_from_files("vinp", [d / "a.mp4"], "p", d / "mask.png", invert_mask=True)
    assert torch.equal(inverted.mask, 1 - vinp.mask)

    sisr = condition_from_files("sisr", [d / "small.png"], "p")  # 8x12, up 4x
    assert sisr.pixels.shape == (3, 1, 32, 48) and sisr.mask.all() and sisr.params == Scale(4.0, (8, 12))
    assert sisr.prompt == "p clean, extremely detailed, high-resolution, 4k #task: image super-resolution"

    vcolor = condition_from_files("vcolor", [d / "a.mp4"], "p", num_frames=9)
    assert vcolor.pixels.shape == (3, 9, 32, 48) and torch.equal(vcolor.pixels[0], vcolor.pixels[2])

    t2v = condition_from_files("t2v", [], "p", num_frames=9, size=(32, 48))
    assert t2v.pixels.shape == (3, 9, 32, 48) and not t2v.mask.any()


# --- the picture ---


def test_grid_columns_include_the_switches():
    mask = torch.zeros(1, 97, 4, 4)
    mask[:, :8] = 1
    assert {0, 7, 8, 96} <= set(grid_columns(mask, 8)) and len(grid_columns(mask, 8)) == 8
    assert grid_columns(torch.ones(1, 1, 4, 4)) == [0]


def test_cli_list_and_show(media_files, tmp_path, capsys):
    assert tasks_main(["list"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 17
    out = tmp_path / "grid.png"
    code = tasks_main(["show", "--task", "vext", "--input", str(media_files / "long.mp4"), "--out", str(out),
                       "--depth-from", "luma", "--size", "32x48"])  # fmt: skip
    assert code == 0 and "vext (video extending)" in capsys.readouterr().out
    assert code == 0 and Image.open(out).size[0] >= 4 * 48
    code = tasks_main(["show", "--task", "flf2v", "--mode", "generate", "--input", str(media_files / "a.png"),
                       "--input", str(media_files / "b.png"), "--max-frames", "9", "--out", str(out)])  # fmt: skip
    assert code == 0
    code = tasks_main(["show", "--task", "i2v", "--input", str(media_files / "a.png"), "--out", str(out)])
    assert code == 2 and "--input must be a video" in capsys.readouterr().err
