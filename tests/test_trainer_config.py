"""`mfm train` configs: Table 3 presets, errors that name the key before anything launches, the DeepSpeed JSON."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from config_files import ConfigError
from model.geometry import sample_tokens
from trainer import train
from trainer.configs import PRESETS, deepspeed_config, load_config

REQUIRED = {"data.table": "clips.lance", "frozen.root": "models"}


@pytest.mark.parametrize("size", ["2b", "8b"])
def test_phase_presets_carry_table_3(size):
    table3 = {  # phase: (lr, bs/GPU, SP, iterations, (T, H, W))
        "128px": (1e-4, 16, 1, 170_000, (49, 128, 224)),
        "360px": (8e-5, 2, 1, 100_000, (89, 352, 640)),
        "720px": (5e-5, 1, 2, 50_000, (97, 720, 1280)),
        "multires": (5e-5, 1, 2, 40_000, (97, 720, 1280)),
    }
    for phase, (lr, bs, sp, steps, size_thw) in table3.items():
        cfg = load_config(overrides=REQUIRED, preset=f"{size}_{phase}")
        d = cfg.data
        got = (cfg.optim.lr, cfg.batch_size, cfg.parallel.sp, cfg.steps, (d.frames, d.height, d.width))
        assert got == (lr, bs, sp, steps, size_thw), phase
        assert cfg.model.size == size and cfg.phase == phase
    multires = load_config(overrides=REQUIRED, preset=f"{size}_multires").data.packing
    assert multires.enabled and multires.max_tokens == sample_tokens(97, 720, 1280) == 25 * 45 * 80
    share = load_config(overrides=REQUIRED, preset=f"{size}_128px").data.image_share
    assert (share.at(0), share.at(10_000), share.at(10**6)) == (1.0, 1.0, 0.1)  # pure images first, then to 0.1


def test_yaml_then_set_override_the_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: 2b_360px\nrun_dir: out/x\ndata: {table: t.lance, num_workers: 3}\nfrozen: {root: m}\n")
    cfg = load_config(path, {"optim.lr": 3e-5, "data.aspect_ratios": [1.0]})
    assert (cfg.preset, cfg.run_dir, cfg.data.num_workers, cfg.optim.lr, cfg.batch_size) == (
        "2b_360px", "out/x", 3, 3e-5, 2)  # fmt: skip
    assert cfg.data.buckets() == [(480, 480)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim.lrr": 1e-4}, r"optim.lrr: unknown key; allowed keys here: lr, betas"),
        ({"model.size": "3b"}, r"model.size: Input should be 'tiny', '2b' or '8b' \(got '3b'\)"),
        ({"data.frames": 10}, r"data.frames: must be 1 or 4k\+1"),
        ({"data.width": 40}, r"data.width: must be a multiple of 16 \(got 40\)"),
        ({"parallel.sp": 3}, r"parallel.sp=3 must divide the 2 heads"),
        ({"parallel.precision": "fp16"}, r"parallel.precision: Input should be 'auto', 'bf16' or 'fp32'"),
        ({"data.packing.enabled": True}, r"packing packs one sequence per GPU: set batch_size=1"),
        ({"tasks.quality_policy": {"blurry": ["t2v"]}},
         r"tasks.quality_policy: .*unknown quality tag\(s\) \['blurry'\]"),
    ],
)
def test_bad_key_or_value_is_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=REQUIRED | overrides)


def test_missing_table_and_models_and_unknown_preset_are_named():
    with pytest.raises(ConfigError, match=r"(?s)frozen: required.*data.table: required"):
        load_config()
    with pytest.raises(ConfigError, match=r"preset: unknown preset '2b_999px'; allowed: tiny, 2b_128px"):
        load_config(overrides=REQUIRED, preset="2b_999px")


def test_mfm_train_rejects_a_bad_config_before_launching(capsys):
    code = train.main(["--set", "data.table=t.lance", "--set", "frozen.root=m", "--set", "optim.schedul=cosine"])
    assert code == 2
    assert "optim.schedul: unknown key" in capsys.readouterr().err
    assert not dist.is_initialized()  # nothing started


def test_a_quality_policy_naming_an_unknown_task_stops_the_launch(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("data: {table: t.lance}\nfrozen: {root: m}\ntasks: {quality_policy: {watermarked: [t2v, t3v]}}\n")
    assert train.main(["--config", str(path)]) == 2
    assert "tasks.quality_policy['watermarked']: unknown task 't3v'" in capsys.readouterr().err
    assert not dist.is_initialized()
    assert load_config(overrides=REQUIRED).tasks.quality_policy["low_res"] == ["t2v", "t2i", "vsr", "sisr"]


def test_deepspeed_json_is_generated_from_the_config(capsys):
    cfg = load_config(overrides=REQUIRED | {"optim.schedule": "cosine", "optim.warmup_steps": 10}, preset="2b_720px")
    gpu, cpu = deepspeed_config(cfg, on_gpu=True), deepspeed_config(cfg, on_gpu=False)
    assert gpu["zero_optimization"]["stage"] == 3 and gpu["zero_optimization"]["reduce_scatter"] is True
    assert (gpu["bf16"]["enabled"], cpu["bf16"]["enabled"]) == (True, False)
    params = gpu["optimizer"]["params"]
    assert (gpu["optimizer"]["type"], params["lr"], params["torch_adam"]) == ("AdamW", 5e-5, True)
    assert gpu["scheduler"]["type"] == "WarmupCosineLR" and gpu["scheduler"]["params"]["total_num_steps"] == 50_000
    assert (gpu["gradient_clipping"], gpu["train_micro_batch_size_per_gpu"]) == (1.0, 1)
    assert "scheduler" not in deepspeed_config(load_config(overrides=REQUIRED), on_gpu=False)  # tiny: constant lr
    assert train.main(["--preset", "tiny", "--set", "data.table=t", "--set", "frozen.root=m", "--print-config"]) == 0
    assert '"torch_adam": true' in capsys.readouterr().out


def test_every_preset_validates():
    for name in PRESETS:
        load_config(overrides=REQUIRED, preset=name)


def test_init_from_a_released_folder_or_our_checkpoint_step(tmp_path):
    from test_model import release_folder

    from model.release import load_transformer
    from trainer.train import build_model

    released = release_folder(tmp_path)  # <root>/transformer/ in the release's layout and names
    model = build_model("tiny", "auto", str(released.parent), seed=0)
    reference = load_transformer(released)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    step = tmp_path / "run" / "checkpoints" / "step_00000010"
    model.save_pretrained(step / "model")  # what a checkpoint's consolidated export looks like
    again = build_model("tiny", "auto", str(step), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), reference.state_dict().values()))
    with pytest.raises(ValueError, match=r"is not model.size='2b'"):
        build_model("2b", "auto", str(released), seed=0)
