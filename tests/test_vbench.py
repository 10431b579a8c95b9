"""VBench dimensions (benchmark/vbench): known answers that do not depend on the weights.

Tiny random-init networks from configs (`write_random_vbench_weights`); hand computations on fixed features,
flows and interpolations through the dimensions' own seams (`features`, `pair_scores`, the interpolator)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from benchmark import vbench
from benchmark.vbench import musiq
from benchmark.vbench.aesthetic import AestheticQuality
from benchmark.vbench.amt import AMTS, AMTConfig
from benchmark.vbench.base import VideoScore, pad_to_multiple, pool, to_uint8, unpad
from benchmark.vbench.consistency import dino_pixels, first_and_previous_similarity
from benchmark.vbench.dynamic_degree import DynamicDegree, is_dynamic, sample_interval, top_flow_magnitude
from benchmark.vbench.flickering import TemporalFlickering
from benchmark.vbench.imaging import ImagingQuality, resize_longer
from benchmark.vbench.interpolation import TinyInterpolator, convert, load_interpolator, save_interpolator
from benchmark.vbench.motion_smoothness import MotionSmoothness, interpolate_odd_frames
from benchmark.vbench.random_weights import write_random_vbench_weights
from model.aesthetic import AestheticPredictor
from model.raft import load_raft


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_vbench_weights(tmp_path_factory.mktemp("vbench_weights"))


@pytest.fixture(scope="module")
def dims(weights):
    names = [n for n in vbench.DIMENSIONS if n != "dynamic_degree"]  # RAFT: its own tests below
    return vbench.load_dimensions(names, {k: weights[k] for n in names for k in vbench.DIMENSIONS[n].weights})


def random_video(t: int = 5, h: int = 24, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), generator=g, dtype=torch.uint8)


def constant_frames(values: list[int], h: int = 16, w: int = 16) -> torch.Tensor:
    """uint8 (T, 3, h, w), frame t filled with values[t]."""
    return torch.tensor(values, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, h, w).contiguous()


# --- identical frames ---


def test_identical_frames_score_one_on_the_consistency_dimensions_and_flickering(dims):
    still = random_video(1).expand(6, -1, -1, -1).contiguous()
    for name in ("subject_consistency", "background_consistency", "temporal_flickering"):
        assert dims[name](still, 24.0).value == pytest.approx(1.0, abs=1e-6), name
    moving = random_video(6)  # and random frames do not
    for name in ("subject_consistency", "background_consistency", "temporal_flickering"):
        assert dims[name](moving, 24.0).value < 0.9999, name


def test_a_video_that_flickers_scores_low_on_flickering():
    flicker = TemporalFlickering()
    assert flicker(constant_frames([0, 255, 0, 255]), 8.0).value == 0.0  # black/white every frame
    assert flicker(constant_frames([100, 151, 100]), 8.0).value == pytest.approx((255 - 51) / 255)
    assert flicker(constant_frames([10, 20, 40]), 8.0).value == pytest.approx((255 - 15) / 255)  # mean of 10, 20
    assert math.isnan(flicker(constant_frames([7]), 8.0).value)  # one frame: undefined


# --- consistency: sampling and aggregation ---


def test_consistency_is_the_mean_of_clamped_previous_and_first_similarities():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-3.0, 0.0]])
    # t=1: prev 0, first 0 -> 0; t=2: prev .7071, first .7071 -> .7071; t=3: prev -.7071 -> 0, first -1 -> 0
    score = first_and_previous_similarity(f)
    assert score.value == pytest.approx(math.sqrt(0.5) / 3) and score.weight == 3


def test_subject_consistency_scores_every_frame_and_pools_by_frame_pairs(dims, monkeypatch):
    dim = dims["subject_consistency"]
    seen = []
    fixed = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    monkeypatch.setattr(dim, "features", lambda video: seen.append(len(video)) or fixed[: len(video)])
    score = dim(random_video(3), 24.0)
    assert seen == [3] and score == VideoScore(pytest.approx((1.0 + 0.0) / 2), 2.0)  # (1 + 0) / 2 frames
    # a task pools videos by frame pairs, VBench's sum / count: (0.5 * 2 + 1.0 * 4) / 6
    assert pool([score, VideoScore(1.0, 4.0), VideoScore(float("nan"), 0.0)]) == pytest.approx(5 / 6)
    assert dino_pixels(random_video(1, 32, 48)).shape == (1, 3, 224, 336)  # short side 224, no crop


# --- motion smoothness ---


def test_motion_smoothness_rebuilds_odd_frames_from_even_ones():
    hold = TinyInterpolator()  # its residual starts at zero: linear blending
    linear = MotionSmoothness(hold)
    assert linear(constant_frames([0, 10, 20, 30, 40]), 8.0).value == 1.0  # blending is exact here

    class First(torch.nn.Module):  # repeats the first frame; checks the padding it is given
        divisor = 16

        def forward(self, a, b):
            assert a.shape[-2:] == (32, 48)
            return a

    video = constant_frames([0, 10, 20, 30, 40, 50], 20, 40)  # odd frames 10, 30 predicted 0, 20; 50 has none
    assert MotionSmoothness(First())(video, 8.0).value == pytest.approx((255 - 10) / 255)
    # predictions go to uint8 by truncating, as AMT's tensor2img: (0 + 3) / 2 = 1.5 -> 1
    assert interpolate_odd_frames(constant_frames([0, 1, 3]), hold).unique().tolist() == [1]
    assert math.isnan(linear(constant_frames([0, 1]), 8.0).value)  # two frames: one kept pair needs three


def test_interpolator_round_trips_and_names_an_unknown_file(tmp_path):
    model = TinyInterpolator(channels=4)
    torch.nn.init.normal_(model.out.weight)
    loaded = load_interpolator(save_interpolator(model, tmp_path / "i.safetensors"))
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(a, b), model(a, b))
    with pytest.raises(ValueError, match="amt-s.pth"):
        load_interpolator(tmp_path / "amt-s.bin")


# --- AMT-S (benchmark/vbench/amt.py) ---


def official_amt_s_shapes() -> dict[str, tuple[int, ...]]:
    """amt-s.pth's state_dict keys and shapes, written out from VBench's networks/AMT-S.py and its blocks
    (RAFT small encoder with output_dim 84 and parameter-free instance norms; IFRNet encoder / decoders with
    channels [20, 32, 44, 56], skip 20; small update blocks hidden 76, flow 20, corr 64, fc 68, radius 3,
    4 levels; 3 flows), independently of our module."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, c_in, c_out, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c_out, c_in, k, k), (c_out,)

    def conv_prelu(name, c_in, c_out):
        conv(f"{name}.0", c_in, c_out, 3)
        shapes[f"{name}.1.weight"] = (c_out,)

    conv("feat_encoder.conv1", 3, 32, 7)
    for i, (c_in, dim, stride) in enumerate([(32, 32, 1), (32, 64, 2), (64, 96, 2)], 1):
        for j, block_in in enumerate([c_in, dim]):
            name = f"feat_encoder.layer{i}.{j}"
            conv(f"{name}.conv1", block_in, dim // 4, 1)
            conv(f"{name}.conv2", dim // 4, dim // 4, 3)
            conv(f"{name}.conv3", dim // 4, dim, 1)
            if j == 0 and stride == 2:
                conv(f"{name}.downsample.0", block_in, dim, 1)
    conv("feat_encoder.conv2", 96, 84, 1)
    for i, (c_in, ch) in enumerate([(3, 20), (20, 32), (32, 44), (44, 56)], 1):
        conv_prelu(f"encoder.pyramid{i}.0", c_in, ch)
        conv_prelu(f"encoder.pyramid{i}.1", ch, ch)
    for name, c_in, width, c_out in [("decoder4", 113, 112, 48), ("decoder3", 136, 132, 36),
                                     ("decoder2", 100, 96, 24), ("decoder1", 64, 60, 24)]:  # fmt: skip
        conv_prelu(f"{name}.convblock.0", c_in, width)
        for k, c in [(1, width), (2, 20), (3, width), (4, 20)]:
            conv_prelu(f"{name}.convblock.1.conv{k}", c, c)
        conv(f"{name}.convblock.1.conv5", width, width, 3)
        shapes[f"{name}.convblock.1.prelu.weight"] = (width,)
        shapes[f"{name}.convblock.2.weight"], shapes[f"{name}.convblock.2.bias"] = (width, c_out, 4, 4), (c_out,)
    for name, cdim in [("update4", 44), ("update3", 32), ("update2", 20)]:
        conv(f"{name}.convc1", 2 * 4 * 7 * 7, 64, 1)
        conv(f"{name}.convf1", 4, 40, 7)
        conv(f"{name}.convf2", 40, 20, 3)
        conv(f"{name}.conv", 84, 68, 3)
        for head, c_in, c_out in [("gru", 68 + 4 + cdim, 76), ("feat_head", 76, cdim), ("flow_head", 76, 4)]:
            conv(f"{name}.{head}.0", c_in, 76, 3)
            conv(f"{name}.{head}.2", 76, c_out, 3)
    conv("comb_block.0", 9, 18, 3)
    shapes["comb_block.1.weight"] = (18,)
    conv("comb_block.2", 18, 3, 3)
    return shapes


def test_amt_s_has_the_official_checkpoint_keys_and_shapes():
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in AMTS().state_dict().items()}
    expected = official_amt_s_shapes()
    assert sorted(set(ours) ^ set(expected)) == []  # no missing / unexpected keys
    assert ours == expected
    assert sum(math.prod(s) for s in ours.values()) == 2_990_543  # the paper's AMT-S: 3.0 M parameters


@pytest.fixture
def one_thread():
    """Tiny convs gain nothing from threads, and on a busy 2-core runner two threads make them ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_amt(seed: int = 0) -> AMTS:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AMTS(AMTConfig.tiny()).eval().requires_grad_(False)


@torch.no_grad()
def test_amt_interpolates_frames_of_a_few_sizes(one_thread):
    model = tiny_amt()
    for h, w in [(32, 32), (48, 80)]:
        a, b = torch.rand(2, 3, h, w), torch.rand(2, 3, h, w)
        mid, alone = model(a, b), model(a[1:], b[1:])
        assert mid.shape == (2, 3, h, w) and torch.isfinite(mid).all() and 0 <= mid.min() <= mid.max() <= 1
        assert torch.allclose(mid[1:], alone, atol=1e-5)  # samples do not mix (instance norm, per-sample mean)
    video = torch.randint(0, 256, (3, 3, 40, 52), dtype=torch.uint8)  # padded to 48 x 64, then unpadded
    assert interpolate_odd_frames(video, model).shape == (1, 3, 40, 52)
    with pytest.raises(ValueError, match="at least 32 pixels"):  # a 1-pixel coarsest level would give NaN
        model(a[:1, :, :16], b[:1, :, :16])


def test_amt_checkpoint_converts_and_loads_strictly(tmp_path, one_thread):
    model = AMTS()  # AMT-S sizes, random init, stored as AMT's training checkpoints are
    state = model.state_dict()
    torch.save({"state_dict": state, "epoch": 300}, tmp_path / "amt-s.pth")
    for loaded in (load_interpolator(tmp_path / "amt-s.pth"),
                   load_interpolator(convert(tmp_path / "amt-s.pth", tmp_path / "amt-s.safetensors"))):  # fmt: skip
        assert isinstance(loaded, AMTS) and loaded.state_dict().keys() == state.keys()
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    torch.save({"state_dict": {k: v for k, v in state.items() if k != "comb_block.1.weight"}}, tmp_path / "x.pth")
    with pytest.raises(RuntimeError, match="comb_block.1.weight"):  # strict: a missing key is named
        load_interpolator(tmp_path / "x.pth")
    tiny = tiny_amt()  # a tiny config travels in the safetensors metadata
    again = load_interpolator(save_interpolator(tiny, tmp_path / "tiny.safetensors"))
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert again.cfg == tiny.cfg and torch.equal(again(a, b), tiny(a, b))


def test_amt_motion_smoothness_on_static_videos(one_thread):
    """Trained AMT-S reproduces static frames only approximately (random weights: about 0.78 at 128 x 128); what holds
    for any weights: with the output heads zeroed the merge returns the frames' mean colour (a flat grey video
    scores exactly 1), and with every flow layer zeroed too the warps are the identity up to float error
    (at most one grey level after truncation)."""
    model = tiny_amt()
    for head in (model.decoder1.convblock[-1], model.comb_block[-1]):  # mask 0.5, no residual, no correction
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    for grey in (0, 37, 128, 255):
        assert MotionSmoothness(model)(torch.full((5, 3, 32, 48), grey, dtype=torch.uint8), 8.0).value == 1.0
    flow_layers = [model.decoder4.convblock[-1], model.decoder3.convblock[-1], model.decoder2.convblock[-1]]
    for head in flow_layers + [u.flow_head[-1] for u in (model.update4, model.update3, model.update2)]:
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    frame = torch.randint(0, 256, (1, 3, 32, 48), dtype=torch.uint8)
    static = frame.repeat(3, 1, 1, 1)
    assert (interpolate_odd_frames(static, model).int() - frame.int()).abs().max() <= 1
    assert MotionSmoothness(model)(static, 8.0).value >= 1 - 1 / 255


def test_padding_splits_evenly_and_undoes():
    x = torch.rand(2, 3, 20, 30)
    padded, pad = pad_to_multiple(x, 16)
    assert padded.shape == (2, 3, 32, 32) and pad == (1, 1, 6, 6) and torch.equal(unpad(padded, pad), x)


# --- dynamic degree ---


def test_dynamic_degree_samples_at_8_fps_and_applies_vbench_thresholds(monkeypatch):
    assert [sample_interval(f) for f in (24, 16, 12, 20, 8, 4, 30)] == [3, 2, 2, 2, 1, 1, 4]  # Python's round
    flow = torch.zeros(2, 10, 10)
    flow[0, 0, :5], flow[1, 0, :5] = 3.0, 4.0  # the top 5% (5 of 100 pixels) have magnitude 5
    flow[0, 5, 5] = 1.0
    assert top_flow_magnitude(flow) == 5.0
    # 16 frames need round(4) = 4 pairs above 6 * 256 / 256
    assert not is_dynamic([7, 7, 7, 1], 256, 16) and is_dynamic([7, 7, 7, 7.5], 256, 16)
    assert is_dynamic([0.1], 256, 2) and not is_dynamic([], 256, 2)  # round(0.5) = 0 pairs needed; no pair
    dim = DynamicDegree(raft=None)
    seen = []
    monkeypatch.setattr(dim, "pair_scores", lambda frames: seen.append(frames[:, 0, 0, 0].tolist()) or [2.0, 0.0])
    video = constant_frames(list(range(9)), 64, 80)  # 9 frames at 16 fps -> 0, 2, 4, 6, 8; threshold 1.5
    assert dim(video, 16.0).value == 1.0 and seen == [[0, 2, 4, 6, 8]]  # needs round(1.25) = 1 pair


def test_dynamic_degree_runs_a_real_tiny_raft_on_frames_below_its_minimum_size():
    dim = DynamicDegree(load_raft("raft_small", None), flow_updates=1)
    still = random_video(1, 16, 16).expand(3, -1, -1, -1).contiguous()  # upscaled to 128 for RAFT
    scores = dim.pair_scores(still)
    assert len(scores) == 2 and all(math.isfinite(s) and s >= 0 for s in scores)


# --- aesthetic and imaging quality ---


def test_aesthetic_quality_is_the_frame_mean_over_ten(weights):
    dim = AestheticQuality(lambda frames: frames.float().mean(dim=(1, 2, 3)))  # a stand-in predictor
    assert dim(constant_frames([20, 40, 90]), 8.0).value == pytest.approx(5.0)  # mean 50 / 10
    real = AestheticQuality.load({"clip_l14": weights["clip_l14"], "laion_head": weights["laion_head"]})
    frames = random_video(3)
    assert real(frames, 8.0).value == pytest.approx(float(real.predictor(frames).mean()) / 10, rel=1e-6)
    with pytest.raises(ValueError, match="takes 24-d embeddings"):
        AestheticPredictor(weights["clip_b32"], weights["laion_head"])  # 16-d CLIP


def test_imaging_quality_resizes_the_longer_side_to_512_and_divides_by_100():
    assert resize_longer(torch.zeros(1, 3, 600, 1000, dtype=torch.uint8)).shape == (1, 3, 307, 512)
    assert resize_longer(torch.zeros(1, 3, 300, 500, dtype=torch.uint8)).shape == (1, 3, 300, 500)
    sizes = []

    def brightness(frame):  # a stand-in MUSIQ: 100 * mean pixel
        sizes.append(tuple(frame.shape))
        return 100 * frame.mean()

    dim = ImagingQuality(brightness)
    assert dim(constant_frames([51, 102], 520, 16), 8.0).value == pytest.approx(0.3)  # (0.2 + 0.4) / 2
    assert sizes == [(1, 3, 512, 15)] * 2  # int(512 / 520 * 16) = 15


def test_imaging_quality_loads_our_musiq_from_the_weights_file(weights):
    dim = ImagingQuality.load({"musiq": weights["musiq"]})
    assert isinstance(dim.net, musiq.Musiq) and dim.net.cfg == musiq.PRESETS["tiny"]
    frames = random_video(2)
    expected = sum(float(dim.net(f[None].float() / 255)) for f in frames) / 2 / 100
    assert dim(frames, 8.0).value == pytest.approx(expected, rel=1e-5)


# --- MUSIQ (benchmark/vbench/musiq.py) ---


def test_musiq_hash_positions_match_a_hand_computation():
    # row i -> floor(i * G / rows), column j -> floor(j * G / cols), cell = row * G + column
    assert musiq.hash_positions(10, 3, 7).tolist() == [r * 10 + c for r in (0, 3, 6) for c in (0, 1, 2, 4, 5, 7, 8)]
    assert musiq.hash_positions(4, 1, 6).tolist() == [0, 0, 1, 2, 2, 3]  # more patches than cells: repeats
    assert musiq.hash_positions(4, 4, 4).tolist() == list(range(16))


def test_musiq_multiscale_patches_match_a_hand_computation():
    cfg = replace(musiq.PRESETS["tiny"], patch_size=4, longer_sides=(12, 8), hash_grid=4)
    image = torch.arange(30.0).reshape(1, 1, 3, 10).expand(1, 3, 3, 10) + torch.tensor([0.0, 100, 200])[:, None, None]
    p = musiq.multiscale_patches(image, cfg)
    # scale 0: longer side 8 -> 2 x 8, one row of 2 patches, padded to ceil(8/4)^2 = 4
    # scale 1: longer side 12 -> round(3.6) x 12 = 4 x 12, 3 patches, padded to 9; scale 2: the original, 3 patches
    assert p.pixels.shape == (1, 4 + 9 + 3, 3 * 16)
    assert p.mask[0].tolist() == [True] * 2 + [False] * 2 + [True] * 3 + [False] * 6 + [True] * 3
    assert p.scale[0].tolist() == [0, 0, 0, 0] + [1] * 3 + [0] * 6 + [2] * 3  # padding: scale 0, cell 0
    assert p.position[0].tolist() == [0, 2, 0, 0] + [0, 1, 2] + [0] * 6 + [0, 1, 2]  # grid 4: cols 0,2 / 0,1,2
    # original scale: TF SAME padding of 3 x 10 to 4 x 12 puts 0 rows on top, 1 below, 1 column each side
    canvas = torch.zeros(3, 4, 12)
    canvas[:, 0:3, 1:11] = image[0]
    for j in range(3):
        assert torch.equal(p.pixels[0, 13 + j], canvas[:, :, 4 * j : 4 * j + 4].reshape(-1))  # channel-major
    # scale 0: the bicubic 2 x 8 image, padded 1 row on top and 1 below
    small = torch.zeros(3, 4, 8)
    small[:, 1:3] = F.interpolate(image, size=(2, 8), mode="bicubic", align_corners=False)[0]
    for j in range(2):
        assert torch.allclose(p.pixels[0, j], small[:, :, 4 * j : 4 * j + 4].reshape(-1))
    assert not p.pixels[0, 2:4].any() and not p.pixels[0, 7:13].any()


def pyiqa_musiq_koniq_shapes() -> dict[str, tuple[int, ...]]:
    """pyiqa's MUSIQ() (musiq_arch.py; KonIQ / SPAQ checkpoints): BiT root 64 -> bottleneck 256 on 8 x 8 tokens,
    a 14-layer ViT, width 384, MLP 1152, 10 x 10 hash grid, 3 scales, one output."""
    shapes: dict[str, tuple[int, ...]] = {"conv_root.weight": (64, 3, 7, 7), "gn_root.weight": (64,),
                                          "gn_root.bias": (64,)}  # fmt: skip
    for name, cout, cin, k in [("1", 64, 64, 1), ("2", 64, 64, 3), ("3", 256, 64, 1), ("_proj", 256, 64, 1)]:
        shapes[f"block1.conv{name}.weight"] = (cout, cin, k, k)
        shapes[f"block1.gn{name}.weight"] = shapes[f"block1.gn{name}.bias"] = (cout,)
    shapes |= {"embedding.weight": (384, 256 * 8 * 8), "embedding.bias": (384,), "head.weight": (1, 384),
               "head.bias": (1,)}  # fmt: skip
    enc = "transformer_encoder."
    shapes |= {enc + "posembed_input.position_emb": (1, 100, 384), enc + "scaleembed_input.scale_emb": (3, 384),
               enc + "cls": (1, 1, 384), enc + "encoder_norm.weight": (384,), enc + "encoder_norm.bias": (384,)}
    for i in range(14):
        b = f"{enc}transformer.encoderblock_{i}."
        for norm in ("norm1", "norm2"):
            shapes[b + norm + ".weight"] = shapes[b + norm + ".bias"] = (384,)
        for proj in ("query", "key", "value", "out"):
            shapes[f"{b}attention.{proj}.weight"], shapes[f"{b}attention.{proj}.bias"] = (384, 384), (384,)
        shapes |= {b + "mlp.fc1.weight": (1152, 384), b + "mlp.fc1.bias": (1152,), b + "mlp.fc2.weight": (384, 1152),
                   b + "mlp.fc2.bias": (384,)}  # fmt: skip
    return shapes


def test_musiq_default_state_dict_is_pyiqa_musiq_koniq():
    with torch.device("meta"):
        model = musiq.Musiq()
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == pyiqa_musiq_koniq_shapes()
    assert sum(v.numel() for v in model.state_dict().values()) == 27_125_825  # ~104 MiB in float32, the .pth


def test_tiny_musiq_gives_finite_scores_for_frames_of_any_shape():
    model = musiq.tiny()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for h, w in [(24, 40), (40, 24), (5, 3), (1, 1)]:  # landscape, portrait, smaller than a patch
            scores = model(torch.rand(1, 3, h, w, generator=g))
            assert scores.shape == (1, 1) and torch.isfinite(scores).all()
        frames = torch.rand(2, 3, 12, 20, generator=g)
        p = musiq.multiscale_patches(musiq.normalize(frames), model.cfg)
        assert torch.allclose(model.score_patches(p)[1], model(frames[1:])[0], atol=1e-4)  # a batch doesn't mix
        padded = musiq.Patches(*(F.pad(t, (0, 0, 0, 5) if t.ndim == 3 else (0, 5)) for t in p))
        assert torch.allclose(model.score_patches(padded), model.score_patches(p), atol=1e-4)  # padding is masked


def test_musiq_converter_round_trips(tmp_path, capsys):
    model = musiq.tiny(seed=3)
    torch.save({"params": {"module." + k: v for k, v in model.state_dict().items()}}, tmp_path / "ckpt.pth")
    assert musiq.main(["convert", str(tmp_path / "ckpt.pth"), str(tmp_path / "m.safetensors"), "--preset", "tiny"]) == 0
    assert "preset tiny" in capsys.readouterr().out
    back = musiq.load(tmp_path / "m.safetensors")  # the config comes from the file's metadata
    assert back.cfg == model.cfg and not back.training
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
    frame = torch.rand(1, 3, 20, 12)
    assert torch.equal(back(frame), model(frame))
    with pytest.raises(ValueError, match=r"ckpt.pth does not fit .*missing \['transformer_encoder.*\(192\)"):
        musiq.load(tmp_path / "ckpt.pth")  # no config in a .pth: the default's 14 blocks, the file has 2


def test_to_uint8_rounds_like_the_video_writer():
    assert to_uint8(torch.tensor([0.0, 0.5 / 255, 1.6 / 255, 1.2])).tolist() == [0, 0, 2, 255]


# --- the request ---


def test_bad_requests_name_the_dimension_and_the_file(weights, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dynamic_degree: weights raft=.*nope.pth: no such file"):
        vbench.check_request(["dynamic_degree"], {"raft": tmp_path / "nope.pth"})
    with pytest.raises(ValueError, match="aesthetic_quality: needs --metric-weights laion_head=PATH"):
        vbench.check_request(["aesthetic_quality"], {"clip_l14": weights["clip_l14"]})
    with pytest.raises(ValueError, match="--metric-weights dino: no dimension asked for uses it"):
        vbench.check_request(["temporal_flickering"], {"dino": weights["dino"]})
    with pytest.raises(ValueError, match=r"--metrics \['sharpness'\]: not a dimension"):
        vbench.check_request(["sharpness"], {})
    with pytest.raises(ValueError, match="expected KEY=PATH"):
        vbench.parse_weights(["dino"])
    assert vbench.check_request(["vbench"], dict(weights)) == list(vbench.DIMENSIONS)


def test_eval_names_a_missing_weight_file_before_any_work(tmp_path, capsys):
    from benchmark.cli import main as benchmark_main

    rc = benchmark_main(["eval", "--bench", str(tmp_path / "no.lance"), "--outputs", str(tmp_path), "--out",
                         str(tmp_path / "r"), "--inception-weights", "x", "--lpips-weights", "y",
                         "--metrics", "dynamic_degree", "--metric-weights", f"raft={tmp_path / 'raft.pth'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "dynamic_degree: weights raft=" in err and "raft.pth: no such file" in err
    assert not (tmp_path / "r").exists()
