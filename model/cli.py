"""`mfm model summary|convert|merge-lora`: parameter counts of a preset (built on the meta device), weight
conversion between a released MfM `transformer/` folder and our checkpoint format, and merging a LoRA adapter
into its base weights (written in either layout)."""

from __future__ import annotations

import argparse
from collections import Counter

from model.lora import load_lora, merge_lora
from model.mfm import MFM_CONFIGS, build_on_meta
from model.release import export_release, load_transformer


def summary(size: str) -> str:
    model = build_on_meta(size)
    parts: Counter[str] = Counter()
    for name, p in model.named_parameters():
        parts[name.split(".")[0]] += p.numel()
    total = sum(parts.values())
    cfg = model.config
    lines = [
        f"MfM {size}: {total / 1e9:.3f}B parameters ({total:,})",
        f"  layers {cfg.num_layers}, heads {cfg.num_heads} x {cfg.head_dim} (D {cfg.dim}), "
        f"FFN {cfg.mlp_ratio * cfg.dim}, cross-attention ({cfg.dim}, {cfg.text_dim})",
    ]
    lines += [f"  {name:<16} {n / 1e6:10.2f}M" for name, n in parts.items()]
    return "\n".join(lines)


def convert(src: str, out: str, to_release: bool) -> None:
    model = load_transformer(src)
    if to_release:
        export_release(model, out)
    else:
        model.save_pretrained(out)
    print(f"wrote {'release' if to_release else 'MfM'} checkpoint of {model.config} to {out}")


def merge(base: str, lora: str, out: str, to_release: bool, scale: float = 1.0) -> None:
    model = merge_lora(load_lora(load_transformer(base), lora, scale))
    if to_release:
        export_release(model, out)
    else:
        model.save_pretrained(out)
    print(f"wrote {base} + LoRA {lora} (scale {scale:g}) merged, in the {'release' if to_release else 'MfM'} "
          f"layout, to {out}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mfm model", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="parameter count of a preset, on the meta device (no memory)")
    s.add_argument("--size", choices=sorted(MFM_CONFIGS), default="2b")
    c = sub.add_parser("convert", help="released transformer/ folder <-> our checkpoint")
    c.add_argument("src", help="a released MfM folder (or its transformer/) or one of our checkpoints")
    c.add_argument("out", help="folder to write")
    c.add_argument("--to-release", action="store_true", help="write the release's layout instead of ours")
    m = sub.add_parser("merge-lora", help="merge a LoRA adapter into its base: plain weights, no peft needed to load")
    m.add_argument("--base", required=True, help="the base weights: a released MfM folder or one of our checkpoints")
    m.add_argument("--lora", required=True, help="the adapter folder (or a LoRA training step folder)")
    m.add_argument("--out", required=True, help="folder to write")
    m.add_argument("--scale", type=float, default=1.0, help="multiplies the adapter's alpha/rank scaling")
    m.add_argument("--to-release", action="store_true", help="write the release's layout instead of ours")
    args = parser.parse_args(argv)
    if args.cmd == "summary":
        print(summary(args.size))
    elif args.cmd == "convert":
        convert(args.src, args.out, args.to_release)
    else:
        merge(args.base, args.lora, args.out, args.to_release, args.scale)
    return 0
