"""Best-of-N curves from samples: max@k and pass@k per prompt and overall, with bootstrap intervals.

Per prompt p with N_p samples (rewards r, binary successes s):
    max@k_p  = maxk.estimators.max_at_k(r, k)          (unbiased, Section 1 of MATH.md)
    pass@k_p = maxk.estimators.pass_at_k(N_p, sum(s), k)
both defined only for k <= N_p. A prompt with N_p < k is *excluded* from the overall value at that k
and counted in `n_excluded` (never silently dropped, never extrapolated).
Overall: the mean over the included prompts; the interval is a percentile bootstrap over prompts
(resample the included prompts with replacement `n_boot` times; the (1 -/+ confidence)/2 quantiles of the
resampled means). A k with no included prompt has mean = lo = hi = nan.

Shapes: P prompts, K requested ks; per-prompt tables are (P, K) with nan where k > N_p.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from maxk.estimators import max_at_k, pass_at_k
from maxk.evaluation.diversity import Diversity, diversity
from maxk.evaluation.schema import PromptSamples, read_samples

METRICS = ("max@k", "pass@k")


def default_ks(max_n: int) -> list[int]:
    """Powers of two up to max_n: 1, 2, 4, ... (the paper's grid)."""
    if max_n < 1:
        raise ValueError(f"need at least one sample per prompt, got max N = {max_n}")
    ks, k = [], 1
    while k <= max_n:
        ks.append(k)
        k *= 2
    return ks


def check_ks(ks) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers >= 1, got {ks}")
    return sorted(set(ks))


@dataclass
class MetricCurve:
    """One metric overall; every list has one entry per k."""

    ks: list[int]
    mean: list[float]
    lo: list[float]
    hi: list[float]
    n_prompts: list[int]
    n_excluded: list[int]

    def at(self, k: int) -> tuple[float, float, float]:
        j = self.ks.index(k)
        return self.mean[j], self.lo[j], self.hi[j]


@dataclass
class Curves:
    """Best-of-N curves of one run. per_prompt[metric] is (P, K), nan where k > N_p."""

    ks: list[int]
    task_ids: list[str]
    n_samples: np.ndarray
    per_prompt: dict[str, np.ndarray]
    overall: dict[str, MetricCurve]
    diversity: Diversity
    confidence: float
    n_boot: int
    label: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form (nan -> None), as written to metrics.json."""

        def clean(x):
            return [None if (isinstance(v, float) and np.isnan(v)) else v for v in x]

        div = self.diversity
        return {
            "label": self.label,
            "ks": self.ks,
            "confidence": self.confidence,
            "n_boot": self.n_boot,
            "n_prompts": len(self.task_ids),
            "n_samples": {"min": int(self.n_samples.min()), "max": int(self.n_samples.max())},
            "overall": {
                m: {
                    "mean": clean(c.mean),
                    "lo": clean(c.lo),
                    "hi": clean(c.hi),
                    "n_prompts": c.n_prompts,
                    "n_excluded": c.n_excluded,
                }
                for m, c in self.overall.items()
            },
            "diversity": div.summary(),
            "per_prompt": [
                {
                    "task_id": tid,
                    "n": int(self.n_samples[p]),
                    **{m: clean([float(v) for v in self.per_prompt[m][p]]) for m in METRICS},
                    "distinct_fraction": clean([float(div.distinct_fraction[p])])[0],
                    "mean_entropy": clean([float(div.mean_entropy[p])])[0],
                    "distinct_rewards": int(div.distinct_rewards[p]),
                }
                for p, tid in enumerate(self.task_ids)
            ],
            "notes": self.notes,
        }


def per_prompt_table(groups: list[PromptSamples], ks: list[int]) -> dict[str, np.ndarray]:
    """max@k and pass@k of every prompt at every k: {metric: (P, K)}, nan where k > N_p.

    Prompts with equal N are stacked and estimated in one call of the core estimators.
    """
    P, K = len(groups), len(ks)
    out = {m: np.full((P, K), np.nan) for m in METRICS}
    by_n: dict[int, list[int]] = {}
    for p, g in enumerate(groups):
        by_n.setdefault(g.n, []).append(p)
    for n, idx in by_n.items():
        rewards = np.stack([groups[p].rewards for p in idx])  # (P_n, n)
        correct = np.array([int(groups[p].successes.sum()) for p in idx])  # (P_n,)
        for j, k in enumerate(ks):
            if k > n:
                continue
            out["max@k"][idx, j] = np.asarray(max_at_k(rewards, k), dtype=np.float64)
            out["pass@k"][idx, j] = np.asarray(pass_at_k(np.full(len(idx), n), correct, k), dtype=np.float64)
    return out


def bootstrap_interval(
    values: np.ndarray, *, n_boot: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (shape (P,)), resampling prompts."""
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1 or n_boot <= 0:
        v = float(values.mean())
        return v, v
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def overall_curve(
    table: np.ndarray, ks: list[int], *, n_boot: int, confidence: float, seed: int
) -> MetricCurve:
    """Mean over prompts at each k (prompts with nan, i.e. N_p < k, excluded) and its bootstrap interval."""
    c = MetricCurve(ks=list(ks), mean=[], lo=[], hi=[], n_prompts=[], n_excluded=[])
    for j in range(len(ks)):
        col = table[:, j]
        vals = col[~np.isnan(col)]
        lo, hi = bootstrap_interval(vals, n_boot=n_boot, confidence=confidence, seed=seed + j)
        c.mean.append(float(vals.mean()) if vals.size else float("nan"))
        c.lo.append(lo)
        c.hi.append(hi)
        c.n_prompts.append(int(vals.size))
        c.n_excluded.append(int(col.size - vals.size))
    return c


def curves_from_groups(
    groups: list[PromptSamples],
    ks=None,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    label: str = "",
) -> Curves:
    """Curves of one run from its per-prompt samples. ks default: powers of two up to the largest N."""
    if not groups:
        raise ValueError("no prompts: the samples are empty")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n_samples = np.array([g.n for g in groups], dtype=np.int64)
    ks = default_ks(int(n_samples.max())) if ks is None else check_ks(ks)
    table = per_prompt_table(groups, ks)
    overall = {
        m: overall_curve(table[m], ks, n_boot=n_boot, confidence=confidence, seed=seed) for m in METRICS
    }
    notes = []
    exc = overall["max@k"].n_excluded
    for k, e in zip(ks, exc):
        if e:
            notes.append(f"k={k}: {e} of {len(groups)} prompts have fewer than {k} samples and are excluded")
    if len(set(n_samples.tolist())) > 1:
        notes.insert(0, f"mixed N per prompt: {int(n_samples.min())}..{int(n_samples.max())} samples")
    return Curves(
        ks=ks,
        task_ids=[g.task_id for g in groups],
        n_samples=n_samples,
        per_prompt=table,
        overall=overall,
        diversity=diversity(groups),
        confidence=confidence,
        n_boot=n_boot,
        label=label,
        notes=notes,
    )


def curves_from_samples(
    path_or_groups: str | os.PathLike | list[PromptSamples],
    ks=None,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    label: str | None = None,
) -> Curves:
    """Curves from a samples.jsonl file, a run directory holding one, or already grouped samples.

    The label defaults to the run directory's name (or the file's stem).
    """
    if isinstance(path_or_groups, (str, os.PathLike)):
        groups = read_samples(path_or_groups)
        if label is None:
            label = run_label(path_or_groups)
    else:
        groups = path_or_groups
    return curves_from_groups(groups, ks, n_boot=n_boot, confidence=confidence, seed=seed, label=label or "")


def run_label(path: str | os.PathLike) -> str:
    """'runs/base/samples.jsonl' -> 'base'; 'runs/base' -> 'base'; 'x/foo.jsonl' -> 'foo'."""
    p = os.path.normpath(os.fspath(path))
    if os.path.basename(p) == "samples.jsonl":
        return os.path.basename(os.path.dirname(os.path.abspath(p))) or "run"
    base = os.path.basename(p)
    return base[: -len(".jsonl")] if base.endswith(".jsonl") else base
