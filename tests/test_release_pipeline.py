"""Release parity end to end: the release pipeline's own outputs for its 15 tasks (`release-pipeline-tiny`,
made by running the release's `infer_mfm_pipeline.py` on tiny components) are reproduced by
`mfm release infer` with each task's recorded command line, and by `mfm generate` with its own flags;
the folder is read as the release reads it (VAE scale and norm settings ignored, scheduler shift read)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mfm.cli import run

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "release-pipeline-tiny"
META = json.loads((REFERENCE / "meta.json").read_text())
TASKS = META["tasks"]
MAX_ERROR, MEAN_ERROR = 1e-3, 1e-4
BOXED_BY_RELEASE = ("t2i", "isr", "icolor")  # the release ignores --height/--width for these


def reference_frames(task: str) -> torch.Tensor:
    return load_file(REFERENCE / "outputs" / f"{task}.safetensors")["frames"]  # (T, H, W, 3)


def assert_matches(frames: torch.Tensor, task: str) -> None:
    expected = reference_frames(task)
    assert frames.shape == expected.shape, (task, tuple(frames.shape), tuple(expected.shape))
    error = (frames - expected).abs()
    assert error.max() <= MAX_ERROR and error.mean() <= MEAN_ERROR, (task, error.max().item(), error.mean().item())


def release_argv(task: str, out_dir: Path, pipeline_path: Path | None = None) -> list[str]:
    argv = json.loads((REFERENCE / "inputs" / task / "args.json").read_text())["argv"]
    argv = [str(out_dir) if a == "CLI_OUT" else a for a in argv]
    if pipeline_path is not None:
        argv[argv.index("--pipeline_path") + 1] = str(pipeline_path)
    return argv


def release_infer(task: str, out_dir: Path, pipeline_path: Path | None = None) -> torch.Tensor:
    assert run("release", ["infer", *release_argv(task, out_dir, pipeline_path)]) == 0
    (frames_file,) = (out_dir / task).glob("*.safetensors")
    return load_file(frames_file)["frames"]


@pytest.mark.parametrize("task", TASKS)
def test_release_infer_reproduces_the_release_pipeline(task, tmp_path, monkeypatch):
    monkeypatch.chdir(REFERENCE)  # the recorded command lines name their files relative to this folder
    frames = release_infer(task, tmp_path)
    assert_matches(frames, task)
    media = sorted(p.suffix for p in (tmp_path / task).iterdir())
    assert media == sorted([".safetensors", ".png" if frames.shape[0] == 1 else ".mp4"])


def generate_flags(task: str) -> list[str]:
    """The same sample as `mfm generate` flags: the list file's inputs, the recorded sizes and seed."""
    call = META["per_task"][task]["pipeline_kwargs"]
    args = json.loads((REFERENCE / "inputs" / task / "args.json").read_text())
    flags = ["--task", task, "--prompt", args["prompt"], "--steps", str(call["num_inference_steps"]),
             "--seed", str(args["seed"]), "--frames", str(args["cli_effective_args"]["num_frames"])]
    if task not in BOXED_BY_RELEASE:
        flags += ["--height", str(call["height"]), "--width", str(call["width"])]
    inputs = call["input_path"].split(";") if call["input_path"] else []
    kind = "--image" if task.startswith("i") else "--video"
    for flag, path in zip((kind, f"{kind}2"), inputs):
        flags += [flag, path]
    if call["mask_path"]:
        flags += ["--mask", call["mask_path"]]
    return flags


@pytest.mark.parametrize("task", TASKS)
def test_mfm_generate_gives_the_same_frames_with_its_own_flags(task, tmp_path, monkeypatch):
    monkeypatch.chdir(REFERENCE)
    out = tmp_path / "sample.safetensors"
    argv = ["--checkpoint", "components", "--depth-model", "components/depth", *generate_flags(task), "--out", str(out)]
    assert run("generate", argv) == 0
    assert_matches(load_file(out)["frames"], task)
    assert out.with_suffix(".png" if task in ("t2i", "isr", "icolor", "iinp", "ioutp") else ".mp4").is_file()


def edited_copy(tmp_path: Path, part: str, file: str, **changes) -> Path:
    folder = tmp_path / "components"
    shutil.copytree(REFERENCE / "components", folder)
    config = json.loads((folder / part / file).read_text())
    (folder / part / file).write_text(json.dumps(config | changes))
    return folder


@pytest.mark.parametrize(
    "part, file, changes, changes_output",
    [
        ("vae", "config.json", {"scaling_factor": 0.5}, False),  # the release hard-codes 0.958917567
        ("transformer", "config.json", {"norm_eps": 0.25}, False),  # its blocks hard-code 1e-6
        ("transformer", "config.json", {"norm_elementwise_affine": False}, False),
        ("scheduler", "scheduler_config.json", {"shift": 1.0}, True),  # read from the folder
    ],
)
def test_the_folder_is_read_as_the_release_reads_it(part, file, changes, changes_output, tmp_path, monkeypatch):
    monkeypatch.chdir(REFERENCE)
    folder = edited_copy(tmp_path, part, file, **changes)
    frames = release_infer("vinp", tmp_path / "out", folder)
    if changes_output:
        assert (frames - reference_frames("vinp")).abs().max() > 1e-2
    else:
        assert_matches(frames, "vinp")


@pytest.mark.parametrize(
    "extra, refused",
    [
        (["--use_t_schedule"], "--use_t_schedule"),
        (["--num_samples", "2"], "--num_samples 2"),
        (["--ext", ".gif"], "--ext .gif"),
    ],
)
def test_unsupported_release_arguments_are_refused_by_name(extra, refused, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REFERENCE)
    assert run("release", ["infer", *release_argv("vinp", tmp_path), *extra]) == 2
    assert refused in capsys.readouterr().err
    assert not (tmp_path / "vinp").exists()


def test_unknown_release_arguments_are_refused_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REFERENCE)
    with pytest.raises(SystemExit) as e:
        run("release", ["infer", *release_argv("vinp", tmp_path), "--guidance", "3"])
    assert e.value.code == 2 and "--guidance" in capsys.readouterr().err
