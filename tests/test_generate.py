"""`mfm generate`: wrong inputs named, outputs of the right kind and shape, seeds reproducible, batch mode,
depth on given frames only, and the released folder layout giving the same sample as our checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from bench_fixtures import tiny_pipeline
from safetensors.torch import load_file

from mfm.synthetic import moving_frames, write_image, write_video
from model.generate_cli import main
from model.mfm import MfM
from model.pipeline import MfMPipeline
from model.release import export_release
from model.task_inputs import condition_from_media, read_media_file

SIZE = ["--height", "32", "--width", "32", "--frames", "9", "--steps", "2"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Path:
    return tiny_pipeline(tmp_path_factory.mktemp("pipe"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    return {
        "image": write_image(folder / "first.png", (40, 56), seed=1),
        "image2": write_image(folder / "last.png", (40, 56), seed=2),
        "video": write_video(folder / "clip.mp4", moving_frames(13, 40, 56, seed=3)),
    }


def generate(pipe: Path, *args: str) -> int:
    return main(["--checkpoint", str(pipe), *SIZE, *args])


@pytest.mark.parametrize(
    "task, files, needs",
    [
        ("i2v", ["--video", "video"], "needs one image (the first frame)"),
        ("flf2v", ["--image", "image"], "needs two images (the first and the last frame)"),
        ("vinp", ["--video", "video"], "needs a mask"),
        ("t2v", ["--image", "image"], "needs no input file, only a prompt"),
        ("vcolor", [], "needs one video to colorize"),
    ],
)
def test_wrong_inputs_get_an_error_naming_what_the_task_needs(pipe, inputs, tmp_path, capsys, task, files, needs):
    args = [a if not a.startswith(("video", "image")) else str(inputs[a]) for a in files]
    rc = generate(pipe, "--task", task, "--prompt", "x", "--out", str(tmp_path / "o.mp4"), *args)
    err = capsys.readouterr().err
    assert rc == 2
    assert f"task {task}" in err and needs in err, err
    assert not (tmp_path / "o.mp4").exists()


def test_wrong_output_suffix_is_refused_before_loading(pipe, inputs, tmp_path, capsys):
    rc = generate(pipe, "--task", "i2v", "--prompt", "x", "--image", str(inputs["image"]), "--out",
                  str(tmp_path / "o.png"))
    assert rc == 2 and "must end in .mp4 (or .safetensors)" in capsys.readouterr().err


def test_video_is_mp4_image_is_png_and_a_seed_reproduces_its_sample(pipe, inputs, tmp_path):
    i2v = ["--task", "i2v", "--prompt", "a wall", "--image", str(inputs["image"])]
    assert generate(pipe, *i2v, "--seed", "7", "--out", str(tmp_path / "a.mp4")) == 0
    assert generate(pipe, *i2v, "--seed", "7", "--out", str(tmp_path / "b.mp4")) == 0
    assert generate(pipe, *i2v, "--seed", "8", "--out", str(tmp_path / "c.mp4")) == 0
    a, b, c = (read_media_file(tmp_path / f"{n}.mp4") for n in "abc")
    assert a.shape == (3, 9, 32, 32)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3

    t2i = ["--task", "t2i", "--prompt", "a wall", "--out", str(tmp_path / "d.png")]
    assert main(["--checkpoint", str(pipe), "--height", "32", "--width", "48", "--steps", "2", *t2i]) == 0
    assert read_media_file(tmp_path / "d.png").shape == (3, 1, 32, 48)


def test_batch_mode_runs_every_line(pipe, inputs, tmp_path):
    jobs = [
        {"task": "flf2v", "prompt": "a wall", "image": str(inputs["image"]), "image2": str(inputs["image2"]),
         "out": str(tmp_path / "flf2v.mp4"), "seed": 1},
        {"task": "vcolor", "prompt": "a wall", "video": str(inputs["video"]), "out": str(tmp_path / "vcolor.mp4")},
        {"task": "icolor", "prompt": "a wall", "image": str(inputs["image"]), "out": str(tmp_path / "icolor.png")},
    ]
    batch = tmp_path / "jobs.jsonl"
    batch.write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
    assert generate(pipe, "--batch", str(batch)) == 0
    assert read_media_file(tmp_path / "flf2v.mp4").shape == (3, 9, 32, 32)
    assert read_media_file(tmp_path / "vcolor.mp4").shape == (3, 9, 32, 32)  # 13 frames cut to 9 (4k+1)
    assert read_media_file(tmp_path / "icolor.png").shape == (3, 1, 32, 32)


def test_depth_joins_on_the_given_frames_of_generation_tasks_only(pipe):
    models = MfMPipeline.from_pretrained(pipe)
    clip = torch.rand(3, 9, 32, 32) * 2 - 1
    first = clip[:, :1]
    i2v = models.with_depth(condition_from_media("i2v", [first], "x", num_frames=9, size=(32, 32)))
    assert i2v.depth[:, 0].min() > 0  # the tiny depth model's output is positive
    assert i2v.depth[:, 1:].abs().max() == 0
    vsr = models.with_depth(condition_from_media("vsr", [clip], "x", num_frames=9, size=(32, 32)))
    assert vsr.depth.abs().max() == 0


def test_released_pipeline_folder_gives_the_same_sample_as_our_checkpoint(pipe, inputs, tmp_path):
    release = tmp_path / "release"
    export_release(MfM.from_pretrained(pipe / "transformer"), release / "transformer")
    for part in ("vae", "text_encoder", "tokenizer", "depth"):
        shutil.copytree(pipe / part, release / part)
    i2v = ["--task", "i2v", "--prompt", "a wall", "--image", str(inputs["image"]), "--seed", "3", "--guidance", "9",
           "--framing", "cover"]  # a released folder defaults to the release's CFG and framing
    assert generate(pipe, *i2v, "--out", str(tmp_path / "ours.safetensors")) == 0
    assert generate(release, *i2v, "--out", str(tmp_path / "released.safetensors")) == 0
    ours, released = (load_file(tmp_path / f"{n}.safetensors")["frames"] for n in ("ours", "released"))
    assert ours.shape == (9, 32, 32, 3) and torch.equal(ours, released)
    assert (tmp_path / "ours.mp4").is_file() and (tmp_path / "released.mp4").is_file()


def test_our_checkpoint_decodes_at_the_vae_scale_it_records(pipe, tmp_path):
    """Our checkpoints record their latent scale; the VAE folder's own `scaling_factor` is never read."""
    ours = tmp_path / "ours"
    shutil.copytree(pipe, ours)
    config = json.loads((ours / "transformer" / "config.json").read_text())
    (ours / "transformer" / "config.json").write_text(json.dumps(config | {"vae_scaling_factor": 0.5}))
    vae_config = json.loads((ours / "vae" / "config.json").read_text())
    (ours / "vae" / "config.json").write_text(json.dumps(vae_config | {"scaling_factor": 2.0}))
    assert MfMPipeline.from_pretrained(ours / "transformer").vae.scaling_factor == 0.5
    assert MfMPipeline.from_pretrained(pipe / "transformer").vae.scaling_factor == 0.958917567
