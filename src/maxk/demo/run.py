"""The demo pipeline for one seed, and the multi-seed driver (plumbing).

    base = SFT tiny LM (cached)  ->  for each method: RL from base  ->  N samples per test prompt, scored
                                                                     ->  curves, paired tests, plot, summary
Every method gets the same base weights, seed, data order, budget and hyperparameters; only the advantage
estimator differs. Outputs go to `out_dir/seed<s>/`: `compare.md` (full table with intervals and all
paired tests against the base), `curves.png`, `summary.txt`, `<method>/` run directories of the trainer.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from maxk.demo import report
from maxk.demo.base import BaseConfig, ensure_base
from maxk.demo.experiment import METHODS, MemoScorer, RLSettings, sample_and_score, train_method
from maxk.demo.tasks import make_tasks


@dataclass(frozen=True)
class DemoSettings:
    """Everything one demo run depends on (printed and written as settings.json)."""

    base: BaseConfig = field(default_factory=BaseConfig)
    rl: RLSettings = field(default_factory=RLSettings)
    methods: tuple[str, ...] = METHODS
    n_eval: int = 128  # samples per test prompt
    n_test: int | None = None  # test prompts: None = all of the split (97)
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)


def log_line(message: str) -> None:
    """The demo's log: one printed line, flushed (seeds in worker processes interleave their lines)."""
    print(message, flush=True)


def seed_job(seed: int, s: DemoSettings, out: Path, cache_dir: Path, threads: int) -> list:
    """`run_seed` in a worker process of `python -m maxk.demo --jobs J` (spawned: a fresh torch that
    gets its own thread setting)."""
    import torch

    torch.set_num_threads(threads)
    return run_seed(seed, s, out / f"seed{seed}", cache_dir, log=log_line)


def run_seed(seed: int, s: DemoSettings, out_dir: Path, cache_dir: Path, log=print) -> list:
    """The whole pipeline for one seed; returns the Curves of base + methods (base first)."""
    from maxk.evaluation import curves_from_groups, plot_curves
    from maxk.evaluation.report import compare_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    train_tasks = make_tasks("train", seed=seed, every_target=True)
    test_tasks = make_tasks("test", seed=seed, n=s.n_test)
    log(
        f"[seed {seed}] tasks: {len(train_tasks)} train (prompt, hidden program) pairs over "
        f"{len({t.prompt for t in train_tasks})} prompts; {len(test_tasks)} test prompts (disjoint)"
    )
    t0 = time.perf_counter()
    base_dir = ensure_base(cache_dir, BaseConfig(**{**asdict(s.base), "seed": seed}), log=log)
    log(f"[seed {seed}] base model ready ({time.perf_counter() - t0:.0f}s)")
    scorer = MemoScorer()
    models = {"base": base_dir}
    for method in s.methods:
        t = time.perf_counter()
        models[method] = train_method(base_dir, method, out_dir / method, train_tasks, scorer, s.rl, seed)
        log(f"[seed {seed}] RL {method}: {s.rl.steps} steps in {time.perf_counter() - t:.0f}s")
    runs = []
    for label, model_dir in models.items():
        t = time.perf_counter()
        groups = sample_and_score(
            model_dir, test_tasks, scorer, n=s.n_eval, seed=seed + 12345, max_new_tokens=s.rl.max_new_tokens
        )
        runs.append(curves_from_groups(groups, list(s.ks), label=label, n_boot=1000))
        log(
            f"[seed {seed}] eval {label}: {len(test_tasks)} x {s.n_eval} samples "
            f"in {time.perf_counter() - t:.0f}s "
            f"(max@1 {runs[-1].overall['max@k'].at(1)[0]:.3f}, max@{s.ks[-1]} "
            f"{runs[-1].overall['max@k'].at(s.ks[-1])[0]:.3f})"
        )
    log(
        f"[seed {seed}] sandbox: {len(scorer.cache)} distinct (task, program) runs for {scorer.requested} "
        f"scored completions, {scorer.seconds:.0f}s"
    )
    (out_dir / "compare.md").write_text(compare_markdown(runs))
    plot_curves(runs, out_dir / "curves.png", title=f"maxk demo, seed {seed}: Best-of-N on held-out prompts")
    (out_dir / "curves.json").write_text(json.dumps([r.to_dict() for r in runs]))
    return runs


def print_seed_report(runs: list, k: int, out_dir: Path, log=print) -> bool:
    """Tables, the paired tests, diversity and the summary for one seed; returns whether the goal was met."""
    from maxk.evaluation.report import diversity_table

    lo, hi = report.best_two(runs, k)
    met, goal_text = report.goal_met(runs, k)
    text = "\n".join(
        [
            "max@k (expected best reward of k samples; mean over test prompts)",
            report.curve_table(runs, "max@k"),
            "",
            "pass@k (all hidden tests passed)",
            report.curve_table(runs, "pass@k"),
            "",
            "diversity of the samples per test prompt",
            diversity_table(runs),
            "",
            "paired tests over test prompts:",
            "  best two: " + report.paired_line(lo, hi, k),
            "  "
            + report.paired_line(report.by_label(runs)["grpo"], report.by_label(runs)["maxk_offpolicy"], k),
            "",
            report.summary_words(runs, k),
            goal_text,
        ]
    )
    log(text)
    (out_dir / "summary.txt").write_text(text + "\n")
    return met
