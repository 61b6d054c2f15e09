"""`maxk train`: RL fine-tuning from a YAML config with overrides, or resuming a run directory.

    maxk train --config examples/train_tiny.yaml [--set algorithm.k=2 optim.lr=1e-5] [--algorithm.k 2]
    maxk train --resume runs/tiny-maxk [--set run.steps=200]

Every config field is also a flag (`--section.field VALUE`), generated from the dataclasses in
maxk.config with their help texts; values are parsed as YAML. See docs/training.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maxk.config import field_help, load_config

_PREFIX = "field__"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config (sections as in maxk.config.Config)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint"
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override config fields, e.g. --set algorithm.k=2 optim.lr=1e-5",
    )
    fields = parser.add_argument_group("config fields (each overrides the file; values are YAML)")
    for name, help_text, default in field_help():
        fields.add_argument(
            f"--{name}",
            dest=_PREFIX + name.replace(".", "__"),
            metavar="VALUE",
            help=f"{help_text} (default: {default!r})",
        )


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The --set items, then the dotted flags, as 'section.field=value' strings (later ones win)."""
    flags = [
        f"{key[len(_PREFIX) :].replace('__', '.')}={value}"
        for key, value in vars(args).items()
        if key.startswith(_PREFIX) and value is not None
    ]
    return list(args.set) + flags


def run(args: argparse.Namespace) -> int:
    from maxk.trainer import train

    overrides = overrides_from_args(args)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / "config.yaml").exists():
                print(
                    f"maxk train: error: {run_dir}/config.yaml not found; is it a run directory?",
                    file=sys.stderr,
                )
                return 2
            config = load_config(run_dir / "config.yaml", [*overrides, f"run.output_dir={run_dir}"])
        else:
            if not args.config and not overrides:
                print(
                    "maxk train: error: give --config FILE (and overrides) or --resume RUN_DIR",
                    file=sys.stderr,
                )
                return 2
            config = load_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"maxk train: error: {err}", file=sys.stderr)
        return 2
    run_dir = train(config, resume=bool(args.resume))
    print(f"run directory: {run_dir}")
    return 0
