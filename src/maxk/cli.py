"""The `maxk` command line: one subcommand per module, imported only when used.

    maxk train   --config FILE [overrides]     RL fine-tuning (maxk.train_cli)
    maxk eval    --model PATH --tasks FILE ... Best-of-N sampling and scoring (maxk.evaluation.cli)
    maxk metrics samples.jsonl ...             pass@k / max@k curves from a samples file
    maxk compare RUN_A RUN_B ...               curves side by side with paired tests

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("maxk.train_cli", "train a causal LM with a max@k (or peer) advantage estimator"),
    "eval": ("maxk.evaluation.cli_eval", "sample N completions per task, score them, write samples.jsonl"),
    "metrics": ("maxk.evaluation.cli_metrics", "pass@k / max@k curves with intervals from samples.jsonl"),
    "compare": ("maxk.evaluation.cli_compare", "compare runs: curves, paired Wilcoxon tests, markdown table"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maxk", description="max@k reinforcement learning for LMs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # import only the module that runs, so `maxk metrics` needs no transformers
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
