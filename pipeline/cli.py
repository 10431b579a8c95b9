"""`mfm curate`: raw videos -> Lance `clips` + `sources` on Ray; `mfm curate report`: an HTML report.

    mfm curate --input <folder | manifest.{csv,jsonl,parquet} | s3://... | gs://...> --output <dir>
               [--config curate.yaml] [--set key=value ...] [--address ray://...|auto]
               [--describe] [--score-only]
    mfm curate report <dir> --out report.html
    mfm curate dedup <dir> [--threshold 0.95] [--config curate.yaml] [--storage KEY=VALUE ...]

Exit status: 0 with a summary; 2 on a config or input error (before any work); 1 when every input
failed or the run stopped early (a rerun finishes it).
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from config_files import ConfigError
from pipeline.config import CurateConfig, load_config, parse_overrides


def _curate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfm curate", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", help="folder, manifest (.csv/.jsonl/.parquet) or s3:// / gs:// prefix")
    p.add_argument("--output", help="output folder (local or object store) holding clips.lance, sources.lance")
    p.add_argument("--config", help="YAML config (see pipeline/config.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set motion.threshold=3")  # fmt: skip
    p.add_argument("--address", help="Ray cluster address (ray://host:10001, host:6379 or auto); default: local")
    p.add_argument("--describe", action="store_true", help="list the stages, resources and columns (with --output: "
                   "also the clips there that qualify per task and the quality-tag counts), then exit")  # fmt: skip
    p.add_argument("--score-only", action="store_true", help="annotate scores, reject nothing")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfm curate report", description="HTML report of a curated output folder")
    p.add_argument("output", help="the --output folder of a curation run")
    p.add_argument("--out", required=True, help="report .html path")
    p.add_argument("--clips", type=int, default=8, help="clips on the contact sheet")
    p.add_argument("--config", help="YAML config (only storage.options is used)")
    return p


def _dedup_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfm curate dedup",
                                description="mark near-duplicate clips in duplicate_of (never deletes)")  # fmt: skip
    p.add_argument("output", help="the --output folder of a curation run")
    p.add_argument("--threshold", type=float, help="cosine of clip_emb at or above which a clip is a duplicate "
                                                   "(default: dedup.threshold of the config, 0.95)")  # fmt: skip
    p.add_argument("--config", help="YAML config (storage and dedup sections are used)")
    p.add_argument("--storage", action="append", default=[], metavar="KEY=VALUE",
                   help="a Lance storage option, e.g. --storage endpoint=http://minio:9000")  # fmt: skip
    return p


def describe(cfg: CurateConfig, output: str | None = None) -> str:
    """Every stage in order with its kind, resources, batch size and the columns it reads and writes; with
    `output` holding a curated `clips` table, the clips that qualify per task and the quality-tag counts."""
    from pipeline.stages import build_stages
    from pipeline.stages.group import group_stages

    lines = ["mfm curate stages, in order, under the Ray operator that runs them (gpus 'auto': a share of the "
             "cluster's GPUs when it has any; actors of the decoding operator: as sized for a 2-CPU cluster):"]
    for group in group_stages(build_stages(cfg)):
        lines.append(f"== operator {group.name}: {group.describe()['kind']}, cpus={group.resources.cpus} each")
        for stage in group.stages:
            d = stage.describe()
            gpus = "auto" if d["gpus"] == 0 and stage.actors else d["gpus"]
            lines += [f"{d['stage']:<14} {d['kind']:<10} cpus={d['cpus']} gpus={gpus} batch={d['batch_size']}",
                      f"    reads:  {', '.join(d['reads'])}", f"    writes: {', '.join(d['writes'])}"]  # fmt: skip
    lines.append(f"motion: {cfg.motion.backend}; depth: {cfg.depth.model or 'off (set depth.model)'}; "
                 f"text: {cfg.text.model or 'off (set text.model)'}; "
                 f"aesthetic: {cfg.aesthetic.model or 'off (set aesthetic.model)'}; vae: {cfg.vae.model or 'off'}; "
                 f"caption: {cfg.caption.model or 'off (set caption.model)'}; "
                 f"score_only: {cfg.run.score_only}")  # fmt: skip
    if output:  # read only: --describe never creates a table
        import lance

        from pipeline import commits
        from pipeline.contract import tables
        from pipeline.report import task_lines

        uri = commits.table_uri(output, tables.CLIPS_TABLE)
        try:
            clips_ds = lance.dataset(uri, storage_options=cfg.storage.lance_options or None)
        except ValueError:
            lines.append(f"{uri}: no clips table yet")
        else:
            tables.check_schema(clips_ds.schema, tables.CLIPS_TABLE)
            lines += task_lines(clips_ds)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console(stderr=True)
    if argv[:1] == ["report"]:
        return _report(_report_parser().parse_args(argv[1:]), console)
    if argv[:1] == ["dedup"]:
        return _dedup(_dedup_parser().parse_args(argv[1:]), console)
    args = _curate_parser().parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        if args.score_only:
            overrides["run.score_only"] = True
        cfg = load_config(args.config, overrides)
    except ConfigError as exc:
        console.print(f"mfm curate: config error: {exc}", highlight=False, markup=False)
        return 2
    if args.describe:
        print(describe(cfg, args.output))
        return 0
    if not args.input or not args.output:
        console.print("mfm curate: --input and --output are required (or --describe)")
        return 2
    return _curate(args, cfg, console)


def _curate(args: argparse.Namespace, cfg: CurateConfig, console: Console) -> int:
    from pipeline.engine import curate
    from pipeline.inputs import InputError

    try:
        summary = curate(args.input, args.output, cfg, address=args.address)
    except InputError as exc:
        console.print(f"mfm curate: input error: {exc}", highlight=False, markup=False)
        return 2
    for line in summary.lines():
        console.print(line, highlight=False, markup=False)
    if summary.all_failed:
        console.print("mfm curate: every input failed", highlight=False)
        return 1
    return 1 if summary.error else 0


def _report(args: argparse.Namespace, console: Console) -> int:
    from pipeline.report import write_report

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        console.print(f"mfm curate report: config error: {exc}", highlight=False, markup=False)
        return 2
    path = write_report(args.output, args.out, n_clips=args.clips, storage_options=cfg.storage.lance_options)
    console.print(f"report: {path}", highlight=False)
    return 0


def _dedup(args: argparse.Namespace, console: Console) -> int:
    from pipeline.dedup import dedup

    try:
        overrides = {} if args.threshold is None else {"dedup.threshold": args.threshold}
        cfg = load_config(args.config, overrides)
        extra = {}
        for pair in args.storage:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ConfigError(f"--storage {pair!r}: expected KEY=VALUE")
            extra[key] = value
    except ConfigError as exc:
        console.print(f"mfm curate dedup: config error: {exc}", highlight=False, markup=False)
        return 2
    d = cfg.dedup
    summary = dedup(args.output, d.threshold, d.k, d.index_min_rows, {**cfg.storage.lance_options, **extra})
    for line in summary.lines():
        console.print(line, highlight=False, markup=False)
    return 0
