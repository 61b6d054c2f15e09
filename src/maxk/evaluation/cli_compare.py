"""`maxk compare RUN_A RUN_B [...]`: curves side by side, paired Wilcoxon tests, a markdown table.

RUN_* are run directories (holding samples.jsonl) or samples files. The first run is the reference;
every other run is compared with it over the prompts they share. Prints the markdown and, with --out,
writes compare.md, compare.json and compare.png there.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from maxk.evaluation.cli_metrics import add_common_metric_arguments, load_curves


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="two or more run directories or samples.jsonl files")
    parser.add_argument(
        "--label", nargs="+", default=None, help="one label per run (default: directory names)"
    )
    parser.add_argument("--out", default=None, help="directory for compare.md, compare.json, compare.png")
    add_common_metric_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from maxk.evaluation.compare import paired_comparison
    from maxk.evaluation.report import compare_markdown
    from maxk.evaluation.schema import SamplesFormatError

    if len(args.runs) < 2:
        print("maxk compare: error: give at least two runs to compare", file=sys.stderr)
        return 2
    try:
        runs = load_curves(args.runs, args.label, args)
    except (FileNotFoundError, SamplesFormatError, ValueError) as e:
        print(f"maxk compare: error: {e}", file=sys.stderr)
        return 2
    md = compare_markdown(runs)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(md, encoding="utf-8")
        payload = {
            "reference": runs[0].label,
            "runs": [r.to_dict() for r in runs],
            "paired": {r.label: [_clean(asdict(p)) for p in paired_comparison(runs[0], r)] for r in runs[1:]},
        }
        (out / "compare.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        if not args.no_plot:
            from maxk.evaluation.plots import plot_curves

            plot_curves(runs, out / "compare.png", title="Best-of-N: " + " vs ".join(r.label for r in runs))
        print(
            f"wrote {out / 'compare.md'}, {out / 'compare.json'}"
            + ("" if args.no_plot else f", {out / 'compare.png'}")
        )
    return 0


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}
