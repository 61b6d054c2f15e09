"""Unbiased Best-of-N metrics and the max@k reward transforms (pure core).

Metrics: `pass_at_k` (Codex estimator), `max_at_k` (its continuous generalisation, a U-statistic over
k-subsets) and `max_at_k_curve` (many k at once, with a standard error over prompts).
Transforms (used by `maxk.advantages`): `maxk_reward_transform` (rt, PKPO's s_i),
`leave_one_out_max_at_k` (max@k of the group without sample i) and `offpolicy_reward_transform` (rt',
the first-order off-policy weights). Formulas: ../shared/MATH.md sections 1-3; arXiv:2510.23393.

Shapes: P prompts, N samples per prompt, k as in max@k; n and c as in Chen et al. (n samples, c correct).
Everything runs on sorted rewards: a sort plus cumulative sums, O(N log N) per group, no Python loop over
prompts or samples. The rank weights C(i-1-d, k-1-d) / C(N, k) are computed once per (N, k, d) with exact
integer arithmetic and correctly rounded to float64 (no overflow at any N), then cast to the data's dtype
and device. Internally groups are sorted in *descending* order so that "sum over larger rewards" is a
plain exclusive cumulative sum.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "MaxAtKCurve",
    "leave_one_out_max_at_k",
    "max_at_k",
    "max_at_k_curve",
    "maxk_reward_transform",
    "offpolicy_reward_transform",
    "pass_at_k",
    "rank_weights",
]


# ----------------------------------------------------------------------------------------------------------
# Contracts and combinatorics
# ----------------------------------------------------------------------------------------------------------
def check_k(k, n: int, *, lo: int = 1, hi: int | None = None, what: str = "max@k") -> int:
    """k as a plain int with lo <= k <= hi (hi defaults to n); ValueError saying what is wrong otherwise."""
    hi = n if hi is None else hi
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an int, got {k!r} ({type(k).__name__})")
    if not lo <= k <= hi:
        raise ValueError(f"{what} needs {lo} <= k <= {hi} with N = {n} samples per group, got k = {k}")
    return int(k)


def check_rewards(rewards: torch.Tensor, *, rank: int | None = None) -> torch.Tensor:
    """Rewards as a floating tensor; ValueError on wrong rank, an empty sample axis or NaN/inf values."""
    if rank is not None and rewards.dim() != rank:
        want = "(P, N)" if rank == 2 else f"rank {rank}"
        raise ValueError(f"rewards must be {want}, got shape {tuple(rewards.shape)}")
    if rewards.dim() < 1 or rewards.shape[-1] < 1:
        raise ValueError(f"rewards need a non-empty sample axis (..., N), got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards contain NaN or inf; score failures as 0 instead")
    return rewards


@functools.lru_cache(maxsize=512)
def _rank_weights_f64(n: int, k: int, drop: int) -> tuple[float, ...]:
    """C(i-1-drop, k-1-drop) / C(n, k) for ascending ranks i = 1..n, exact integers, correctly rounded."""
    out = [0.0] * n
    b = k - 1 - drop
    if b < 0 or k > n:
        return tuple(out)
    denom, c = math.comb(n, k), 1  # c = C(a, b) with a = i - 1 - drop, starting at a = b (i = k)
    for i in range(k, n + 1):
        out[i - 1] = c / denom  # Python int / int is correctly rounded; underflow gives 0.0
        c = c * (i - drop) // (i - drop - b)  # C(a+1, b) = C(a, b) (a+1) / (a+1-b)
    return tuple(out)


def rank_weights(n: int, k: int, drop: int = 0, *, dtype=torch.float64, device=None, descending=False):
    """w_i = C(i-1-drop, k-1-drop) / C(n, k) for ascending ranks i = 1..n, as a tensor (n,).

    C(a, b) is the combinatorial binomial (0 when b < 0, b > a or a < 0). drop = 0 gives the max@k weights
    (sum to 1), drop = 1 and 2 the pair and triple weights of the transforms. descending=True returns them
    in descending-rank order (rank n first), matching rewards sorted in descending order.
    """
    w = torch.tensor(_rank_weights_f64(n, k, drop), dtype=torch.float64)
    if descending:
        w = w.flip(0)
    return w.to(dtype=dtype, device=device)


def _sorted_desc(rewards: torch.Tensor):
    return rewards.sort(dim=-1, descending=True)


def _unsort(values_sorted: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Scatter values computed on sorted rewards back to the input order."""
    return torch.empty_like(values_sorted).scatter_(-1, order, values_sorted)


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """out[..., q] = sum_{q' < q} x[..., q'] (a zero first column)."""
    return torch.nn.functional.pad(x.cumsum(-1)[..., :-1], (1, 0))


def _exclusive_revcumsum(x: torch.Tensor) -> torch.Tensor:
    """out[..., q] = sum_{q' > q} x[..., q'] (a zero last column)."""
    return _exclusive_cumsum(x.flip(-1)).flip(-1)


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------
def pass_at_k(n, c, k, *, dtype=torch.float64):
    """Codex estimator of pass@k from n samples with c correct (Chen et al. 2021, arXiv:2107.03374).

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1..n} (1 - k/i), and 1 when n - c < k.
    Product form (no huge binomials). n, c, k broadcast: Python ints give a float, numpy arrays (or
    lists) a float64 array, torch tensors a tensor of `dtype` (float64 by default) on their device.
    Requires 0 <= c <= n and 1 <= k <= n. Cost O(size * max(c)) (the product is padded to max(c) terms).
    """
    is_torch = any(isinstance(x, torch.Tensor) for x in (n, c, k))
    if is_torch:
        dev = next(x.device for x in (n, c, k) if isinstance(x, torch.Tensor))
        n, c, k = (torch.as_tensor(x, device=dev).long() for x in (n, c, k))
        n, c, k = torch.broadcast_tensors(n, c, k)
    else:
        n, c, k = (torch.as_tensor(np.asarray(x)).long() for x in (n, c, k))
        n, c, k = torch.broadcast_tensors(n, c, k)
    if bool(((c < 0) | (c > n)).any()):
        raise ValueError("pass_at_k needs 0 <= c <= n for every entry")
    if bool(((k < 1) | (k > n)).any()):
        raise ValueError("pass_at_k needs 1 <= k <= n for every entry")
    dtype = dtype if is_torch else torch.float64
    cmax = int(c.max()) if c.numel() else 0
    j = torch.arange(cmax, device=n.device)
    i = (n - c + 1).unsqueeze(-1) + j  # the factors' i = n-c+1 .. n, padded to cmax terms
    factor = 1.0 - k.unsqueeze(-1).to(dtype) / i.clamp(min=1).to(dtype)
    factor = torch.where(j < c.unsqueeze(-1), factor, torch.ones_like(factor))
    out = torch.where(n - c < k, torch.ones((), dtype=dtype, device=n.device), 1.0 - factor.prod(-1))
    if is_torch:
        return out
    return float(out) if out.dim() == 0 else out.numpy()


def max_at_k(rewards, k: int):
    """Unbiased estimate of max@k = E[max of k i.i.d. rewards] from N >= k samples.

    With r(1) <= ... <= r(N) sorted:  max@k = sum_{i>=k} C(i-1, k-1) / C(N, k) * r(i)
    (the mean over all k-subsets of the subset max). k = 1 gives the mean, k = N the max; equals pass@k
    (Chen et al. 2021) for rewards in {0, 1}. Ties do not matter (the formula only sees sorted values).
    rewards: (..., N) numpy array / list or torch tensor; returns (...) of the same kind (numpy in float64,
    a 1-D numpy input gives a numpy scalar). Requires 1 <= k <= N; NaN/inf rewards are a ValueError.
    """
    is_torch = isinstance(rewards, torch.Tensor)
    r = rewards if is_torch else torch.as_tensor(np.asarray(rewards, dtype=np.float64))
    r = check_rewards(r)
    n = r.shape[-1]
    k = check_k(k, n)
    w = rank_weights(n, k, 0, dtype=r.dtype, device=r.device, descending=True)
    out = (r.sort(dim=-1, descending=True).values * w).sum(-1)
    return out if is_torch else out.numpy()[()]


@dataclass(frozen=True)
class MaxAtKCurve:
    """max@k for several k over P prompts: per-prompt values, their mean and its standard error.

    ks: (K,) the k values;  per_prompt: (P, K) max@k_hat of each prompt;  mean: (K,) mean over prompts;
    stderr: (K,) sample std over prompts (ddof=1) / sqrt(P), 0 when P = 1. All numpy float64.
    `curve[k]` gives (mean, stderr) as floats; `curve.as_dict()` gives {k: (mean, stderr)}.
    """

    ks: tuple[int, ...]
    per_prompt: np.ndarray
    mean: np.ndarray
    stderr: np.ndarray

    def __getitem__(self, k: int) -> tuple[float, float]:
        j = self.ks.index(k)
        return float(self.mean[j]), float(self.stderr[j])

    def as_dict(self) -> dict[int, tuple[float, float]]:
        return {k: self[k] for k in self.ks}


def max_at_k_curve(rewards, ks: Iterable[int]) -> MaxAtKCurve:
    """max@k for each k in ks, per prompt and averaged over prompts with a standard error.

    rewards: (P, N) (a 1-D input is one prompt); every k needs 1 <= k <= N. With 0/1 rewards this is the
    pass@k curve. Returns a `MaxAtKCurve`.
    """
    r = torch.as_tensor(np.asarray(rewards.detach().cpu() if isinstance(rewards, torch.Tensor) else rewards,
                                   dtype=np.float64))
    if r.dim() == 1:
        r = r.unsqueeze(0)
    r = check_rewards(r, rank=2)
    ks = tuple(check_k(k, r.shape[-1]) for k in ks)
    if not ks:
        raise ValueError("max_at_k_curve needs at least one k")
    sorted_r = r.sort(dim=-1, descending=True).values
    w = torch.stack([rank_weights(r.shape[-1], k, 0, descending=True) for k in ks], dim=-1)  # (N, K)
    per_prompt = (sorted_r @ w).numpy()  # (P, K)
    p = per_prompt.shape[0]
    mean = per_prompt.mean(0)
    stderr = per_prompt.std(0, ddof=1) / math.sqrt(p) if p > 1 else np.zeros_like(mean)
    return MaxAtKCurve(ks=ks, per_prompt=per_prompt, mean=mean, stderr=stderr)


# ----------------------------------------------------------------------------------------------------------
# Reward transforms (inputs already checked by the caller: (P, N) finite float, valid k)
# ----------------------------------------------------------------------------------------------------------
def maxk_reward_transform(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """rt_i = (1/C(N,k)) sum_{|I|=k, i in I} max_{j in I} r_j  (PKPO's s_i, arXiv:2505.15201).

    Sorted ascending: rt(i) = [C(i-1, k-1) r(i) + sum_{j>i} C(j-2, k-2) r(j)] / C(N, k); one sort and one
    cumulative sum. sum_i rt_i = k * max@k_hat. Ties do not matter (tied samples get equal rt).
    rewards: (..., N); returns (..., N) in input order.
    """
    n = rewards.shape[-1]
    r, order = _sorted_desc(rewards)
    a = rank_weights(n, k, 0, dtype=r.dtype, device=r.device, descending=True)
    b = rank_weights(n, k, 1, dtype=r.dtype, device=r.device, descending=True)
    return _unsort(a * r + _exclusive_cumsum(b * r), order)


def leave_one_out_max_at_k(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """out_i = max@k_hat of the N-1 rewards other than r_i. Needs 1 <= k <= N-1.

    Sorted ascending with c_m = C(m-1, k-1) / C(N-1, k): out(i) = sum_{j<i} c_j r(j) + sum_{j>i} c_{j-1} r(j)
    (removing r(i) moves every larger reward down one rank). rewards: (..., N); returns (..., N).
    """
    n = rewards.shape[-1]
    r, order = _sorted_desc(rewards)
    c = rank_weights(n - 1, k, 0, dtype=r.dtype, device=r.device, descending=True)  # ranks N-1..1
    zero = torch.zeros(1, dtype=r.dtype, device=r.device)
    c_same = torch.cat([zero, c])  # descending position q has ascending rank N-q: weight c_{N-q}, 0 at top
    c_down = torch.cat([c, zero])  # the rank below: c_{N-q-1}
    larger = _exclusive_cumsum(c_down * r)  # j > i ascending = earlier in descending order
    smaller = _exclusive_revcumsum(c_same * r)
    return _unsort(larger + smaller, order)


def offpolicy_reward_transform(rewards: torch.Tensor, delta: torch.Tensor, k: int) -> torch.Tensor:
    """rt'_i = (1/C(N,k)) sum_{|I|=k, i in I} (1 + sum_{l in I} delta_l) max_{j in I} r_j  (MATH.md §3).

    First-order off-policy weights: rho(I) = prod_{l in I} (1 + delta_l) ~= 1 + sum_{l in I} delta_l.
    Suffix-sum form, sorted ascending (deltas permuted alike), P_i = sum_{l<i} delta_l, and
    a = C(i-1,k-1), b = C(i-2,k-2), e = C(i-3,k-3), all over C(N,k):
        rt'_i = a_i (1+delta_i) r_i + b_i P_i r_i + sum_{j>i} [b_j (1+delta_j) + e_j P_j] r_j
                + delta_i sum_{j>i} (b_j - e_j) r_j
    (the matrix form w'_ij = C(j-2,k-2)(1+delta_i+delta_j) + C(j-3,k-3)(P_j - delta_i) split into the
    part without delta_i and delta_i times b_j - e_j). delta = 0 gives rt exactly.
    rewards, delta: (..., N); returns (..., N) in input order.
    """
    n = rewards.shape[-1]
    r, order = _sorted_desc(rewards)
    d = delta.gather(-1, order)
    kw = dict(dtype=r.dtype, device=r.device, descending=True)
    a, b, e = (rank_weights(n, k, drop, **kw) for drop in (0, 1, 2))
    p = _exclusive_revcumsum(d)  # P_i: deltas of the smaller rewards
    own = (a * (1 + d) + b * p) * r
    larger = _exclusive_cumsum(torch.stack([(b * (1 + d) + e * p) * r, (b - e) * r]))
    return _unsort(own + larger[0] + d * larger[1], order)
