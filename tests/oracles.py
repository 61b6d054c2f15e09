"""Slow, readable brute-force oracles for the pure core: one per concept, loops over every k-subset.

Each oracle is the *definition* from ../shared/MATH.md written as literally as possible (Python floats,
itertools.combinations), so that the vectorised code in maxk.estimators / maxk.advantages can be checked
against it. Inputs are plain sequences of floats for one group; outputs are lists / floats.
"""

from __future__ import annotations

import itertools
import math

import torch
from hypothesis import strategies as st


def subsets(n: int, k: int):
    return list(itertools.combinations(range(n), k))


def brute_max_at_k(r, k: int) -> float:
    """Mean over all k-subsets of the subset max."""
    return sum(max(r[j] for j in s) for s in subsets(len(r), k)) / math.comb(len(r), k)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k) with exact integers."""
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def brute_rt(r, k: int) -> list[float]:
    """rt_i = (1/C(N,k)) sum over k-subsets containing i of the subset max."""
    n = len(r)
    out = [0.0] * n
    for s in subsets(n, k):
        m = max(r[j] for j in s)
        for i in s:
            out[i] += m
    return [x / math.comb(n, k) for x in out]


def brute_loo(r, k: int) -> list[float]:
    """max@k_hat of the group without sample i, for each i."""
    return [brute_max_at_k([x for j, x in enumerate(r) if j != i], k) for i in range(len(r))]


def brute_loo1_credit(r, k: int) -> list[float]:
    """N/C(N,k) * sum over k-subsets I containing i of (max_I r - max_{I minus i} r): the loo-1 advantage."""
    n = len(r)
    out = [0.0] * n
    for s in subsets(n, k):
        m = max(r[j] for j in s)
        for i in s:
            out[i] += m - max(r[j] for j in s if j != i)
    return [n * x / math.comb(n, k) for x in out]


def brute_offpolicy_rt(r, delta, k: int) -> list[float]:
    """rt'_i = (1/C(N,k)) sum over k-subsets I containing i of (1 + sum_{l in I} delta_l) max_I r."""
    n = len(r)
    out = [0.0] * n
    for s in subsets(n, k):
        m = max(r[j] for j in s) * (1 + sum(delta[j] for j in s))
        for i in s:
            out[i] += m
    return [x / math.comb(n, k) for x in out]


def brute_offpolicy_exact_rt(r, rho, k: int) -> list[float]:
    """rt''_i = (1/C(N,k)) sum over k-subsets I containing i of prod_{l in I} rho_l * max_I r."""
    n = len(r)
    out = [0.0] * n
    for s in subsets(n, k):
        m = max(r[j] for j in s) * math.prod(rho[j] for j in s)
        for i in s:
            out[i] += m
    return [x / math.comb(n, k) for x in out]


def comb0(a: int, b: int) -> int:
    """The combinatorial binomial: 0 when b < 0, b > a or a < 0 (unlike scipy's binom(-1, 0) == 1)."""
    return math.comb(a, b) if 0 <= b <= a else 0


def matrix_offpolicy_rt(r, delta, k: int) -> list[float]:
    """The O(N^2) matrix form of MATH.md §3 on sorted rewards, scattered back to input order."""
    n = len(r)
    order = sorted(range(n), key=lambda i: r[i])
    rs = [r[i] for i in order]
    ds = [delta[i] for i in order]
    p = [sum(ds[:i]) for i in range(n)]  # P_i = sum_{l<i} delta_l (0-based i)
    out_sorted = []
    for i in range(1, n + 1):  # 1-based ranks, as in MATH.md
        acc = (comb0(i - 1, k - 1) * (1 + ds[i - 1]) + comb0(i - 2, k - 2) * p[i - 1]) * rs[i - 1]
        for j in range(i + 1, n + 1):
            w = (comb0(j - 2, k - 2) * (1 + ds[i - 1] + ds[j - 1])
                 + comb0(j - 3, k - 3) * (p[j - 1] - ds[i - 1]))
            acc += w * rs[j - 1]
        out_sorted.append(acc / math.comb(n, k))
    out = [0.0] * n
    for pos, i in enumerate(order):
        out[i] = out_sorted[pos]
    return out


def brute_chen(r, k: int) -> list[float]:
    """Chen et al.: the mean over k-subsets containing i of (max_I r - rho) / sigma, rho = mean subset max."""
    n = len(r)
    rho = brute_max_at_k(r, k)
    sigma = math.sqrt(rho * (1 - rho))
    if sigma == 0:
        return [0.0] * n
    sums = [0.0] * n
    for s in subsets(n, k):
        for i in s:
            sums[i] += max(r[j] for j in s) - rho
    return [x / math.comb(n - 1, k - 1) / sigma for x in sums]


def categorical_max_at_k(logits: torch.Tensor, values: torch.Tensor, k: int) -> torch.Tensor:
    """Closed-form max@k of a categorical policy: sum over distinct values v of v (F(v)^k - F(v-)^k).

    F(v) = P(reward <= v). Differentiable in logits (autograd gives the true gradient). Ties between
    outcome values are handled by grouping outcomes with equal value.
    """
    p = torch.softmax(logits, -1)
    total = logits.new_zeros(())
    for v in sorted(set(values.tolist())):
        f_le = p[values <= v].sum()
        f_lt = p[values < v].sum()
        total = total + v * (f_le**k - f_lt**k)
    return total


def groups(max_n: int = 7, binary: bool = False, min_n: int = 1, min_k: int = 1, k_below_n: int = 0):
    """Hypothesis strategy: (one group's rewards as a list, k), ties likely, min_k <= k <= N - k_below_n."""
    grid = st.sampled_from([0.0, 1.0] if binary else [0.0, 0.1, 0.25, 0.5, 0.6, 0.9, 1.0])
    values = grid if binary else grid | st.floats(0, 1)
    lists = st.lists(values, min_size=max(min_n, min_k + k_below_n), max_size=max_n)
    return lists.flatmap(lambda r: st.tuples(st.just(r), st.integers(min_k, len(r) - k_below_n)))
