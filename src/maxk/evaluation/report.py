"""Markdown a person can paste: one run's curves (metrics.md) and a comparison of runs (compare.md)."""

from __future__ import annotations

import math

from maxk.evaluation.compare import PairedResult, paired_comparison
from maxk.evaluation.metrics import METRICS, Curves


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_diff(d: float) -> str:
    """Signed difference, '+0.012' / '-0.034'; float noise that rounds to 0 prints as '0.000'."""
    if math.isnan(d):
        return "n/a"
    if round(d, 3) == 0:
        return "0.000"
    return f"{d:+.3f}"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _n_text(c: Curves) -> str:
    lo, hi = int(c.n_samples.min()), int(c.n_samples.max())
    return f"N = {lo}" if lo == hi else f"N = {lo}..{hi} (mixed)"


def diversity_text(c: Curves) -> str:
    s = c.diversity.summary()
    return (
        f"distinct programs {fmt(s['distinct_fraction'], 2)} of N, "
        f"mean token entropy {fmt(s['mean_entropy'], 2)} nats, "
        f"distinct reward values {fmt(s['distinct_rewards'], 1)} per prompt"
    )


def metrics_markdown(c: Curves, *, per_prompt: bool = False) -> str:
    """A table of max@k and pass@k with intervals for one run, then diversity, notes and (optionally)
    one row per prompt: its N, max@k at every k (n/a where k > N), pass@k at the largest k and diversity."""
    pct = f"{round(c.confidence * 100)}%"
    lines = [
        f"## Best-of-N: {c.label or 'run'}",
        "",
        f"{len(c.task_ids)} prompts, {_n_text(c)} samples per prompt; {pct} percentile-bootstrap intervals "
        f"over prompts ({c.n_boot} resamples).",
        "",
        f"| k | max@k | {pct} CI | pass@k | {pct} CI | prompts |",
        "|---:|---:|:---:|---:|:---:|---:|",
    ]
    mk, pk = c.overall["max@k"], c.overall["pass@k"]
    for j, k in enumerate(c.ks):
        excl = f" ({mk.n_excluded[j]} with N<k excluded)" if mk.n_excluded[j] else ""
        lines.append(
            f"| {k} | {fmt(mk.mean[j])} | [{fmt(mk.lo[j])}, {fmt(mk.hi[j])}] | {fmt(pk.mean[j])} | "
            f"[{fmt(pk.lo[j])}, {fmt(pk.hi[j])}] | {mk.n_prompts[j]}{excl} |"
        )
    lines += ["", f"Diversity: {diversity_text(c)}."]
    if c.notes:
        lines += ["", *[f"- note: {n}" for n in c.notes]]
    if per_prompt:
        lines += ["", *per_prompt_markdown(c)]
    return "\n".join(lines) + "\n"


def per_prompt_markdown(c: Curves) -> list[str]:
    kmax = c.ks[-1]
    head = ["task", "N", *[f"max@{k}" for k in c.ks], f"pass@{kmax}", "distinct", "rewards"]
    lines = ["### Per prompt", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    d = c.diversity
    for p, tid in enumerate(c.task_ids):
        cells = [tid, str(int(c.n_samples[p])), *[fmt(float(v)) for v in c.per_prompt["max@k"][p]]]
        cells += [fmt(float(c.per_prompt["pass@k"][p, -1])), fmt(float(d.distinct_fraction[p]), 2)]
        cells.append(str(int(d.distinct_rewards[p])))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def compare_markdown(runs: list[Curves]) -> str:
    """Runs side by side per metric; each later run against the first with a paired Wilcoxon test."""
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(runs)}")
    ref = runs[0]
    paired = [{(p.metric, p.k): p for p in paired_comparison(ref, r)} for r in runs[1:]]
    ks = [k for k in ref.ks if all(k in r.ks for r in runs[1:])]
    pct = f"{round(ref.confidence * 100)}%"
    out = [
        f"## Comparison (reference: {ref.label})",
        "",
        "Means over each run's prompts with N >= k, "
        f"{pct} bootstrap intervals; Δ = run - {ref.label} over the prompts both runs share, "
        "p = two-sided Wilcoxon signed-rank test over those prompts, W/T/L = prompts won/tied/lost.",
    ]
    for m in METRICS:
        head = ["k", *[f"{r.label}" for r in runs]]
        for r in runs[1:]:
            head += [f"Δ {r.label}", "p", "W/T/L"]
        out += ["", f"### {m}", "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for k in ks:
            cells = [str(k)]
            for r in runs:
                mean, lo, hi = r.overall[m].at(k)
                cells.append(f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]")
            for table in paired:
                p: PairedResult = table[(m, k)]
                cells += [fmt_diff(p.mean_diff), fmt_p(p.p_value), f"{p.wins}/{p.ties}/{p.losses}"]
            out.append("| " + " | ".join(cells) + " |")
    out += ["", "### Diversity", "", diversity_table(runs)]
    notes = [f"{r.label}: {n}" for r in runs for n in r.notes]
    dropped = sorted({k for r in runs for k in r.ks} - set(ks))
    if dropped:
        notes.append(f"k = {', '.join(map(str, dropped))} left out: not computed for every run (pass --k)")
    for r in runs[1:]:
        shared = len(set(ref.task_ids) & set(r.task_ids))
        if shared < max(len(ref.task_ids), len(r.task_ids)):
            notes.append(f"{r.label} shares {shared} prompts with {ref.label}; paired tests use only those")
    if notes:
        out += ["", *[f"- note: {n}" for n in notes]]
    return "\n".join(out) + "\n"


def diversity_table(runs: list[Curves]) -> str:
    """Markdown, one row per run: prompts, N, distinct programs (share of N), mean token entropy (nats)
    and distinct reward values, each a mean over the run's prompts."""
    out = [
        "| run | prompts | N | distinct programs | token entropy | distinct rewards |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        s = r.diversity.summary()
        out.append(
            f"| {r.label} | {len(r.task_ids)} | {_n_text(r)[4:]} | {fmt(s['distinct_fraction'], 2)} | "
            f"{fmt(s['mean_entropy'], 2)} | {fmt(s['distinct_rewards'], 1)} |"
        )
    return "\n".join(out)


def write_metrics_report(c: Curves, out_dir, *, plot: bool = True) -> dict[str, str]:
    """Write metrics.json, metrics.md and (optionally) curves.png into out_dir; returns {kind: path}."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "markdown": out / "metrics.md"}
    paths["json"].write_text(json.dumps(c.to_dict(), indent=1) + "\n", encoding="utf-8")
    paths["markdown"].write_text(metrics_markdown(c, per_prompt=True), encoding="utf-8")
    if plot:
        from maxk.evaluation.plots import plot_curves

        paths["plot"] = plot_curves([c], out / "curves.png", title=f"Best-of-N: {c.label or 'run'}")
    return {k: str(v) for k, v in paths.items()}
