"""Write tiny random-init frozen models to disk, in the layout the real weights use.

The demo, the tests and the README's main job load these through the wrappers' real `from_pretrained`
paths, so nothing downloads and the loading code is the code that loads the released weights.
"""

from __future__ import annotations

from pathlib import Path

from model.depth import DepthEstimator
from model.text_encoder import TextEncoder
from model.vae import VideoVAE


def write_tiny_pretrained(root: Path, seed: int = 0) -> dict[str, Path]:
    """Save tiny VAE, T5 and Depth-Anything under `root` (deterministic for a seed).

    Layout (diffusers-pipeline-like): root/vae, root/text_encoder, root/tokenizer, root/depth. Each wrapper's
    `from_pretrained` accepts `root` itself or its own folder. Returns those folders by name, plus "root".
    """
    root = Path(root)
    VideoVAE.tiny(seed).save_pretrained(root / "vae")
    TextEncoder.tiny(seed).save_pretrained(root)  # writes root/text_encoder and root/tokenizer
    DepthEstimator.tiny(seed).save_pretrained(root / "depth")
    names = ("vae", "text_encoder", "tokenizer", "depth")
    return {"root": root, **{name: root / name for name in names}}
