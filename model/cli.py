"""`mfm model summary|convert`: parameter counts of a preset (built on the meta device) and weight conversion
between a released MfM `transformer/` folder and our checkpoint format."""

from __future__ import annotations

import argparse
from collections import Counter

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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mfm model", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="parameter count of a preset, on the meta device (no memory)")
    s.add_argument("--size", choices=sorted(MFM_CONFIGS), default="2b")
    c = sub.add_parser("convert", help="released transformer/ folder <-> our checkpoint")
    c.add_argument("src", help="a released MfM folder (or its transformer/) or one of our checkpoints")
    c.add_argument("out", help="folder to write")
    c.add_argument("--to-release", action="store_true", help="write the release's layout instead of ours")
    args = parser.parse_args(argv)
    if args.cmd == "summary":
        print(summary(args.size))
    else:
        convert(args.src, args.out, args.to_release)
    return 0
