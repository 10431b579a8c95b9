"""A task of your own through `model.task_plugins`: the worked example, video deblurring (`vdeblur`), registers,
shows in `mfm tasks`, builds the right condition, is drawn at its weight, trains, generates and joins the
benchmark; bad registrations name their problem. Every test restores the registry (`registry_snapshot`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import lance
import pytest
import torch
from bench_fixtures import moving_clips, tiny_pipeline, write_clips_table
from PIL import Image
from torchvision.transforms.functional import gaussian_blur as tv_gaussian_blur
from trainer_fixtures import env

from benchmark.build import Selection, build_benchmark
from benchmark.cli import main as benchmark_main
from benchmark.table import params_to_json, read_samples
from mfm.synthetic import moving_frames, write_video
from model.conditions import CONDITION_KINDS, Clip, ConditionKind, benchmark_condition, build_condition, draw_params
from model.generate_cli import main as generate_main
from model.task_examples import deblur
from model.task_inputs import USER_INPUTS, read_media_file
from model.task_plugins import (
    TaskRegistrationError,
    load_task_plugins,
    register_task,
    registry_snapshot,
    set_task_weights,
    unregister_task,
)
from model.task_sampling import qualified_tasks, sample_task
from model.tasks import TASKS, Task, get_task
from model.tasks_cli import main as tasks_main

PLUGIN = "model.task_examples.deblur"
PLUGIN_FILE = str(Path(deblur.__file__).resolve())
BUILT_IN = list(TASKS)  # the 16, in order, before any test registers a task


@pytest.fixture(autouse=True)
def isolated_registry():
    with registry_snapshot():
        yield
    assert list(TASKS) == BUILT_IN and "gaussian_blur" not in CONDITION_KINDS and "vdeblur" not in USER_INPUTS


@pytest.fixture
def vdeblur() -> Task:
    (task,) = load_task_plugins([PLUGIN])
    return task


def colour_clip(t: int, h: int = 32, w: int = 48, seed: int = 0, caption: str = "a red car") -> Clip:
    g = torch.Generator().manual_seed(seed)
    return Clip(torch.rand(3, t, h, w, generator=g) * 2 - 1, torch.rand(1, t, h, w, generator=g) * 6, caption)


# --- registration ---


def test_the_example_registers_once_by_module_name_or_file_and_unregisters(vdeblur):
    assert vdeblur is TASKS["vdeblur"] and get_task("vdeblur") is vdeblur
    assert list(TASKS)[:16] == BUILT_IN and list(TASKS)[16] == "vdeblur"
    assert CONDITION_KINDS["gaussian_blur"] is deblur.TASK_PLUGINS[0].kind
    assert USER_INPUTS["vdeblur"].media == ("video",)
    assert load_task_plugins([PLUGIN_FILE, PLUGIN]) == [vdeblur, vdeblur]  # the same module: no duplicate error
    assert len(TASKS) == 17
    unregister_task("vdeblur")
    assert list(TASKS) == BUILT_IN and "gaussian_blur" not in CONDITION_KINDS


def test_registration_errors_name_the_problem(vdeblur, tmp_path):
    kind = ConditionKind(deblur.draw_blur, deblur.blurred_frames)

    def task(**kw) -> Task:
        fields = {"id": "vdenoise", "prompt_name": "video denoising", "release_id": None, "media": "video",
                  "condition": "gaussian_blur", "generation": False, "given": "noisy frames"} | kw  # fmt: skip
        return Task(**fields)

    cases = [
        (task(id="t2v"), "task id 't2v' is already taken by task t2v \\(text-to-video\\)"),
        (task(id="vdeblur"), "task id 'vdeblur' is already taken by task vdeblur"),
        (task(id="vexd"), "task id 'vexd' is already taken by task vext"),  # a release id counts
        (task(weight=0.0), "task vdenoise: weight must be a number > 0.*got 0.0"),
        (task(weight=-1.0), "weight must be a number > 0.*got -1.0"),
        (task(weight=float("nan")), "weight must be a number > 0.*got nan"),
        (task(media="audio"), "task vdenoise: unknown media 'audio'; choose one of image, video"),
        (task(prompt_name="video inpainting"), "prompt name 'video inpainting' is already task vinp's"),
        (task(id="V-Denoise"), "task id 'V-Denoise': use lower-case letters"),
        (task(first_frames=(3, 1)), "first_frames must be \\(fewest, most\\)"),
    ]
    for bad, message in cases:
        with pytest.raises(TaskRegistrationError, match=message):
            register_task(bad)  # kind=None: reuses the registered "gaussian_blur"
    with pytest.raises(TaskRegistrationError, match="unknown condition kind 'noise'; pass kind=ConditionKind"):
        register_task(task(condition="noise"))
    with pytest.raises(TaskRegistrationError, match="condition kind 'grayscale' already exists"):
        register_task(task(condition="grayscale"), kind=kind)
    with pytest.raises(TaskRegistrationError, match="weight must be a number > 0"):
        set_task_weights({"vdeblur": 0})
    with pytest.raises(TaskRegistrationError, match="task weight for unknown task 'nope'"):
        set_task_weights({"nope": 1.0})
    assert list(TASKS) == [*BUILT_IN, "vdeblur"]  # nothing half-registered

    empty = tmp_path / "empty_plugin.py"
    empty.write_text("X = 1\n")
    with pytest.raises(TaskRegistrationError, match="empty_plugin.py' defines no TASK_PLUGINS"):
        load_task_plugins([str(empty)])
    with pytest.raises(TaskRegistrationError, match="'no_such.module': cannot import it"):
        load_task_plugins(["no_such.module"])
    with pytest.raises(ValueError, match="unknown task 'vdenoise'.*--task-plugin"):
        get_task("vdenoise")


# --- the condition: a known answer ---


def test_deblur_condition_is_the_gaussian_blurred_clip_with_a_full_mask(vdeblur):
    sigmas = []
    for seed in range(40):
        clip = colour_clip(9, seed=seed)
        params = draw_params(vdeblur, clip, torch.Generator().manual_seed(seed))
        cond = build_condition(vdeblur, clip, params)
        assert isinstance(params, deblur.Blur) and deblur.BLUR_SIGMA[0] <= params.sigma <= deblur.BLUR_SIGMA[1]
        assert params.radius == math.ceil(3 * params.sigma)
        sigmas.append(params.sigma)
        # torchvision's Gaussian blur (reflect padding) of every frame, the same kernel size and sigma
        want = tv_gaussian_blur(clip.frames.transpose(0, 1), [2 * params.radius + 1] * 2, [params.sigma] * 2)
        torch.testing.assert_close(cond.pixels, want.transpose(0, 1), atol=1e-5, rtol=0)
        assert torch.equal(cond.mask, torch.ones(1, 9, 32, 48))
        assert not cond.depth.any()  # manipulation task
        assert cond.prompt == "a red car #FPS: 16. #task: video deblurring"
    assert min(sigmas) < 1.0 and max(sigmas) > 2.5  # the draw covers its range
    # a constant clip stays constant; the blur removes detail (lower total variation)
    flat = Clip(torch.full((3, 5, 16, 16), 0.25))
    assert torch.allclose(build_condition(vdeblur, flat, deblur.Blur(3.0, 9)).pixels, flat.frames, atol=1e-6)
    clip = colour_clip(5)
    tv = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert tv(build_condition(vdeblur, clip, deblur.Blur(2.0, 6)).pixels) < 0.5 * tv(clip.frames)
    a, b = (benchmark_condition(vdeblur, colour_clip(9), seed=3) for _ in range(2))
    assert a.params == b.params and torch.equal(a.pixels, b.pixels)  # a pure function of (task, clip, seed)


# --- the sampler and qualification ---


def test_sampler_draws_deblur_at_its_weight_and_qualification_applies_its_rule(vdeblur):
    clip = colour_clip(17)
    tasks = qualified_tasks(clip)
    assert [t.id for t in tasks] == ["t2v", "i2v", "vext", "flf2v", "vinp", "voutp", "vcolor", "vsr", "vdeblur"]
    n, gen = 4000, torch.Generator().manual_seed(0)
    for weight in (1.0, 6.0):
        set_task_weights({"vdeblur": weight})
        tasks = qualified_tasks(clip)
        p = weight / sum(t.weight for t in tasks)  # 1/13, then 6/18
        hits = sum(sample_task(tasks, gen).id == "vdeblur" for _ in range(n))
        sd = math.sqrt(n * p * (1 - p))
        assert abs(hits - n * p) < 4 * sd, f"weight {weight}: {hits} of {n}, expected {n * p:.0f} +- {4 * sd:.0f}"
    # the rule: any video clip of 4k+1 >= 5 frames, grayscale too; never an image or a 7-frame clip
    assert "vdeblur" in {t.id for t in qualified_tasks(colour_clip(5))}
    gray = Clip(colour_clip(9).frames[:1].expand(3, -1, -1, -1).clone())
    assert "vdeblur" in {t.id for t in qualified_tasks(gray)} and "vcolor" not in {t.id for t in qualified_tasks(gray)}
    assert "vdeblur" not in {t.id for t in qualified_tasks(colour_clip(1))}
    assert "vdeblur" not in {t.id for t in qualified_tasks(colour_clip(7))}
    # a rule of a plugin's own (`qualifies`): only clips whose caption mentions rain
    rain = Task("vderain", "video deraining", None, "video", "gaussian_blur", False, "rainy frames")
    register_task(rain, qualifies=lambda c: "rain" in c.caption)
    assert "vderain" in {t.id for t in qualified_tasks(colour_clip(9, caption="rain on a window"))}
    assert "vderain" not in {t.id for t in qualified_tasks(colour_clip(9, caption="a red car"))}


# --- mfm tasks ---


def test_mfm_tasks_list_and_show_the_plugin_task(tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", moving_frames(13, 40, 56, seed=3))
    assert tasks_main(["list", "--task-plugin", PLUGIN]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 18 and lines[-1].split()[:5] == ["vdeblur", "video", "gaussian_blur", "manipulation", "1"]
    assert "video deblurring" in lines[-1]
    for mode in ("benchmark", "train", "generate"):
        out = tmp_path / f"grid-{mode}.png"
        code = tasks_main(["show", "--task-plugin", PLUGIN_FILE, "--task", "vdeblur", "--input", str(video),
                           "--out", str(out), "--mode", mode, "--max-frames", "9", "--size", "32x48"])  # fmt: skip
        said = capsys.readouterr().out
        assert code == 0 and "vdeblur (video deblurring), condition (3, 9, 32, 48), 100.0% given" in said, said
        assert Image.open(out).size[0] >= 640
    assert tasks_main(["list", "--task-plugin", "no_such_plugin"]) == 2
    assert "cannot import it" in capsys.readouterr().err


def test_the_environment_variable_loads_plugins_for_every_command(monkeypatch, capsys):
    monkeypatch.setenv("MFM_TASK_PLUGINS", f"{PLUGIN_FILE}:{PLUGIN}")  # the same module twice: loaded once
    assert tasks_main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 18 and lines[-1].startswith("vdeblur")


# --- mfm generate ---


def test_mfm_generate_runs_the_plugin_task(tmp_path, capsys):
    pipe = tiny_pipeline(tmp_path / "pipe")
    video = write_video(tmp_path / "blurry.mp4", moving_frames(13, 40, 56, seed=3))
    args = ["--checkpoint", str(pipe), "--height", "32", "--width", "32", "--frames", "9", "--steps", "2",
            "--task", "vdeblur", "--prompt", "a wall", "--video", str(video)]  # fmt: skip
    assert generate_main([*args, "--out", str(tmp_path / "o.mp4")]) == 2  # without the plugin: unknown task
    assert "unknown task 'vdeblur'" in capsys.readouterr().err
    assert generate_main([*args, "--task-plugin", PLUGIN, "--out", str(tmp_path / "o.mp4")]) == 0
    assert read_media_file(tmp_path / "o.mp4").shape == (3, 9, 32, 32)
    assert generate_main([*args, "--task-plugin", PLUGIN, "--out", str(tmp_path / "o.png")]) == 2
    assert "task vdeblur makes a video" in capsys.readouterr().err


# --- the benchmark ---


def test_benchmark_build_includes_the_plugin_task(tmp_path, capsys):
    clips = write_clips_table(tmp_path / "clips.lance", moving_clips(tmp_path, 4, frames=33))
    out = str(tmp_path / "bench.lance")
    args = ["build", "--clips", clips, "--out", out, "--per-task", "2", "--frames", "33", "--height", "32",
            "--width", "32", "--task-plugin", PLUGIN]  # fmt: skip
    assert benchmark_main(args) == 0
    ds = lance.dataset(out)
    samples = read_samples(ds)
    assert len(samples) == 17 * 2
    mine = [s for s in samples if s.task == "vdeblur"]
    assert [s.sample_id for s in mine] == ["vdeblur-000", "vdeblur-001"]
    build = json.loads(ds.schema.metadata[b"mfm.benchmark_build"])
    assert build["tasks"][-1] == "vdeblur" and build["task_plugins"] == ["vdeblur"]
    from benchmark.table import read_sample_media

    for s in mine:
        assert (s.task_name, s.media_type, s.n_frames) == ("video deblurring", "video", 33)
        assert json.loads(s.params)["type"] == "Blur"
        gt = read_sample_media(ds, s, "gt")
        cond = benchmark_condition(get_task("vdeblur"), s.clip(gt), s.seed, extra=get_task("vdeblur").generate_extra)
        assert params_to_json(cond.params) == s.params and cond.prompt == s.prompt
    # without the plugin: the 16 only
    plain = build_benchmark(clips, str(tmp_path / "plain.lance"), 1, 0, Selection(33, 200.0, 5.0), (32, 32),
                            log=lambda _: None)  # fmt: skip
    assert len(read_samples(plain)) == 17  # the plugin is still registered in this process
    unregister_task("vdeblur")
    plain = build_benchmark(clips, str(tmp_path / "plain2.lance"), 1, 0, Selection(33, 200.0, 5.0), (32, 32),
                            log=lambda _: None)  # fmt: skip
    assert [s.task for s in read_samples(plain)] == BUILT_IN


# --- training ---


def test_training_config_tasks_section_is_checked():
    from config_files import ConfigError
    from trainer.configs import load_config

    base = {"data.table": "-", "frozen.root": "-"}
    cfg = load_config(overrides=base | {"tasks.plugins": [PLUGIN], "tasks.weights.vdeblur": 3})
    assert (cfg.tasks.plugins, cfg.tasks.weights) == ([PLUGIN], {"vdeblur": 3.0})
    assert load_config(overrides=base).tasks.plugins == []  # default: the 16 only
    with pytest.raises(ConfigError, match="tasks.weights: weights must be > 0.*'vdeblur': 0.0"):
        load_config(overrides=base | {"tasks.weights.vdeblur": 0})
    with pytest.raises(ConfigError, match="tasks.plugin: unknown key; allowed keys here: plugins, weights"):
        load_config(overrides=base | {"tasks.plugin": [PLUGIN]})


@pytest.mark.slow
def test_tiny_training_run_with_the_plugin_in_the_config_records_vdeblur_losses(curated, tmp_path):
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(
        "preset: tiny\n"
        f"run_dir: {run_dir}\n"
        "steps: 4\n"
        f"data: {{table: {curated.table}, num_workers: 0}}\n"
        f"frozen: {{root: {curated.tiny}}}\n"
        "checkpoint: {every: 4}\n"
        f"tasks: {{plugins: [{PLUGIN}], weights: {{vdeblur: 100.0}}}}\n"  # mostly vdeblur in 4 steps
    )
    cmd = [sys.executable, "-m", "mfm", "train", "--config", str(config)]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    deblur_losses = [r["loss_per_task"]["vdeblur"] for r in rows if "vdeblur" in r["loss_per_task"]]
    assert len(deblur_losses) >= 3 and all(math.isfinite(v) and v > 0 for v in deblur_losses), rows
    saved = (run_dir / "config.yaml").read_text()
    assert PLUGIN in saved and "vdeblur: 100.0" in saved  # the checkpointed config names the plugin

    bad = [*cmd, "--set", "tasks.plugins=[no_such.plugin]", "--set", f"run_dir={tmp_path / 'bad'}"]
    done = subprocess.run(bad, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "config error: tasks: task plugin 'no_such.plugin': cannot import" in done.stderr
