"""AMT-S (Li et al. 2023, "AMT: All-Pairs Multi-Field Transforms for Efficient Frame Interpolation"), the frame
interpolator VBench's motion smoothness uses (`vbench/third_party/amt`, config AMT-S.yaml, checkpoint amt-s.pth).

Written from the architecture; submodule and parameter names follow the official checkpoint so that its
state dict loads strictly. Inference only: the forward returns the interpolated frame at time `t` (0.5 for
VBench), as the official `eval=True` path does. Pieces, coarse to fine:

    feat_encoder   RAFT's small encoder (instance norm, no parameters in the norms) -> 1/8 features
    correlation    all-pairs correlation of the two 1/8 feature maps, pooled into a pyramid, looked up in
                   both directions around where the current flows say the pixel comes from
    encoder        IFRNet-style pyramid of both frames at 1/2 .. 1/16
    decoder4..2    predict flows t->0, t->1 and a feature of the frame at t, one level finer each time
    update4..2     residual corrections of those flows and features from the correlation lookups
    decoder1       several flow fields per pixel (`num_flows`), blend masks and colour residuals at full size
    comb_block     merges the per-field warps into the frame
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


@dataclass
class AMTConfig:
    """AMT-S's sizes (networks/AMT-S.py and cfgs/AMT-S.yaml); `tiny()` keeps the structure, shrinks the widths."""

    corr_radius: int = 3
    corr_levels: int = 4
    num_flows: int = 3
    channels: list[int] = field(default_factory=lambda: [20, 32, 44, 56])  # encoder levels 1/2 .. 1/16
    skip_channels: int = 20  # side channels of the residual blocks
    feat_dim: int = 84  # correlation feature width
    feat_widths: list[int] = field(default_factory=lambda: [32, 64, 96])  # RAFT small encoder stages
    hidden_dim: int = 76  # update blocks
    flow_dim: int = 20
    corr_dim: int = 64
    fc_dim: int = 68

    @classmethod
    def tiny(cls) -> AMTConfig:
        """Same blocks, a few channels each and a 2-level correlation pyramid (frames from 32 pixels a side):
        for tests and the demo."""
        return cls(corr_levels=2, channels=[4, 6, 8, 10], skip_channels=2, feat_dim=8, feat_widths=[8, 8, 8],
                   hidden_dim=8, flow_dim=4, corr_dim=8, fc_dim=8)  # fmt: skip


# --- sampling helpers ---


def resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear rescale by `scale` (half-pixel centres, as AMT)."""
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def backward_warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """img (N, C, H, W) sampled at pixel + flow (N, 2, H, W; x then y, in pixels), border-clamped."""
    n, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, w).expand(n, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, h, 1).expand(n, h, w)
    gx = xs + flow[:, 0] / ((w - 1.0) / 2.0)
    gy = ys + flow[:, 1] / ((h - 1.0) / 2.0)
    grid = torch.stack([gx, gy], dim=-1).to(img.dtype)  # (N, H, W, 2)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def pixel_grid(n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(N, 2, H, W): each pixel's own (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys]).float()[None].expand(n, 2, h, w)


# --- correlation features (RAFT small encoder) and the bidirectional correlation pyramid ---


class Bottleneck(nn.Module):
    """RAFT's bottleneck residual block with parameter-free instance norms; strided ones project the skip."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        mid = c_out // 4
        self.conv1 = nn.Conv2d(c_in, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1)
        self.conv3 = nn.Conv2d(mid, c_out, 1)
        self.downsample = None  # the skip's 1x1 projection sits at index 0, its (parameter-free) norm at 1
        if stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride), nn.InstanceNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.instance_norm(self.conv1(x)))
        y = F.relu(F.instance_norm(self.conv2(y)))
        y = F.relu(F.instance_norm(self.conv3(y)))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class CorrelationEncoder(nn.Module):
    """(N, 3, H, W) -> (N, out_dim, H/8, W/8): a 7x7 stride-2 stem, three bottleneck stages, a 1x1 head."""

    def __init__(self, out_dim: int, widths: list[int]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3)
        prev = widths[0]
        for i, (width, stride) in enumerate(zip(widths, (1, 2, 2)), 1):
            self.add_module(f"layer{i}", nn.Sequential(Bottleneck(prev, width, stride), Bottleneck(width, width)))
            prev = width
        self.conv2 = nn.Conv2d(prev, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.instance_norm(self.conv1(x)))  # (N, w0, H/2, W/2)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, w2, H/8, W/8)
        return self.conv2(x)


class BidirectionalCorrelation:
    """All-pairs correlation of two (B, D, h, w) maps, average-pooled `levels` times, read in both directions.

    `lookup(coords0, coords1)` samples the 0->1 volume around coords0 (positions in frame 1) and the 1->0
    volume around coords1 (positions in frame 0), a (2r+1)^2 window on each level -> two (B, levels*(2r+1)^2,
    h, w) tensors. As in RAFT, the first window axis moves x and the second moves y.
    """

    def __init__(self, fmap0: torch.Tensor, fmap1: torch.Tensor, levels: int, radius: int):
        b, d, h, w = fmap0.shape
        if min(h, w) < 2**levels:  # a 1-pixel coarsest level divides by zero in the lookup (NaN frames)
            raise ValueError(f"AMT: a {h}x{w} correlation grid is too small for {levels} pyramid levels "
                             f"(frames need at least {8 * 2**levels} pixels a side after padding)")  # fmt: skip
        self.levels, self.radius = levels, radius
        corr = fmap0.flatten(2).transpose(1, 2) @ fmap1.flatten(2) / math.sqrt(d)  # (B, h*w [0], h*w [1])
        forward = corr.reshape(b * h * w, 1, h, w)  # per frame-0 pixel, over frame-1 positions
        backward = corr.transpose(1, 2).reshape(b * h * w, 1, h, w)  # per frame-1 pixel, over frame 0
        self.pyramids = ([forward], [backward])
        for _ in range(levels - 1):
            for pyramid in self.pyramids:
                pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))

    def _read(self, pyramid: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
        b, _, h, w = coords.shape
        r = self.radius
        steps = torch.arange(-r, r + 1, device=coords.device, dtype=coords.dtype)
        dx, dy = torch.meshgrid(steps, steps, indexing="ij")  # first axis moves x
        window = torch.stack([dx, dy], dim=-1)  # (2r+1, 2r+1, 2)
        centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for i, volume in enumerate(pyramid):
            pos = centres / 2**i + window  # (B*h*w, 2r+1, 2r+1, 2) in level-i pixels
            size = pos.new_tensor([volume.shape[-1] - 1, volume.shape[-2] - 1])
            grid = 2 * pos / size - 1
            out.append(F.grid_sample(volume, grid, align_corners=True).view(b, h, w, -1))  # zeros outside
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).float()  # (B, levels*(2r+1)^2, h, w)

    def lookup(self, coords0: torch.Tensor, coords1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._read(self.pyramids[0], coords0), self._read(self.pyramids[1], coords1)


# --- IFRNet-style pyramid encoder and decoders ---


def conv_prelu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (index 0) + PReLU with one slope per channel (index 1)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2), nn.PReLU(c_out))


class SideResBlock(nn.Module):
    """Residual block whose last `side` channels get an extra conv between the main convs (IFRNet)."""

    def __init__(self, channels: int, side: int):
        super().__init__()
        self.side = side
        self.conv1 = conv_prelu(channels, channels)
        self.conv2 = conv_prelu(side, side)
        self.conv3 = conv_prelu(channels, channels)
        self.conv4 = conv_prelu(side, side)
        self.conv5 = nn.Conv2d(channels, channels, 3, padding=1)
        self.prelu = nn.PReLU(channels)

    def _side(self, x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
        return torch.cat([x[:, : -self.side], conv(x[:, -self.side :])], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._side(self.conv1(x), self.conv2)
        out = self.conv5(self._side(self.conv3(out), self.conv4))
        return self.prelu(x + out)


class PyramidEncoder(nn.Module):
    """(N, 3, H, W) -> features at 1/2, 1/4, 1/8, 1/16 with `channels[i]` channels each."""

    def __init__(self, channels: list[int]):
        super().__init__()
        prev = 3
        for i, ch in enumerate(channels, 1):
            self.add_module(f"pyramid{i}", nn.Sequential(conv_prelu(prev, ch, stride=2), conv_prelu(ch, ch)))
            prev = ch
        self.depth = len(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i in range(1, self.depth + 1):
            x = getattr(self, f"pyramid{i}")(x)
            feats.append(x)
        return feats


def decoder_block(c_in: int, width: int, side: int, c_out: int) -> nn.Sequential:
    """conv + side residual block + 2x transposed conv: the body every AMT decoder shares."""
    return nn.Sequential(conv_prelu(c_in, width), SideResBlock(width, side), nn.ConvTranspose2d(width, c_out, 4, 2, 1))


class FirstDecoder(nn.Module):
    """Coarsest level: both 1/16 features and t -> flows t->0, t->1 and the frame-t feature at 1/8."""

    def __init__(self, c_in: int, c_out: int, side: int):
        super().__init__()
        self.convblock = decoder_block(2 * c_in + 1, 2 * c_in, side, c_out + 4)

    def forward(self, f0: torch.Tensor, f1: torch.Tensor, t: torch.Tensor):
        t_map = t.expand(f0.shape[0], 1, *f0.shape[2:])  # (B, 1, h, w)
        out = self.convblock(torch.cat([f0, f1, t_map], dim=1))  # (B, 4 + c_out, 2h, 2w)
        return out[:, 0:2], out[:, 2:4], out[:, 4:]


class MidDecoder(nn.Module):
    """Warps both frames' features to t with the coarser flows, predicts residual flows one level finer."""

    def __init__(self, c_in: int, c_out: int, side: int):
        super().__init__()
        self.convblock = decoder_block(3 * c_in + 4, 3 * c_in, side, c_out + 4)

    def forward(self, ft: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, flow0: torch.Tensor,
                flow1: torch.Tensor):  # fmt: skip
        x = torch.cat([ft, backward_warp(f0, flow0), backward_warp(f1, flow1), flow0, flow1], dim=1)
        out = self.convblock(x)  # (B, 4 + c_out, 2h, 2w)
        return out[:, 0:2] + 2.0 * resize(flow0, 2.0), out[:, 2:4] + 2.0 * resize(flow1, 2.0), out[:, 4:]


class MultiFlowDecoder(nn.Module):
    """Finest level: `num_flows` flow fields per direction, blend masks and colour residuals at full size."""

    def __init__(self, c_in: int, side: int, num_flows: int):
        super().__init__()
        self.num_flows = num_flows
        self.convblock = decoder_block(3 * c_in + 4, 3 * c_in, side, 8 * num_flows)

    def forward(self, ft: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, flow0: torch.Tensor,
                flow1: torch.Tensor):  # fmt: skip
        n = self.num_flows
        x = torch.cat([ft, backward_warp(f0, flow0), backward_warp(f1, flow1), flow0, flow1], dim=1)
        d0, d1, mask, res = self.convblock(x).split([2 * n, 2 * n, n, 3 * n], dim=1)  # at (2h, 2w)
        base0 = 2.0 * resize(flow0, 2.0).repeat(1, n, 1, 1)  # (B, 2n, 2h, 2w)
        base1 = 2.0 * resize(flow1, 2.0).repeat(1, n, 1, 1)
        return d0 + base0, d1 + base1, torch.sigmoid(mask), res


# --- correlation-guided update ---


class CorrUpdate(nn.Module):
    """Residual flow / feature update from correlation lookups (AMT's small update block), run at 1/8.

    Inputs at the decoder's level `scale` times finer than 1/8 are shrunk first; outputs are grown back.
    """

    def __init__(self, cfg: AMTConfig, feat_dim: int, scale: int = 1):
        super().__init__()
        self.scale = scale
        corr_planes = 2 * cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2  # both directions
        self.convc1 = nn.Conv2d(corr_planes, cfg.corr_dim, 1)
        self.convf1 = nn.Conv2d(4, 2 * cfg.flow_dim, 7, padding=3)
        self.convf2 = nn.Conv2d(2 * cfg.flow_dim, cfg.flow_dim, 3, padding=1)
        self.conv = nn.Conv2d(cfg.corr_dim + cfg.flow_dim, cfg.fc_dim, 3, padding=1)
        self.gru = self._head(cfg.fc_dim + 4 + feat_dim, cfg.hidden_dim, cfg.hidden_dim)  # named gru, no GRU
        self.feat_head = self._head(cfg.hidden_dim, cfg.hidden_dim, feat_dim)
        self.flow_head = self._head(cfg.hidden_dim, cfg.hidden_dim, 4)

    @staticmethod
    def _head(c_in: int, mid: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, mid, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(mid, c_out, 3, padding=1))

    def forward(self, feat: torch.Tensor, flow: torch.Tensor, corr: torch.Tensor):
        """feat (B, C, s*h, s*w), flow (B, 4, h, w), corr (B, planes, h, w) -> (delta feat, delta flow) at s*h."""
        if self.scale != 1:
            feat = resize(feat, 1 / self.scale)  # (B, C, h, w)
        motion = torch.cat([F.leaky_relu(self.convc1(corr), 0.1),
                            F.leaky_relu(self.convf2(F.leaky_relu(self.convf1(flow), 0.1)), 0.1)], dim=1)  # fmt: skip
        x = torch.cat([F.leaky_relu(self.conv(motion), 0.1), flow, feat], dim=1)
        hidden = self.gru(x)
        d_feat, d_flow = self.feat_head(hidden), self.flow_head(hidden)
        if self.scale != 1:
            d_feat, d_flow = resize(d_feat, self.scale), self.scale * resize(d_flow, self.scale)
        return d_feat, d_flow


# --- the model ---


class AMTS(nn.Module):
    """AMT-S frame interpolation: (B, 3, H, W) frames in [0, 1], H and W multiples of 16 -> the frame at t."""

    divisor = 16  # VBench pads to multiples of 16 (InputPadder)

    def __init__(self, cfg: AMTConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or AMTConfig()
        c = cfg.channels
        self.feat_encoder = CorrelationEncoder(cfg.feat_dim, cfg.feat_widths)
        self.encoder = PyramidEncoder(c)
        self.decoder4 = FirstDecoder(c[3], c[2], cfg.skip_channels)
        self.decoder3 = MidDecoder(c[2], c[1], cfg.skip_channels)
        self.decoder2 = MidDecoder(c[1], c[0], cfg.skip_channels)
        self.decoder1 = MultiFlowDecoder(c[0], cfg.skip_channels, cfg.num_flows)
        self.update4 = CorrUpdate(cfg, c[2])
        self.update3 = CorrUpdate(cfg, c[1], scale=2)
        self.update2 = CorrUpdate(cfg, c[0], scale=4)
        n = cfg.num_flows
        self.comb_block = nn.Sequential(nn.Conv2d(3 * n, 6 * n, 3, padding=1), nn.PReLU(6 * n),
                                        nn.Conv2d(6 * n, 3, 3, padding=1))  # fmt: skip

    def _refine(self, update: CorrUpdate, corr: BidirectionalCorrelation, grid: torch.Tensor, ft: torch.Tensor,
                flow0: torch.Tensor, flow1: torch.Tensor, t: torch.Tensor):  # fmt: skip
        """Look up correlations where the flows, stretched to 0->1 and 1->0 (linear motion), land; update."""
        s = update.scale
        f0, f1 = (flow0, flow1) if s == 1 else (resize(flow0, 1 / s) / s, resize(flow1, 1 / s) / s)  # at 1/8
        c0, c1 = corr.lookup(grid + f1 / t, grid + f0 / (1 - t))
        d_ft, d_flow = update(ft, torch.cat([f0, f1], dim=1), torch.cat([c0, c1], dim=1))
        return ft + d_ft, flow0 + d_flow[:, 0:2], flow1 + d_flow[:, 2:4]

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: float | torch.Tensor = 0.5,
                scale_factor: float = 1.0) -> torch.Tensor:  # fmt: skip
        """img0, img1 (B, 3, H, W) in [0, 1]; t in (0, 1); `scale_factor` < 1 runs the network on shrunk frames
        (VBench's low-VRAM mode) and merges at full size. -> (B, 3, H, W) in [0, 1]."""
        cfg = self.cfg
        t = torch.as_tensor(t, dtype=img0.dtype, device=img0.device).reshape(-1, 1, 1, 1)
        mean = torch.cat([img0, img1], dim=2).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        img0, img1 = img0 - mean, img1 - mean
        x0, x1 = (img0, img1) if scale_factor == 1.0 else (resize(img0, scale_factor), resize(img1, scale_factor))
        b, _, h, w = x0.shape
        grid = pixel_grid(b, h // 8, w // 8, x0.device)  # (B, 2, h/8, w/8)
        fmap0, fmap1 = self.feat_encoder(torch.cat([x0, x1])).chunk(2)  # (B, feat_dim, h/8, w/8) each
        corr = BidirectionalCorrelation(fmap0, fmap1, cfg.corr_levels, cfg.corr_radius)
        f0 = self.encoder(x0)  # 1/2, 1/4, 1/8, 1/16
        f1 = self.encoder(x1)

        flow0, flow1, ft = self.decoder4(f0[3], f1[3], t)  # at 1/8
        ft, flow0, flow1 = self._refine(self.update4, corr, grid, ft, flow0, flow1, t)
        flow0, flow1, ft = self.decoder3(ft, f0[2], f1[2], flow0, flow1)  # at 1/4
        ft, flow0, flow1 = self._refine(self.update3, corr, grid, ft, flow0, flow1, t)
        flow0, flow1, ft = self.decoder2(ft, f0[1], f1[1], flow0, flow1)  # at 1/2
        ft, flow0, flow1 = self._refine(self.update2, corr, grid, ft, flow0, flow1, t)
        flow0, flow1, mask, res = self.decoder1(ft, f0[0], f1[0], flow0, flow1)  # (B, 2n | n | 3n, h, w)

        if scale_factor != 1.0:
            up = 1.0 / scale_factor
            flow0, flow1 = resize(flow0, up) * up, resize(flow1, up) * up
            mask, res = resize(mask, up), resize(res, up)
        return merge_flow_fields(self.comb_block, img0, img1, flow0, flow1, mask, res, mean).clamp(0, 1)


def merge_flow_fields(comb: nn.Module, img0: torch.Tensor, img1: torch.Tensor, flow0: torch.Tensor,
                      flow1: torch.Tensor, mask: torch.Tensor, res: torch.Tensor,
                      mean: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """One candidate frame per flow field (masked blend of both warped frames + mean + residual), then their
    average plus `comb`'s correction. img (B, 3, H, W), flows (B, 2n, H, W), mask (B, n, ..), res (B, 3n, ..)."""
    b, _, h, w = img0.shape
    n = mask.shape[1]
    warped0 = backward_warp(img0.repeat_interleave(n, 0), flow0.reshape(b * n, 2, h, w))  # (B*n, 3, H, W)
    warped1 = backward_warp(img1.repeat_interleave(n, 0), flow1.reshape(b * n, 2, h, w))
    m = mask.reshape(b * n, 1, h, w)
    frames = m * warped0 + (1 - m) * warped1 + mean.repeat_interleave(n, 0) + res.reshape(b * n, 3, h, w)
    frames = frames.reshape(b, n, 3, h, w)
    return frames.mean(dim=1) + comb(frames.reshape(b, 3 * n, h, w))  # (B, 3, H, W)


# --- weights ---


def official_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The model's tensors in an AMT training checkpoint ({"state_dict": ...}, maybe with a DDP "module." prefix)."""
    state = checkpoint.get("state_dict", checkpoint)
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load(path: str | Path, cfg: AMTConfig | None = None, device: str | torch.device = "cpu") -> AMTS:
    """AMT-S from a local amt-s.pth (read with weights_only) or a safetensors file of the same keys; strict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = official_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    with torch.device("meta"):
        model = AMTS(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False).to(device)
