"""MfM-Benchmark metrics (paper §4.3, Table 6) as pure functions of frames, plus the feature networks.

Reference-based: FID (torch-fidelity's Inception-V3 features and Fréchet distance), PSNR and SSIM
(torchmetrics), LPIPS (the `lpips` package, AlexNet). No-reference temporal figures:
- frame-to-frame consistency: 1 - mean LPIPS between consecutive frames (1 = frames look alike);
- motion smoothness: 1 - mean |f_t - (f_{t-1} + f_{t+1}) / 2| on [0, 1] pixels, the error of predicting
  each inner frame from its neighbours (VBench interpolates with a network, AMT; linear interpolation
  needs no weights). Constant-velocity change scores 1.
The paper's other no-reference figures (aesthetic and imaging quality, CLIP consistency, temporal style)
need models not used here.

Frames are float tensors (N, 3, H, W) in [0, 1] unless a docstring says otherwise. The feature networks
load from LOCAL files only: safetensors, or a PyTorch state dict read with `weights_only=True` (e.g.
torch-fidelity's `pt_inception-2015-12-05-6726825d.pth`, torchvision's `alexnet-owt-7be5be79.pth`).
`write_random_feature_weights` makes random-init ones for tests and the demo.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import lpips
import numpy as np
import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

INCEPTION_FEATURES = "2048"
LPIPS_NET = "alex"
SSIM_RADIUS = 5  # Gaussian window radius for sigma 1.5 (truncated at 3.5 sigma)
# torchvision AlexNet `features.{i}` conv -> the LPIPS module's slice holding it
_ALEXNET_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local safetensors file or a PyTorch file read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature-network weights {path}: no such file")
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


# --- feature networks --------------------------------------------------------------------------------------


def load_inception(path: str | Path, device: str | torch.device = "cpu") -> FeatureExtractorInceptionV3:
    """torch-fidelity's FID Inception-V3 with the weights at `path`.

    torch-fidelity reads its weights file with pickle enabled; we load the tensors safely first and hand it
    a file of our own writing, so no outside pickle runs."""
    state = load_weights(path)
    with tempfile.TemporaryDirectory() as tmp:
        own = Path(tmp) / "inception.pt"
        torch.save(state, own)
        net = FeatureExtractorInceptionV3("inception-v3-compat", [INCEPTION_FEATURES], str(own))
    return net.to(device)


def load_lpips(path: str | Path, device: str | torch.device = "cpu") -> lpips.LPIPS:
    """LPIPS (AlexNet, v0.1) with the weights at `path`: a whole LPIPS state dict, or torchvision's AlexNet
    state dict, then the linear layers are the calibrated ones shipped inside the `lpips` package."""
    net = _random_lpips()
    state = load_weights(path)
    if any(k.startswith("features.") for k in state):  # torchvision AlexNet: map its convs, add the lins
        trunk = {}
        for key, value in state.items():
            if key.startswith("features."):
                index = int(key.split(".")[1])
                trunk[f"net.slice{_ALEXNET_SLICES[index]}.{key.removeprefix('features.')}"] = value
        lins = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{LPIPS_NET}.pth",
                          map_location="cpu", weights_only=True)
        net.net.load_state_dict({k.removeprefix("net."): v for k, v in trunk.items()})
        net.load_state_dict(lins, strict=False)
    else:
        net.load_state_dict(state)
    return net.eval().requires_grad_(False).to(device)


def _random_lpips() -> lpips.LPIPS:
    """An LPIPS module with random weights (nothing downloaded): the frame to load weights into."""
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(pretrained=False, pnet_rand=True, net=LPIPS_NET, verbose=False)


def write_random_feature_weights(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """Random-init Inception-V3 and LPIPS weights as safetensors (for tests and the demo; their scores
    are only self-consistent, not comparable with published ones)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
        for m in net.modules():  # variance-preserving convs keep the random features O(1)
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        inception = net.state_dict()
        inception["fc.weight"] = torch.randn(1008, 2048) * 0.01  # torch-fidelity's head has 1008 classes
        inception["fc.bias"] = torch.zeros(1008)
        lp = _random_lpips().state_dict()
        for key in lp:
            if key.endswith("model.1.weight"):  # LPIPS's linear heads are non-negative
                lp[key] = lp[key].abs()
    paths = {"inception": folder / "inception.safetensors", "lpips": folder / "lpips.safetensors"}
    save_file({k: v.clone().contiguous() for k, v in inception.items()}, paths["inception"])
    save_file({k: v.clone().contiguous() for k, v in lp.items()}, paths["lpips"])
    return paths


# --- reference-based ---------------------------------------------------------------------------------------


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
        shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise ValueError(f"frames must be two (N, 3, H, W) tensors of one shape; got {shapes}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB, (N,), for frames in [0, 1]."""
    _check_pair(a, b)
    return peak_signal_noise_ratio(a.double(), b.double(), data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame SSIM, (N,), for frames in [0, 1], as Wang et al. (2004) and scikit-image define it: Gaussian
    window (sigma 1.5, 11 taps), K1 0.01, K2 0.03, averaged over channels and over the pixels whose window
    lies inside the frame (torchmetrics' map, its reflect-padded border cropped)."""
    _check_pair(a, b)
    _, full = structural_similarity_index_measure(
        a.double(), b.double(), data_range=1.0, reduction="none", return_full_image=True
    )  # (N, 3, H, W)
    border = SSIM_RADIUS
    if min(a.shape[-2:]) <= 2 * border:
        raise ValueError(f"SSIM needs frames larger than {2 * border}x{2 * border}; got {tuple(a.shape[-2:])}")
    return full[..., border:-border, border:-border].mean(dim=(1, 2, 3))


@torch.no_grad()
def lpips_distance(net: lpips.LPIPS, a: torch.Tensor, b: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Per-frame LPIPS, (N,), for frames in [0, 1] (lower = more alike)."""
    _check_pair(a, b)
    device = next(net.parameters()).device
    out = [net(x.to(device), y.to(device), normalize=True).flatten() for x, y in zip(a.split(batch), b.split(batch))]
    return torch.cat(out).cpu().double()


@torch.no_grad()
def inception_features(net: FeatureExtractorInceptionV3, frames: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Frames (N, 3, H, W) in [0, 1] -> pool features (N, 2048), float64 (torch-fidelity resizes to 299)."""
    device = next(net.parameters()).device
    out = []
    for chunk in frames.split(batch):
        uint8 = (chunk.clamp(0, 1) * 255).round().to(torch.uint8).to(device)
        out.append(net(uint8)[0].double().cpu())
    return torch.cat(out) if out else torch.zeros(0, 2048, dtype=torch.float64)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (N, D) and (M, D): |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½), with
    unbiased covariances (torch-fidelity's statistics). NaN when a set has fewer than 2 rows.

    tr((S1 S2)^½) is computed exactly without a D x D non-symmetric eigen-decomposition: with S1 = AᵀA and
    S2 = BᵀB (A, B the centred features over sqrt(n - 1)), the eigenvalues of S1 S2 are the squared singular
    values of A Bᵀ (n x m), or, when both sets are larger than D, of S1^½ S2^½ (D x D)."""
    if real.shape[0] < 2 or fake.shape[0] < 2:
        return float("nan")
    a, b = (f.double() for f in (real, fake))
    mu_a, mu_b = a.mean(0), b.mean(0)
    a = (a - mu_a) / math.sqrt(a.shape[0] - 1)  # (N, D), S1 = aᵀa
    b = (b - mu_b) / math.sqrt(b.shape[0] - 1)  # (M, D), S2 = bᵀb
    if min(a.shape[0], b.shape[0]) <= a.shape[1]:
        trace_sqrt = torch.linalg.svdvals(a @ b.T).sum()
    else:
        trace_sqrt = torch.linalg.svdvals(_psd_sqrt(a.T @ a) @ _psd_sqrt(b.T @ b)).sum()
    fid = (mu_a - mu_b).square().sum() + a.square().sum() + b.square().sum() - 2 * trace_sqrt
    return max(0.0, float(fid))


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh(s)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


# --- no-reference temporal ---------------------------------------------------------------------------------


def frame_consistency(net: lpips.LPIPS, frames: torch.Tensor) -> float:
    """1 - mean LPIPS between consecutive frames of one video (T, 3, H, W); NaN for a single frame."""
    if frames.shape[0] < 2:
        return float("nan")
    return 1.0 - float(lpips_distance(net, frames[1:], frames[:-1]).mean())


def motion_smoothness(frames: torch.Tensor) -> float:
    """1 - mean |f_t - (f_{t-1} + f_{t+1}) / 2| over the inner frames of one video (T, 3, H, W) in [0, 1];
    NaN for fewer than 3 frames."""
    if frames.shape[0] < 3:
        return float("nan")
    f = frames.double()
    return 1.0 - float((f[1:-1] - (f[:-2] + f[2:]) / 2).abs().mean())


def nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
