"""Benchmark metrics with known answers: FID 0 for identical sets and equal to torch-fidelity's formula, PSNR of
a known noise level, SSIM equal to scikit-image's, LPIPS 0 for identical images, temporal figures of known
motion; feature networks load from local files (random-init here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from skimage.metrics import structural_similarity
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from benchmark import metrics


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return metrics.write_random_feature_weights(tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def lpips_net(weights):
    return metrics.load_lpips(weights["lpips"])


def frames(n: int = 4, seed: int = 0, size: tuple[int, int] = (40, 56)) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_fid_of_identical_frame_sets_is_zero_and_of_different_sets_positive(weights):
    net = metrics.load_inception(weights["inception"])
    real = metrics.inception_features(net, frames(3, seed=0))
    fake = metrics.inception_features(net, frames(3, seed=1) * 0.5)
    assert real.shape == (3, 2048)
    assert metrics.frechet_distance(real, real.clone()) == pytest.approx(0.0, abs=1e-6)
    assert metrics.frechet_distance(real, fake) > 1e-3
    assert math.isnan(metrics.frechet_distance(real[:1], fake))  # one frame has no covariance


@pytest.mark.parametrize("n, m, dim", [(50, 60, 16), (12, 9, 64), (300, 200, 32)])
def test_frechet_distance_equals_torch_fidelity(n, m, dim):
    g = torch.Generator().manual_seed(dim)
    a = torch.randn(n, dim, generator=g, dtype=torch.float64) * 2 + 1
    b = torch.randn(m, dim, generator=g, dtype=torch.float64) @ torch.randn(dim, dim, generator=g, dtype=torch.float64)
    stats = [fid_features_to_statistics(x) for x in (a, b)]
    reference = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert metrics.frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    b = torch.randn(20000, 4, generator=g, dtype=torch.float64) + torch.tensor([3.0, 0, 0, 4.0], dtype=torch.float64)
    assert metrics.frechet_distance(a, b) == pytest.approx(25.0, rel=0.01)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1])
def test_psnr_of_a_known_noise_level(sigma):
    clean = 0.25 + 0.5 * frames(3).double()  # inside [0.25, 0.75]: the noise never clips
    signs = torch.randint(0, 2, clean.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noisy = clean + sigma * signs  # |error| = sigma everywhere: MSE = sigma²
    expected = torch.full((3,), -20 * math.log10(sigma), dtype=torch.float64)
    assert metrics.psnr(noisy, clean) == pytest.approx(expected, abs=1e-5)  # torchmetrics keeps a float32 term


def test_ssim_equals_scikit_image():
    clean = frames(3)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    ours = metrics.ssim(noisy, clean)
    reference = [
        structural_similarity(x.permute(1, 2, 0).double().numpy(), y.permute(1, 2, 0).double().numpy(),
                              data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for x, y in zip(noisy, clean)
    ]
    assert ours.numpy() == pytest.approx(np.array(reference), abs=1e-9)
    assert metrics.ssim(clean, clean) == pytest.approx(torch.ones(3, dtype=torch.float64))


def test_lpips_of_identical_images_is_zero(lpips_net):
    a, b = frames(3, seed=0), frames(3, seed=1)
    assert metrics.lpips_distance(lpips_net, a, a).abs().max() < 1e-7
    assert (metrics.lpips_distance(lpips_net, a, b) > 0).all()


def test_lpips_loads_a_torchvision_alexnet_with_the_packaged_linear_layers(tmp_path):
    trunk = torchvision.models.alexnet(weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in trunk.items()}, tmp_path / "alexnet.safetensors")
    net = metrics.load_lpips(tmp_path / "alexnet.safetensors")
    state = net.state_dict()
    assert torch.equal(state["net.slice1.0.weight"], trunk["features.0.weight"])
    assert torch.equal(state["net.slice5.10.weight"], trunk["features.10.weight"])
    assert (net.lin0.model[1].weight >= 0).all() and net.lin0.model[1].weight.abs().sum() > 0  # calibrated lins


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.safetensors"):
        metrics.load_inception(tmp_path / "no_such.safetensors")


def test_temporal_figures_of_known_motion(lpips_net):
    levels = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)  # brightness changing at a constant rate
    ramp = levels[:, None, None, None].expand(9, 3, 40, 56)
    assert metrics.motion_smoothness(ramp) == pytest.approx(1.0, abs=1e-12)
    flicker = ramp.clone()
    flicker[4] = 0.0  # one dark frame: its predicted value is 0.5, so 3 inner frames miss
    assert metrics.motion_smoothness(flicker) == pytest.approx(1 - (0.5 + 0.25 + 0.25) / 7, abs=1e-9)
    still = frames(1).expand(5, -1, -1, -1)
    assert metrics.frame_consistency(lpips_net, still) == pytest.approx(1.0, abs=1e-7)
    assert metrics.frame_consistency(lpips_net, frames(5)) < 1.0
