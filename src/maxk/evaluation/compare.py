"""Paired comparison of runs over the prompts they share: per-k differences and Wilcoxon tests.

For runs A (the reference, the first one given) and B, metric m and k, take the prompts present in both
runs with N_p >= k in both; d_p = m_B(p) - m_A(p). Report mean(d), wins/ties/losses of B, and the
two-sided Wilcoxon signed-rank p-value over prompts (as in arXiv:2510.23393; scipy.stats.wilcoxon,
zero differences dropped ("wilcox"), exact null for small samples). All differences zero -> p = 1;
no shared prompt -> p = nan.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from maxk.evaluation.metrics import METRICS, Curves


@dataclass
class PairedResult:
    """B minus A at one (metric, k)."""

    metric: str
    k: int
    n_prompts: int
    mean_a: float
    mean_b: float
    mean_diff: float
    wins: int
    ties: int
    losses: int
    p_value: float


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1.0 if all are 0, nan if none."""
    from scipy.stats import wilcoxon

    if diffs.size == 0:
        return float("nan")
    nonzero = diffs[np.abs(diffs) > 1e-12]
    if nonzero.size == 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_comparison(a: Curves, b: Curves, *, tol: float = 1e-12) -> list[PairedResult]:
    """Per-metric, per-k paired results for every k both runs requested."""
    row_b = {tid: i for i, tid in enumerate(b.task_ids)}
    shared = [(i, row_b[tid]) for i, tid in enumerate(a.task_ids) if tid in row_b]
    ia = np.array([s[0] for s in shared], dtype=np.int64)
    ib = np.array([s[1] for s in shared], dtype=np.int64)
    out = []
    for m in METRICS:
        for k in a.ks:
            if k not in b.ks:
                continue
            va = a.per_prompt[m][ia, a.ks.index(k)] if ia.size else np.zeros(0)
            vb = b.per_prompt[m][ib, b.ks.index(k)] if ib.size else np.zeros(0)
            ok = ~(np.isnan(va) | np.isnan(vb))
            va, vb = va[ok], vb[ok]
            d = vb - va
            nan = float("nan")
            out.append(
                PairedResult(
                    metric=m,
                    k=k,
                    n_prompts=int(d.size),
                    mean_a=float(va.mean()) if d.size else nan,
                    mean_b=float(vb.mean()) if d.size else nan,
                    mean_diff=float(d.mean()) if d.size else nan,
                    wins=int((d > tol).sum()),
                    ties=int((np.abs(d) <= tol).sum()),
                    losses=int((d < -tol).sum()),
                    p_value=wilcoxon_p(d),
                )
            )
    return out


def shared_prompt_count(a: Curves, b: Curves) -> int:
    return len(set(a.task_ids) & set(b.task_ids))
