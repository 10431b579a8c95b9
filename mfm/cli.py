"""`mfm <command> ...`: a table maps each subcommand to the module whose `main(argv)` runs it.

Modules are imported only when their command runs, so `mfm --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module with `main(argv: list[str]) -> int | None`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mfm.demo", "run the end-to-end demo on embedded defaults"),
    "model": ("model.cli", "model tools: summary (parameter counts), convert (release <-> ours), merge-lora"),
    "tasks": ("model.tasks_cli", "the 16 tasks: list, show a task's condition as a picture"),
    "curate": ("pipeline.cli", "curate raw videos into Lance tables on Ray (and `curate report`)"),
    "train": ("trainer.train", "train MfM with DeepSpeed ZeRO-3 + Ulysses on a Lance `clips` table"),
    "generate": ("model.generate_cli", "generate with a checkpoint for any of the 16 tasks"),
    "release": ("model.release_cli", "the release's own CLI: `mfm release infer ARGS` takes infer_mfm_pipeline.py's"),
    "benchmark": ("benchmark.cli", "MfM-Benchmark: build | run | eval"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mfm <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`mfm <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mfm: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run(name, rest)


def run(name: str, argv: list[str]) -> int:
    """Run command `name` (a key of COMMANDS) with `argv`; its exit status."""
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
