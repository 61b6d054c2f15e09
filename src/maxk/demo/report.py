"""What the demo prints and writes: curve tables, the paired test, diversity, a summary in words.

Numbers come from `maxk.evaluation` (unbiased max@k / pass@k per prompt, means over prompts, Wilcoxon
signed-rank tests over prompts); this module only lays them out. `runs` is a list of
`maxk.evaluation.Curves`, the base model first; all runs share the same test prompts.
"""

from __future__ import annotations

import numpy as np

from maxk.evaluation import Curves, paired_comparison

GOAL_POINTS = 0.03  # off-policy max@k must beat GRPO at max@128 by this much ...
GOAL_P = 0.05  # ... with a Wilcoxon p-value below this, and keep max@1 >= base


def curve_table(runs: list[Curves], metric: str) -> str:
    """Markdown: one row per run, one column per k, the mean over test prompts."""
    ks = runs[0].ks
    lines = [f"| {metric} | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    for r in runs:
        lines.append(f"| {r.label} | " + " | ".join(f"{r.overall[metric].at(k)[0]:.3f}" for k in ks) + " |")
    return "\n".join(lines)


def paired_at(a: Curves, b: Curves, k: int, metric: str = "max@k"):
    """`maxk.evaluation.PairedResult` of b minus a at (metric, k)."""
    return next(p for p in paired_comparison(a, b) if p.metric == metric and p.k == k)


def paired_line(a: Curves, b: Curves, k: int) -> str:
    p = paired_at(a, b, k)
    return (
        f"{b.label} - {a.label} at max@{k}: {p.mean_diff:+.3f} over {p.n_prompts} test prompts "
        f"(wins/ties/losses {p.wins}/{p.ties}/{p.losses}), Wilcoxon signed-rank p = {p.p_value:.2g}"
    )


def by_label(runs: list[Curves]) -> dict[str, Curves]:
    return {r.label: r for r in runs}


def best_two(runs: list[Curves], k: int) -> tuple[Curves, Curves]:
    """The two runs with the highest max@k (the better one second)."""
    order = sorted(runs, key=lambda r: r.overall["max@k"].at(k)[0])
    return order[-2], order[-1]


def goal_met(runs: list[Curves], k: int) -> tuple[bool, str]:
    """The issue's goal: maxk_offpolicy beats grpo at max@k_max by >= 3 points with p < 0.05, and its
    max@1 is not below the base model's. Returns (met, one sentence)."""
    d = by_label(runs)
    base, grpo, off = d["base"], d["grpo"], d["maxk_offpolicy"]
    p = paired_at(grpo, off, k)
    m1_off, m1_base = off.overall["max@k"].at(1)[0], base.overall["max@k"].at(1)[0]
    checks = [p.mean_diff >= GOAL_POINTS, p.p_value < GOAL_P, m1_off >= m1_base]
    text = (
        f"goal (maxk_offpolicy - grpo at max@{k} >= {GOAL_POINTS:.2f} with p < {GOAL_P}, and max@1 of "
        f"maxk_offpolicy >= base): {'MET' if all(checks) else 'NOT MET'} "
        f"[diff {p.mean_diff:+.3f}, p = {p.p_value:.2g}, max@1 {m1_off:.3f} vs base {m1_base:.3f}]"
    )
    return all(checks), text


def summary_words(runs: list[Curves], k: int) -> str:
    """A few sentences saying what happened, generated from the numbers."""
    d = by_label(runs)
    base, grpo = d["base"], d["grpo"]

    def m(r, kk):
        return r.overall["max@k"].at(kk)[0]

    def div(r):
        return r.diversity.summary()["distinct_fraction"]

    out = [
        f"GRPO moved max@1 from {m(base, 1):.3f} (base) to {m(grpo, 1):.3f} and max@{k} from "
        f"{m(base, k):.3f} to {m(grpo, k):.3f}; distinct programs per prompt went from {div(base):.2f} to "
        f"{div(grpo):.2f} of the N samples."
    ]
    for r in runs:
        if r.label.startswith("maxk"):
            out.append(
                f"{r.label}: max@1 {m(r, 1):.3f}, max@{k} {m(r, k):.3f} "
                f"({m(r, k) - m(grpo, k):+.3f} vs GRPO), distinct {div(r):.2f}."
            )
    lo, hi = best_two(runs, k)
    out.append(f"Best two at max@{k}: {hi.label} then {lo.label}.")
    return "\n".join(out)


def seeds_table(per_seed: list[list[Curves]], ks: tuple[int, ...]) -> str:
    """--full: mean and sample std over seeds of max@k per run at the given ks, and per-seed
    maxk_offpolicy - grpo at the largest k."""
    labels = [r.label for r in per_seed[0]]
    k_max = max(ks)
    head = "| run | " + " | ".join(f"max@{k} mean ± std" for k in ks) + " |"
    lines = [head, "|---|" + "---:|" * len(ks)]
    for j, label in enumerate(labels):
        cells = []
        for k in ks:
            v = np.array([runs[j].overall["max@k"].at(k)[0] for runs in per_seed])
            sd = v.std(ddof=1) if len(v) > 1 else 0.0
            cells.append(f"{v.mean():.3f} ± {sd:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    diffs = [paired_at(by_label(runs)["grpo"], by_label(runs)["maxk_offpolicy"], k_max) for runs in per_seed]
    lines.append("")
    lines.append(
        f"maxk_offpolicy - grpo at max@{k_max} per seed: "
        + ", ".join(f"{p.mean_diff:+.3f} (p={p.p_value:.2g})" for p in diffs)
    )
    return "\n".join(lines)
