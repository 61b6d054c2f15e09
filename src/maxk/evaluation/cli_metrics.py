"""`maxk metrics SAMPLES [SAMPLES ...]`: pass@k / max@k curves with bootstrap intervals from samples files.

Each argument is a samples.jsonl (schema: maxk.evaluation.schema) or a run directory holding one.
Prints a markdown table per run and writes metrics.json, metrics.md and curves.png next to the samples
(or into --out/<label>/ when --out is given). Exit status 2 on unreadable or malformed input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_common_metric_arguments(
    parser: argparse.ArgumentParser, seed_help: str = "bootstrap seed (default 0)"
) -> None:
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="ks to report (default: 1, 2, 4, ... up to the largest N)",
    )
    parser.add_argument(
        "--n-boot", type=int, default=2000, help="bootstrap resamples over prompts (default 2000)"
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("samples", nargs="+", help="samples.jsonl files or run directories")
    parser.add_argument(
        "--out", default=None, help="write reports to OUT/<label>/ instead of next to the samples"
    )
    parser.add_argument("--label", nargs="+", default=None, help="one label per samples file")
    add_common_metric_arguments(parser)


def samples_dir(path: str) -> Path:
    p = Path(path)
    return p if p.is_dir() else p.parent


def load_curves(paths: list[str], labels: list[str] | None, args):
    """Curves for each path (labels default to run directory names, made unique)."""
    from maxk.evaluation.metrics import curves_from_samples, run_label

    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"got {len(labels)} labels for {len(paths)} samples files; give one per file")
    labels = labels or [run_label(p) for p in paths]
    seen: dict[str, int] = {}
    unique = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        unique.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return [
        curves_from_samples(
            p, args.k, n_boot=args.n_boot, confidence=args.confidence, seed=args.seed, label=lab
        )
        for p, lab in zip(paths, unique)
    ]


def run(args: argparse.Namespace) -> int:
    from maxk.evaluation.report import metrics_markdown, write_metrics_report
    from maxk.evaluation.schema import SamplesFormatError

    try:
        runs = load_curves(args.samples, args.label, args)
    except (FileNotFoundError, SamplesFormatError, ValueError) as e:
        print(f"maxk metrics: error: {e}", file=sys.stderr)
        return 2
    for path, c in zip(args.samples, runs):
        out = Path(args.out) / c.label if args.out else samples_dir(path)
        written = write_metrics_report(c, out, plot=not args.no_plot)
        print(metrics_markdown(c))
        print("wrote " + ", ".join(os.path.relpath(v) for v in written.values()) + "\n")
    return 0
