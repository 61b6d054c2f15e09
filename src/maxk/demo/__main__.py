"""`python -m maxk.demo [--full]`: GRPO against max@k training on a CPU, end to end (what `make demo` runs).

Default: one seed, about ten minutes on two CPU cores (the base model is cached, so a second run is
faster). `--full`: three seeds (or `--seeds ...`) and the spread over seeds. See docs/demo.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m maxk.demo", description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="three seeds and their spread (default: one seed)")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds to run (default 0, or 0 1 2 with --full)"
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--cache-dir", default=None, help="where the base model is cached (default OUT/cache)")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: the README's numbers were printed with 1, and float sums differ "
        "with the thread count, so sampled runs diverge; the sandbox pool uses the other cores)",
    )
    p.add_argument(
        "--jobs", type=int, default=1,
        help="seeds run in parallel processes (each with --threads threads); same numbers as one at a time",
    )
    p.add_argument("--steps", type=int, default=None, help="RL steps per method (default: the demo's)")
    p.add_argument("--test-prompts", type=int, default=None, help="test prompts (default: the demo's)")
    p.add_argument(
        "--methods", nargs="+", default=None, help="subset of methods (grpo and maxk_offpolicy are needed)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import dataclasses

    import torch

    from maxk.demo.report import seeds_table
    from maxk.demo.run import DemoSettings, log_line, print_seed_report, run_seed

    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    s = DemoSettings()
    if args.steps is not None:
        s = dataclasses.replace(s, rl=dataclasses.replace(s.rl, steps=args.steps))
    if args.test_prompts is not None:
        s = dataclasses.replace(s, n_test=args.test_prompts)
    if args.methods:
        from maxk.demo.experiment import METHODS

        unknown = sorted(set(args.methods) - set(METHODS))
        if unknown or not {"grpo", "maxk_offpolicy"} <= set(args.methods):
            print(f"--methods: choose from {list(METHODS)}, including grpo and maxk_offpolicy "
                  f"(the report compares them); got {args.methods}", file=sys.stderr)
            return 2
        s = dataclasses.replace(s, methods=tuple(args.methods))
    seeds = args.seeds or ([0, 1, 2] if args.full else [0])
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    print(f"maxk demo: seeds {seeds}, torch threads {torch.get_num_threads()}, settings {s}", flush=True)
    k = max(s.ks)
    per_seed, met = [], []
    if args.jobs < 1:
        print(f"--jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    results = _run_parallel(seeds, s, out, cache, args.jobs, args.threads) if args.jobs > 1 else {}
    for seed in seeds:
        runs = results.get(seed) or run_seed(seed, s, out / f"seed{seed}", cache, log=log_line)
        print(f"\n===== seed {seed} =====", flush=True)
        met.append(print_seed_report(runs, k, out / f"seed{seed}", log=log_line))
        per_seed.append(runs)
    if len(seeds) > 1:
        print(f"\n===== {len(seeds)} seeds: mean ± std over seeds =====")
        text = seeds_table(per_seed, (1, 8, k))
        print(text + f"\ngoal met in {sum(met)} of {len(seeds)} seeds")
        (out / "seeds.md").write_text(text + "\n")
    print(f"\noutputs: {out}/seed*/ (summary.txt, compare.md, curves.png)")
    print(f"total wall time: {time.perf_counter() - t0:.0f}s ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


def _run_parallel(seeds, settings, out, cache, jobs, threads) -> dict:
    """{seed: runs} with up to `jobs` seeds at a time, each in its own process (their log lines
    interleave; the reports are printed afterwards, in seed order)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from maxk.demo.run import seed_job

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(seeds)), mp_context=ctx) as pool:
        futures = {seed: pool.submit(seed_job, seed, settings, out, cache, threads) for seed in seeds}
        return {seed: f.result() for seed, f in futures.items()}


if __name__ == "__main__":
    sys.exit(main())
