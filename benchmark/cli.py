"""`mfm benchmark build|run|eval`: the MfM-Benchmark (paper §4.1, §4.3, Table 6, Appendix A).

    mfm benchmark build --clips OUT/clips.lance --out bench.lance            # 16 tasks x 30 samples
    mfm benchmark build ... --task-plugin model.task_examples.deblur          # + a task of your own (each subcommand)
    mfm benchmark run   --checkpoint CKPT --bench bench.lance --out runs/x  # resumable
    mfm benchmark eval  --bench bench.lance --outputs runs/x --out reports/x
        --inception-weights INCEPTION --lpips-weights LPIPS
"""

from __future__ import annotations

import argparse
import importlib
import sys

from model.task_plugins import TaskRegistrationError, add_plugin_argument, load_plugins_from_argv

SUBCOMMANDS = {
    "build": ("benchmark.build", "select, standardize and condition the samples into a Lance table"),
    "run": ("benchmark.run", "generate every sample with a checkpoint (skips finished ones)"),
    "eval": ("benchmark.evaluate", "score outputs per task (Table 6 layout) and write the report"),
}


def main(argv: list[str]) -> int:
    try:
        load_plugins_from_argv(argv)  # tasks of your own join the build (and run/eval read their rows)
    except TaskRegistrationError as e:
        print(f"mfm benchmark: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="mfm benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    modules = {}
    for name, (module_name, help_) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        subparser = sub.add_parser(name, help=help_, description=module.__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(subparser)
        add_plugin_argument(subparser)
        modules[name] = module
    args = parser.parse_args(argv)
    return modules[args.cmd].main(args)
