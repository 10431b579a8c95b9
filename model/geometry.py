"""Pixels, latents and tokens: the one place their sizes are related.

CogVideoX's VAE codes the first frame alone and then 4 frames per latent frame (T = 4k+1 frames -> k+1), and
8x8 pixels per latent pixel; MfM's patch embedding makes one token of 2x2 latent pixels, with no temporal
patch. So a sample's H and W are multiples of 16, and a (T, H, W) clip is (T-1)/4+1 x H/16 x W/16 tokens.
Curation (buckets, proxies), training (token budgets, packing), generation (noise shape) and the VAE read
these numbers here.
"""

from __future__ import annotations

TEMPORAL_FACTOR = 4  # VAE: frames per latent frame after the first
VAE_SCALING_FACTOR = 0.958917567  # MfM's VAE latent scale (hard-coded in the release's pipeline)
SPATIAL_FACTOR = 8  # VAE: pixels per latent pixel, each side
PATCH_SIZE = 2  # transformer: latent pixels per token, each side
SIZE_MULTIPLE = SPATIAL_FACTOR * PATCH_SIZE  # 16: sample H and W are multiples of this
TOKEN_STRIDE = (TEMPORAL_FACTOR, SIZE_MULTIPLE, SIZE_MULTIPLE)  # pixels per token in (T, H, W), after frame 0


def latent_frames(frames: int) -> int:
    """Latent frames of a clip of `frames` pixel frames (1 or 4k+1)."""
    return (frames - 1) // TEMPORAL_FACTOR + 1


def pixel_frames(latent: int) -> int:
    """Pixel frames decoded from `latent` latent frames: 4(t-1)+1."""
    return TEMPORAL_FACTOR * (latent - 1) + 1


def coded_length(frames: int) -> int:
    """The longest 4k+1 frame count not above `frames` (the frames of a clip the VAE can code)."""
    return pixel_frames(latent_frames(frames))


def is_coded_length(frames: int) -> bool:
    """True for 1 and 4k+1 frames."""
    return frames >= 1 and (frames - 1) % TEMPORAL_FACTOR == 0


def size_problem(height: int, width: int) -> str | None:
    """Why (height, width) is not a sample size, or None when it is."""
    if height < SIZE_MULTIPLE or width < SIZE_MULTIPLE or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        return f"H and W must be positive multiples of {SIZE_MULTIPLE}; got {height}x{width}"
    return None


def floor_size(height: int, width: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(height, width) floored to multiples of `multiple` (at least one multiple each)."""
    return max(multiple, height // multiple * multiple), max(multiple, width // multiple * multiple)


def latent_shape(frames: int, height: int, width: int, channels: int) -> tuple[int, int, int, int]:
    """(C, t, h, w) latent of a (frames, height, width) clip."""
    return channels, latent_frames(frames), height // SPATIAL_FACTOR, width // SPATIAL_FACTOR


def frame_tokens(height: int, width: int) -> int:
    """Tokens of one latent frame at (height, width) pixels."""
    return (height // SIZE_MULTIPLE) * (width // SIZE_MULTIPLE)


def sample_tokens(frames: int, height: int, width: int) -> int:
    """Latent tokens of one (frames, height, width) sample."""
    return latent_frames(frames) * frame_tokens(height, width)


def frames_within(tokens: int, height: int, width: int) -> int:
    """The most pixel frames (4k+1) whose sample at (height, width) fits in `tokens` (0: not even one frame)."""
    latent = tokens // frame_tokens(height, width)
    return pixel_frames(latent) if latent else 0
