"""Frozen-model wrappers (model/vae.py, model/text_encoder.py, model/depth.py, model/tiny_pretrained.py).

Tiny random-init models on the CPU; everything loads through the wrappers' real `from_pretrained`.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import DPTImageProcessor

from model.depth import DepthEstimator, model_input_size
from model.geometry import latent_frames
from model.text_encoder import MAX_LENGTH, TextEncoder, normalize_prompt
from model.tiny_pretrained import write_tiny_pretrained
from model.vae import MFM_SCALING_FACTOR, VideoVAE


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    return VideoVAE.tiny(seed=0)


@pytest.fixture(scope="module")
def text() -> TextEncoder:
    return TextEncoder.tiny(seed=0)


@pytest.fixture(scope="module")
def depth() -> DepthEstimator:
    return DepthEstimator.tiny(seed=0)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_tiny_pretrained(tmp_path_factory.mktemp("tiny_pretrained"), seed=0)


def smooth_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """A moving colour gradient (1, 3, T, H, W) in [-1, 1]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    t = torch.linspace(0, 1, frames).view(frames, 1, 1)
    return torch.stack([torch.sin(3 * x + 2 * t), torch.cos(2 * y - t), (x * y).expand(frames, -1, -1)])[None]


# --- VAE ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 5, 9])  # an image, an even latent count (2), an odd one (3)
def test_vae_shapes(vae: VideoVAE, frames: int) -> None:
    video = torch.rand(2, 3, frames, 32, 48) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (2, 16, latent_frames(frames), 4, 6) and latents.dtype == torch.float32
    assert latent_frames(frames) == {1: 1, 5: 2, 9: 3}[frames]
    decoded = vae.decode(latents)
    assert decoded.shape == video.shape and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1


def test_vae_scaling_factor_applied(vae: VideoVAE) -> None:
    assert vae.scaling_factor == MFM_SCALING_FACTOR == 0.958917567
    video = smooth_clip(9, 32, 32)
    with torch.no_grad():
        raw_latents = vae.vae.encode(video).latent_dist.mode()
    latents = vae.encode(video)
    torch.testing.assert_close(latents, raw_latents * MFM_SCALING_FACTOR, rtol=0, atol=0)
    with torch.no_grad():
        raw_video = vae.vae.decode(raw_latents).sample
    torch.testing.assert_close(vae.decode(latents), raw_video.clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_vae_sampling_uses_the_generator(vae: VideoVAE) -> None:
    video = smooth_clip(1, 32, 32)
    first = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(7))
    again = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(7))
    other = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first, vae.encode(video))


def test_vae_tiled_decode(vae: VideoVAE) -> None:
    """Tiled decode (4 tiles of 32 px over a 64 x 64 image) keeps the shape and roughly agrees with one pass.

    Only roughly: each tile has its own GroupNorm statistics and zero padding at its edges. A trained
    decoder barely notices; this random one gives a correlation of about 0.78, so we require > 0.6.
    """
    image = smooth_clip(1, 64, 64)
    latents = vae.encode(image)
    whole = vae.decode(latents)
    try:
        vae.set_tiling(True, tile_sample_size=(32, 32), overlap=(0.25, 0.25))
        assert vae.tiling
        tiled = vae.decode(latents)
    finally:
        vae.set_tiling(False)
    assert not vae.tiling
    assert tiled.shape == whole.shape == image.shape
    assert not torch.equal(tiled, whole)  # the tiled path really ran
    correlation = torch.corrcoef(torch.stack([tiled.flatten(), whole.flatten()]))[0, 1]
    assert correlation > 0.6, f"tiled vs whole decode correlation {correlation:.3f}"


def test_vae_tile_settings(vae: VideoVAE) -> None:
    with pytest.raises(ValueError, match="does not tile evenly"):
        vae.set_tiling(True, tile_sample_size=(32, 32))  # default overlap 1/6 of 4 latents is not whole
    assert not vae.tiling
    vae.set_tiling(True)  # CogVideoX's defaults: 240 x 360 px tiles, overlaps 1/6 and 1/5
    try:
        assert (vae.vae.tile_sample_min_height, vae.vae.tile_sample_min_width) == (240, 360)
    finally:
        vae.set_tiling(False)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((1, 3, 4, 32, 32), "4k\\+1 frames"), ((1, 3, 1, 30, 32), "multiples of 8"), ((3, 1, 32, 32), "B, 3, T")],
)
def test_vae_rejects_bad_video(vae: VideoVAE, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vae.encode(torch.zeros(shape))


def test_vae_rejects_bad_latents(vae: VideoVAE) -> None:
    with pytest.raises(ValueError, match="latents must be"):
        vae.decode(torch.zeros(1, 4, 1, 4, 4))


# --- T5 ------------------------------------------------------------------------------------------------------

PROMPTS = [
    "A red car drives along a coastal road. #FPS: 16. #task: text-to-video",
    "a cat",
    "zebra!",  # characters outside the tiny corpus' words
    "a boat sails on a calm lake " * 30,  # longer than 77 tokens: truncated
]


def test_text_encode_shapes_and_keep_mask(text: TextEncoder) -> None:
    embeddings, keep_mask = text.encode(PROMPTS)
    assert embeddings.shape == (len(PROMPTS), MAX_LENGTH, text.dim) and embeddings.dtype == torch.float32
    assert keep_mask.shape == (len(PROMPTS), MAX_LENGTH) and keep_mask.dtype == torch.bool
    token_counts = [len(text.tokenizer(normalize_prompt(p)).input_ids) for p in PROMPTS]  # unpadded, with </s>
    assert keep_mask.sum(dim=1).tolist() == [min(n, MAX_LENGTH) for n in token_counts]
    assert token_counts[-1] > MAX_LENGTH
    for row, n in zip(keep_mask, keep_mask.sum(dim=1)):  # valid tokens first, then padding
        assert row[:n].all() and not row[n:].any()


def test_text_encode_is_deterministic_and_batch_independent(text: TextEncoder) -> None:
    embeddings, _ = text.encode(PROMPTS)
    again, _ = text.encode(PROMPTS)
    assert torch.equal(embeddings, again)
    # every prompt is padded to 77 tokens, so its embedding does not depend on the rest of the batch
    alone, _ = text.encode(PROMPTS[1:2])
    torch.testing.assert_close(alone[0], embeddings[1], rtol=1e-5, atol=1e-6)
    # T5 runs unmasked: padding tokens have their own (non-zero) outputs
    assert embeddings[1, -1].abs().sum() > 0


def test_text_prompts_are_normalized(text: TextEncoder) -> None:
    assert normalize_prompt("  A Cat\n") == "a cat"
    torch.testing.assert_close(text.encode(["  A CAT "])[0], text.encode(["a cat"])[0], rtol=0, atol=0)


def test_text_encode_trimmed_keeps_valid_tokens(text: TextEncoder) -> None:
    embeddings, keep_mask = text.encode(PROMPTS)
    trimmed = text.encode_trimmed(PROMPTS)
    for full, mask, stored in zip(embeddings, keep_mask, trimmed):
        assert stored.dtype == torch.float16 and stored.shape == (int(mask.sum()), text.dim)
        assert torch.equal(stored, full[mask].half())


def test_text_rejects_a_bare_string(text: TextEncoder) -> None:
    with pytest.raises(TypeError, match="list of str"):
        text.encode("a cat")  # type: ignore[arg-type]


def test_text_save_load_round_trip(text: TextEncoder, tmp_path) -> None:
    text.save_pretrained(tmp_path)
    assert (tmp_path / "text_encoder" / "model.safetensors").is_file()
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    expected = text.encode(PROMPTS)
    for loaded in (
        TextEncoder.from_pretrained(tmp_path),  # pipeline folder
        TextEncoder.from_pretrained(tmp_path / "text_encoder"),  # finds ../tokenizer
        TextEncoder.from_pretrained(tmp_path / "text_encoder", tokenizer_path=tmp_path / "tokenizer"),
    ):
        embeddings, keep_mask = loaded.encode(PROMPTS)
        assert torch.equal(embeddings, expected[0]) and torch.equal(keep_mask, expected[1])


def test_text_missing_tokenizer_is_named(tiny_root: dict, tmp_path) -> None:
    shutil.copytree(tiny_root["text_encoder"], tmp_path / "text_encoder")
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        TextEncoder.from_pretrained(tmp_path)


def test_text_tiny_tokenizer_is_t5_like(text: TextEncoder) -> None:
    tokenizer = text.tokenizer
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("a cat").input_ids
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.unk_token_id not in ids
    assert TextEncoder.tiny(seed=0).tokenizer.get_vocab() == tokenizer.get_vocab()


# --- Depth ---------------------------------------------------------------------------------------------------


def test_depth_shapes_and_range(depth: DepthEstimator) -> None:
    frames = smooth_clip(5, 40, 72)[0].transpose(0, 1)  # (T, 3, H, W)
    result = depth.predict(frames, batch_size=2)
    assert result.shape == (5, 1, 40, 72) and result.dtype == torch.float32
    assert result.min() >= 0
    torch.testing.assert_close(depth.predict(frames, batch_size=5), result, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(result[0], result[4])  # depends on the frame
    assert depth.predict(frames[:0]).shape == (0, 1, 40, 72)


@pytest.mark.parametrize(("height", "width"), [(40, 70), (100, 60), (30, 30)])
def test_depth_preprocessing_matches_the_image_processor(depth: DepthEstimator, height: int, width: int) -> None:
    """Our batched torch preprocessing reproduces DPTImageProcessor on a uint8 image.

    Within 2 grey levels (/ std): the processor resizes uint8 pixels and rounds, we resize floats. (On
    white noise torchvision's uint8 bicubic path, which clamps between its two passes, differs by more.)
    """
    frame = smooth_clip(1, height, width)[0].transpose(0, 1)  # (1, 3, H, W)
    image = ((frame[0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    expected = depth.processor(images=Image.fromarray(image), return_tensors="pt").pixel_values
    ours = depth.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=0, atol=2 / 255 / 0.225)


@pytest.mark.parametrize(("height", "width"), [(352, 640), (640, 352), (480, 480), (100, 900)])
def test_depth_input_size_matches_the_image_processor(height: int, width: int) -> None:
    """Frame sizes at the released 518-pixel setting, as DPTImageProcessor resizes them."""
    processor = DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14)
    image = Image.new("RGB", (width, height))
    expected = tuple(processor(images=image, return_tensors="pt").pixel_values.shape[-2:])
    assert model_input_size(height, width, 518, 14, keep_aspect_ratio=True) == expected
    assert model_input_size(352, 640, 518, 14, keep_aspect_ratio=True) == (280, 518)


def test_depth_rejects_bad_frames(depth: DepthEstimator) -> None:
    with pytest.raises(ValueError, match="T, 3, H, W"):
        depth.predict(torch.zeros(1, 3, 1, 32, 32))


def test_depth_save_load_round_trip(depth: DepthEstimator, tmp_path) -> None:
    depth.save_pretrained(tmp_path)
    loaded = DepthEstimator.from_pretrained(tmp_path)
    assert loaded.input_size == depth.input_size == 56
    frames = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.predict(frames), depth.predict(frames))


# --- write_tiny_pretrained -------------------------------------------------------------------------------------


def test_tiny_pretrained_layout(tiny_root: dict) -> None:
    root = tiny_root["root"]
    assert {name: path.relative_to(root).as_posix() for name, path in tiny_root.items() if name != "root"} == {
        "vae": "vae",
        "text_encoder": "text_encoder",
        "tokenizer": "tokenizer",
        "depth": "depth",
    }
    for name in ("vae", "text_encoder", "depth"):
        assert (tiny_root[name] / "config.json").is_file()
    assert not list(root.rglob("*.bin")) and not list(root.rglob("*.pt"))  # safetensors only


def test_tiny_pretrained_loads_bit_identical(
    tiny_root: dict, vae: VideoVAE, text: TextEncoder, depth: DepthEstimator
) -> None:
    """Loaded from the root, each model computes exactly what the in-memory tiny model does."""
    video = smooth_clip(5, 32, 32)
    loaded_vae = VideoVAE.from_pretrained(tiny_root["root"])
    assert loaded_vae.scaling_factor == MFM_SCALING_FACTOR
    latents = vae.encode(video)
    assert torch.equal(loaded_vae.encode(video), latents)
    assert torch.equal(loaded_vae.decode(latents), vae.decode(latents))
    embeddings, keep_mask = text.encode(PROMPTS)
    loaded_embeddings, loaded_keep_mask = TextEncoder.from_pretrained(tiny_root["root"]).encode(PROMPTS)
    assert torch.equal(loaded_embeddings, embeddings) and torch.equal(loaded_keep_mask, keep_mask)
    frames = video[0].transpose(0, 1)
    assert torch.equal(DepthEstimator.from_pretrained(tiny_root["root"]).predict(frames), depth.predict(frames))


def test_tiny_pretrained_folders_load_directly(tiny_root: dict, vae: VideoVAE, depth: DepthEstimator) -> None:
    """Each model's own folder loads the same weights as the root."""
    for loaded, reference in (
        (VideoVAE.from_pretrained(tiny_root["vae"]), vae),
        (DepthEstimator.from_pretrained(tiny_root["depth"]), depth),
    ):
        expected = reference.state_dict()
        assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())
    rescaled = VideoVAE.from_pretrained(tiny_root["vae"], scaling_factor=0.5)
    assert rescaled.scaling_factor == 0.5 and vae.scaling_factor == MFM_SCALING_FACTOR
    text = TextEncoder.from_pretrained(tiny_root["text_encoder"], tokenizer_path=tiny_root["tokenizer"])
    assert text.tokenize(PROMPTS)[0].equal(TextEncoder.from_pretrained(tiny_root["root"]).tokenize(PROMPTS)[0])


def test_tiny_pretrained_is_deterministic_per_seed(tiny_root: dict, tmp_path) -> None:
    again = write_tiny_pretrained(tmp_path / "again", seed=0)
    other = write_tiny_pretrained(tmp_path / "other", seed=1)
    weights = {
        "vae": "diffusion_pytorch_model.safetensors",
        "text_encoder": "model.safetensors",
        "depth": "model.safetensors",
    }
    for name, filename in weights.items():
        reference = load_file(tiny_root[name] / filename)
        same, different = load_file(again[name] / filename), load_file(other[name] / filename)
        assert reference.keys() == same.keys() == different.keys()
        assert all(torch.equal(reference[key], same[key]) for key in reference)
        assert not all(torch.equal(reference[key], different[key]) for key in reference)
    assert (tiny_root["tokenizer"] / "tokenizer.json").read_text() == (
        again["tokenizer"] / "tokenizer.json"
    ).read_text()
