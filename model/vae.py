"""CogVideoX video VAE (frozen): pixels in [-1, 1] <-> scaled 16-channel latents.

8x spatial and 4x temporal compression: a clip of T = 4k + 1 frames (or one image) becomes
t = (T - 1) // 4 + 1 latent frames. The first frame is coded on its own, so an image is one latent frame.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX
from torch import nn

from model.geometry import SPATIAL_FACTOR, TEMPORAL_FACTOR, VAE_SCALING_FACTOR, is_coded_length, pixel_frames

MFM_SCALING_FACTOR = VAE_SCALING_FACTOR  # the MfM release's latent scale (hard-coded in its pipeline)
DEFAULT_TILE_OVERLAP = (1 / 6, 1 / 5)  # diffusers' (height, width) overlap, tuned for CogVideoX's 480 x 720


class VideoVAE(nn.Module):
    """Frozen `AutoencoderKLCogVideoX` with the MfM scaling and shape checks.

    `encode` returns latents already multiplied by the config's `scaling_factor`; `decode` divides by it.
    Tiled decode (diffusers' `enable_tiling`) is switched with `set_tiling`.
    """

    def __init__(self, vae: AutoencoderKLCogVideoX, tiling: bool = False) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.set_tiling(tiling)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        subfolder: str | None = None,
        dtype: torch.dtype = torch.float32,
        tiling: bool = False,
        scaling_factor: float = MFM_SCALING_FACTOR,
    ) -> VideoVAE:
        """Load from a VAE folder, a pipeline folder holding `vae/`, or a hub id (with `subfolder="vae"`).

        The latent scale is `scaling_factor`, never the config's: the release hard-codes 0.958917567 rather
        than reading its VAE config (whose value may be CogVideoX's own), and our checkpoints record theirs
        (`MfMConfig.vae_scaling_factor`), so one scale is read one way.
        """
        if subfolder is None and (Path(path_or_id) / "vae" / "config.json").is_file():
            subfolder = "vae"  # a pipeline folder, as the release ships
        vae = AutoencoderKLCogVideoX.from_pretrained(
            str(path_or_id), subfolder=subfolder, torch_dtype=dtype, use_safetensors=True, low_cpu_mem_usage=False
        )
        vae.register_to_config(scaling_factor=scaling_factor)
        return cls(vae, tiling=tiling)

    @classmethod
    def tiny(cls, seed: int = 0) -> VideoVAE:
        """Random-init VAE with the real compression (8x space, 4x time, 16 channels), fast on a CPU."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKLCogVideoX(
                block_out_channels=(8, 8, 16, 16),  # 4 levels: 3 spatial halvings = 8x
                layers_per_block=1,
                norm_num_groups=4,
                latent_channels=16,
                temporal_compression_ratio=TEMPORAL_FACTOR,
                sample_height=480,  # CogVideoX's: default tiles of 240 x 360 pixels
                sample_width=720,
                scaling_factor=MFM_SCALING_FACTOR,
            )
        return cls(vae)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write `config.json` + safetensors weights that `from_pretrained(directory)` reads."""
        self.vae.save_pretrained(str(directory), safe_serialization=True)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def set_tiling(
        self,
        enabled: bool,
        tile_sample_size: tuple[int, int] | None = None,
        overlap: tuple[float, float] | None = None,
    ) -> None:
        """Switch diffusers' tiled encode/decode.

        `tile_sample_size` = (height, width) of a tile in pixels (default: half the config's sample size,
        240 x 360 for CogVideoX); `overlap` = (height, width) fraction of a tile shared with its neighbour
        (default 1/6, 1/5). A tile's overlap must be a whole number of latent pixels, else diffusers' tiled
        output would not have the input's size: such settings raise a ValueError.
        """
        if not enabled:
            self.vae.disable_tiling()
            return
        vae = self.vae
        height, width = tile_sample_size or (vae.config.sample_height // 2, vae.config.sample_width // 2)
        overlap_height, overlap_width = overlap or DEFAULT_TILE_OVERLAP
        vae.enable_tiling(height, width, overlap_height, overlap_width)
        for axis, tile, factor in (
            ("height", vae.tile_sample_min_height, vae.tile_overlap_factor_height),
            ("width", vae.tile_sample_min_width, vae.tile_overlap_factor_width),
        ):
            latent_tile = tile // SPATIAL_FACTOR
            # diffusers steps tiles by int(latent_tile * (1 - factor)) latents but keeps
            # tile - int(tile * factor) pixels of each: the two must agree.
            if tile % SPATIAL_FACTOR or int(latent_tile * (1 - factor)) * SPATIAL_FACTOR != tile - int(tile * factor):
                vae.disable_tiling()
                raise ValueError(
                    f"VAE tiling: tile {axis} {tile} px with overlap {factor:.4g} does not tile evenly; use a "
                    f"multiple of {SPATIAL_FACTOR} px whose overlap is a whole number of latent pixels "
                    f"(e.g. 32 px with overlap 0.25)"
                )

    @property
    def tiling(self) -> bool:
        return bool(self.vae.use_tiling)

    @torch.no_grad()
    def encode(
        self, video: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Video (B, 3, T, H, W) in [-1, 1] -> scaled latents (B, 16, t, H/8, W/8), float32 (`geometry.latent_shape`).

        The posterior's mode by default; `sample=True` draws from it (with `generator`).
        """
        _check_video(video)
        posterior = self.vae.encode(video.to(self.vae.device, self.vae.dtype)).latent_dist
        latents = posterior.sample(generator=generator) if sample else posterior.mode()
        return latents.float() * self.scaling_factor  # (B, 16, t, H/8, W/8)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Scaled latents (B, 16, t, h, w) -> video (B, 3, 4(t-1)+1, 8h, 8w) in [-1, 1] (`clamp` False: as
        decoded, a little beyond), float32."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (B, {self.latent_channels}, t, h, w); got shape {tuple(latents.shape)}")
        z = latents.to(self.vae.device, self.vae.dtype) / self.scaling_factor
        video = self.vae.decode(z).sample.float()  # (B, 3, T', H, W)
        # diffusers decodes latent frames in pairs after an odd-sized first group, so an even t yields 4t
        # frames, 4 of them for the first latent frame (which codes one frame). Drop 3, as the MfM release does.
        expected = pixel_frames(latents.shape[2])
        video = video[:, :, video.shape[2] - expected :]
        return video.clamp(-1.0, 1.0) if clamp else video


def _check_video(video: torch.Tensor) -> None:
    """Raise a ValueError naming the problem if `video` is not (B, 3, T, H, W) with a valid T, H, W."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video must be (B, 3, T, H, W) RGB in [-1, 1]; got shape {tuple(video.shape)}")
    _, _, frames, height, width = video.shape
    if not is_coded_length(frames):
        raise ValueError(f"video must have 1 or 4k+1 frames for the CogVideoX VAE; got T={frames}")
    if height % SPATIAL_FACTOR or width % SPATIAL_FACTOR:
        raise ValueError(f"video height and width must be multiples of {SPATIAL_FACTOR}; got {height}x{width}")
