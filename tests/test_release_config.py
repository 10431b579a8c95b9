"""Reading and writing the release's transformer config.json with the release's own semantics: keys it ignores
are ignored, a missing key takes its constructor's default, and our export loads back as the same model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_model import RELEASE_TINY, TINY, random_inputs, randomized, release_folder

from model.release import _RELEASE_DEFAULTS, config_from_release, config_to_release, export_release, load_transformer


def tiny_release_config() -> dict:
    return json.loads((RELEASE_TINY / "config.json").read_text())


def rewrite_config(folder: Path, **changes) -> Path:
    raw = tiny_release_config() | changes
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    return folder


def test_a_config_with_the_release_constructors_defaults_loads_as_the_same_model(tmp_path):
    """norm_elementwise_affine True, norm_eps 1e-5 (the release's blocks read neither) and cross_attention_dim
    as a list (block d takes entry d % 2): the same config, weights and forward as the tiny release config."""
    today = load_transformer(release_folder(tmp_path / "a"))
    folder = rewrite_config(release_folder(tmp_path / "b"), norm_elementwise_affine=True, norm_eps=1e-5,
                            cross_attention_dim=[TINY.text_dim, TINY.text_dim])  # fmt: skip
    defaults = load_transformer(folder)
    assert defaults.config == today.config and defaults.config.norm_eps == 1e-6
    inp = random_inputs(TINY, 9)
    with torch.no_grad():
        assert torch.equal(defaults(**inp), today(**inp))


def test_missing_keys_take_the_release_constructors_defaults():
    raw = tiny_release_config()
    assert config_from_release({k: v for k, v in raw.items() if k != "use_depth_cond"}).use_depth is False
    sparse = {k: v for k, v in raw.items() if k not in _RELEASE_DEFAULTS or v != _RELEASE_DEFAULTS[k]}
    assert "upcast_attention" not in sparse and "patch_size" not in sparse
    assert config_from_release(sparse) == config_from_release(raw)
    with pytest.raises(ValueError, match="use_rope=False"):  # the release's default, not ours
        config_from_release({k: v for k, v in raw.items() if k != "use_rope"})


def test_upcast_attention_is_read_and_a_list_of_two_text_widths_is_refused():
    raw = tiny_release_config()
    assert config_from_release(raw | {"upcast_attention": True}).upcast_attention is True
    with pytest.raises(ValueError, match=r"cross_attention_dim=\[768, 32\] gives blocks different text widths"):
        config_from_release(raw | {"cross_attention_dim": [768, 32]})


def test_export_then_load_gives_the_same_model(tmp_path):
    cfg = replace(TINY, use_depth=False, upcast_attention=True)
    model = randomized(cfg).eval()
    export_release(model, tmp_path / "transformer")
    raw = json.loads((tmp_path / "transformer" / "config.json").read_text())
    assert raw["sample_size"] == 32 and raw["norm_eps"] == 1e-6 and raw["upcast_attention"] is True
    loaded = load_transformer(tmp_path).eval()  # pipeline root
    assert loaded.config == cfg
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    inp = random_inputs(cfg, 9)
    with torch.no_grad():
        assert torch.equal(loaded(**inp), model(**inp))
    with pytest.raises(ValueError, match="norm_eps=1e-05 cannot be exported"):
        config_to_release(replace(TINY, norm_eps=1e-5))
