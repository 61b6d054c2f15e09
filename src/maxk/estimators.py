"""Unbiased Best-of-N metrics and the max@k reward transforms (pure core).

Metrics: `pass_at_k` (Codex estimator), `max_at_k` (its continuous generalisation, a U-statistic over
k-subsets) and `max_at_k_curve` (many k at once, with a standard error over prompts).
Transforms (used by `maxk.advantages`): `maxk_reward_transform` (rt, PKPO's s_i), the leave-one-out
advantages `maxk_loo_transform` / `maxk_loo1_transform` and `maxk_centred_transform` (written over reward
gaps, so float32 loses nothing to cancellation), `offpolicy_reward_transform` (rt', the first-order
off-policy weights) and `offpolicy_exact_reward_transform` (rt'', the exact product of ratios).
Formulas: ../shared/MATH.md sections 1-3; arXiv:2510.23393.

Shapes: P prompts, N samples per prompt, k as in max@k; n and c as in Chen et al. (n samples, c correct).
Everything runs on sorted rewards: a sort plus cumulative sums, O(N log N) per group, no Python loop over
prompts or samples. The rank weights C(i-1-d, k-1-d) / C(N, k) are computed once per (N, k, d) with exact
integer arithmetic and correctly rounded to float64 (no overflow at any N), then cast to the data's dtype
and device (cached). Internally maxk and the off-policy weights sort in *descending* order so that "sum
over larger rewards" is a plain inclusive cumulative sum; the gap forms sort ascending.
On CPU at N <= 16 `maxk_reward_transform` and `offpolicy_reward_transform` run the same sums in fused C
kernels (`maxk._fused`; eager fallback), where the eager ops would cost their dispatch, not arithmetic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from maxk import _fused

__all__ = [
    "MaxAtKCurve",
    "max_at_k",
    "max_at_k_curve",
    "maxk_centred_transform",
    "maxk_loo1_transform",
    "maxk_loo_transform",
    "maxk_reward_transform",
    "offpolicy_exact_reward_transform",
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


NOT_FINITE = "rewards contain NaN or inf; score failures as 0 instead"


def check_rewards(rewards: torch.Tensor, *, rank: int | None = None, finite: bool = True) -> torch.Tensor:
    """Rewards as a floating tensor; ValueError on wrong rank, an empty sample axis or NaN/inf values.

    finite=False skips the NaN/inf scan for callers that sort anyway (`_sort` checks the sorted ends).
    """
    if rank is not None and rewards.dim() != rank:
        want = "(P, N)" if rank == 2 else f"rank {rank}"
        raise ValueError(f"rewards must be {want}, got shape {tuple(rewards.shape)}")
    if rewards.dim() < 1 or rewards.shape[-1] < 1:
        raise ValueError(f"rewards need a non-empty sample axis (..., N), got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    if finite and rewards.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(rewards))).all()):
        raise ValueError(NOT_FINITE)
    return rewards


@functools.lru_cache(maxsize=1024)
def _binomial_ratios_f64(a0: int, b: int, count: int, n_den: int, k_den: int) -> tuple[float, ...]:
    """C(a, b) / C(n_den, k_den) for a = a0 .. a0+count-1: exact integers, each correctly rounded."""
    out = [0.0] * count
    if b < 0:
        return tuple(out)
    denom = math.comb(n_den, k_den)
    start = max(a0, b)  # C(a, b) = 0 below a = b (which also covers a < 0)
    c = math.comb(start, b)
    for a in range(start, a0 + count):
        out[a - a0] = c / denom  # Python int / int is correctly rounded; underflow gives 0.0
        c = c * (a + 1) // (a + 1 - b)  # C(a+1, b) = C(a, b) (a+1) / (a+1-b)
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _weights(terms: tuple, count: int, scale: float, descending: bool, dtype, device) -> torch.Tensor:
    """scale * sum_t coef_t * C(a0_t + j, b_t) / C(n_t, k_t) for terms (coef, a0, b, n, k), j = 0..count-1.

    Combined in float64 (so differences of weights are exact to float64 rounding), optionally reversed,
    cast once per (dtype, device) and cached. Internal: callers never modify the returned tensor.
    """
    w = sum(c * torch.tensor(_binomial_ratios_f64(a0, b, count, nd, kd), dtype=torch.float64)
            for c, a0, b, nd, kd in terms)
    w = scale * w
    return (w.flip(0) if descending else w).to(dtype=dtype, device=device)


EXPAND_MAX = 1 << 16  # elements; see `_weights_rows`


@functools.lru_cache(maxsize=64)
def _weights_rows(terms: tuple, count: int, scale: float, descending: bool, dtype, device, rows: int):
    """`_weights` ready to multiply (rows, count) data: pre-expanded to (rows, count) when that is small.

    On small batches (P * N <= EXPAND_MAX) the cost of an elementwise op is its dispatch, and one that
    broadcasts a (count,) vector over a short sample axis takes twice as long as a same-shape op (the
    inner loop is only N long), so the weights are cached expanded and contiguous. Larger batches get the
    (count,) vector: memory stays O(N).
    """
    w = _weights(terms, count, scale, descending, dtype, device)
    return w.expand(rows, count).contiguous() if rows * count <= EXPAND_MAX else w


def _rank(n: int, k: int, drop: int, coef: int = 1) -> tuple:
    """The term for C(i-1-drop, k-1-drop) / C(n, k), ranks i = 1..n (see `_weights`)."""
    return (coef, -drop, k - 1 - drop, n, k)


def _times(term: tuple, c: int) -> tuple:
    """A `_rank` term with its coefficient multiplied by c."""
    return (c * term[0], *term[1:])


def rank_weights(n: int, k: int, drop: int = 0, *, dtype=torch.float64, device=None, descending=False):
    """w_i = C(i-1-drop, k-1-drop) / C(n, k) for ascending ranks i = 1..n, as a tensor (n,).

    drop = 0 gives the max@k weights (they sum to 1), drop = 1 and 2 the pair and triple weights of the
    transforms. descending=True returns them in descending-rank order (rank n first), matching rewards
    sorted in descending order.
    """
    dev = torch.device("cpu") if device is None else torch.device(device)
    return _weights((_rank(n, k, drop),), n, 1.0, descending, dtype, dev).clone()


def _sort(rewards: torch.Tensor, descending: bool = False, check: bool = True):
    """(sorted values, order) along the last axis; ValueError if any reward is NaN or inf (check=True).

    NaN sorts as the largest value, so checking the first and last sorted columns finds every NaN/inf
    at the cost of 2 P elements instead of a pass over all of them. check=False is for callers that
    check their result with `_finite` instead (one reduction, cheaper again).
    """
    v, order = rewards.sort(dim=-1, descending=descending)
    if not check:
        return v, order
    ends = v[..., :: max(v.shape[-1] - 1, 1)]  # first and last columns
    if v.numel() and not bool(ends.abs().amax() < torch.inf):  # NaN < inf is False
        raise ValueError(NOT_FINITE)
    return v, order


LOG_RATIO_NOT_FINITE = "log_ratio contains NaN (or inf with delta_clip=None)"


def _finite(out: torch.Tensor, rewards: torch.Tensor, delta: torch.Tensor | None = None,
            total: float | None = None) -> torch.Tensor:
    """`out` if it is finite, else a ValueError naming the cause. One reduction on the happy path.

    For transforms in which every input element reaches its own output through a product (x * w, even
    with w = 0): then IEEE arithmetic turns any NaN/inf input into a non-finite output, and a finite
    sum of the output proves all inputs finite. Only on failure are the inputs scanned, to say which.
    total: the sum of `out` when the caller has it already (the fused kernels return it).
    """
    if out.numel() == 0 or math.isfinite(out.sum().item() if total is None else total):
        return out
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError(NOT_FINITE)
    if delta is not None and not bool(torch.isfinite(delta).all()):
        raise ValueError(LOG_RATIO_NOT_FINITE)
    if not bool(torch.isfinite(out).all()):
        big = float(rewards.abs().max())
        raise ValueError(f"the result overflows {out.dtype} (|rewards| up to {big:.3g}); rescale the rewards "
                         "or pass them in float64")
    return out  # finite values whose sum alone overflowed


def _unsort(values_sorted: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Scatter values computed on sorted rewards back to the input order."""
    return values_sorted.scatter(-1, order, values_sorted)


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """out[..., q] = sum_{q' < q} x[..., q'] (a zero first column)."""
    return torch.nn.functional.pad(x.cumsum(-1)[..., :-1], (1, 0))


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
    r = check_rewards(r, finite=False)
    n = r.shape[-1]
    k = check_k(k, n)
    w = _weights((_rank(n, k, 0),), n, 1.0, False, r.dtype, r.device)
    out = _sort(r)[0] @ w
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
# Reward transforms: the caller checks rank, dtype and k; the sort checks for NaN/inf
# ----------------------------------------------------------------------------------------------------------
def maxk_reward_transform(rewards: torch.Tensor, k: int, scale: float = 1.0) -> torch.Tensor:
    """scale * rt_i, rt_i = (1/C(N,k)) sum_{|I|=k, i in I} max_{j in I} r_j  (PKPO's s_i, arXiv:2505.15201).

    Sorted ascending: rt(i) = [C(i-1, k-1) r(i) + sum_{j>i} C(j-2, k-2) r(j)] / C(N, k)
                            = (a_i - b_i) r(i) + sum_{j>=i} b_j r(j)   (a, b: the weights over C(N, k)),
    with a_i - b_i >= 0: one sort, one inclusive cumulative sum, no cancellation. sum_i rt_i = k max@k_hat.
    Ties do not matter (tied samples get equal rt). rewards: (..., N); returns (..., N) in input order.
    """
    n = rewards.shape[-1]
    terms = ((_rank(n, k, 0), _rank(n, k, 1, -1)), (_rank(n, k, 1),))  # own = a - b, and b
    if _fused.applies(rewards):
        own, b = (_weights(t, n, float(scale), True, rewards.dtype, rewards.device) for t in terms)
        out, total = _fused.maxk_rt(rewards, own, b)
        return _finite(out, rewards, total=total)
    r, order = _sort(rewards.reshape(-1, n), descending=True, check=False)
    own, b = (_weights_rows(t, n, float(scale), True, r.dtype, r.device, r.shape[0]) for t in terms)
    out = _unsort(torch.addcmul((b * r).cumsum(-1), own, r), order)  # own * r: every r_i reaches out_i
    return _finite(out, rewards).reshape(rewards.shape)


def _gaps(rewards: torch.Tensor):
    """(sorted ascending rewards, order, gaps): gaps[..., l] = r(l+2) - r(l+1) >= 0, a 0 last column."""
    r, order = _sort(rewards)
    return r, order, torch.nn.functional.pad(r.diff(dim=-1), (0, 1))


def maxk_loo1_transform(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """A_i = N rt_i - k max@(k-1)_hat(rewards without i), in the cancellation-free gap form. 2 <= k <= N.

    Per subset the credit is max_I r - max_{I minus i} r: nonzero only when i is the max, then r(i) minus
    the second largest. Summing over the second largest m and writing r(i) - r(m) as a sum of the gaps
    g_l = r(l+1) - r(l) >= 0 (hockey stick: sum_{m<=l} C(m-1, k-2) = C(l, k-1)) gives, sorted ascending,
        A(i) = N sum_{l<i} C(l, k-1) / C(N, k) * g_l
    a cumulative sum of non-negative terms: float32 stays accurate even at k = N - 1.
    """
    n = rewards.shape[-1]
    r, order, g = _gaps(rewards)
    w = _weights(((n, 1, k - 1, n, k),), n, 1.0, False, r.dtype, r.device)  # N C(l, k-1)/C(N,k), l = 1..N
    return _unsort(_exclusive_cumsum(w * g), order)


def maxk_loo_transform(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """A_i = N rt_i - k max@k_hat(rewards without i), in the gap form. 1 <= k <= N-1.

    N rt_i / k is the mean of max_I over k-subsets I containing i, max@k_hat(without i) the mean over
    k-subsets J not containing i. With max X = r(1) + sum_l g_l [max X > r(l)] (g_l = r(l+1) - r(l), ranks
    ascending), A_i = k sum_l g_l (P_J(all ranks <= l) - P_I(all ranks <= l)), sorted ascending:
        A(i) = k [ sum_{l<i} C(l, k)/C(N-1, k) g_l
                   + sum_{l>=i} (C(l-1, k)/C(N-1, k) - C(l-1, k-1)/C(N-1, k-1)) g_l ]
    Weights are exact (float64, then cast); no difference of two large sums.
    """
    n = rewards.shape[-1]
    r, order, g = _gaps(rewards)
    below = _weights(((k, 1, k, n - 1, k),), n, 1.0, False, r.dtype, r.device)  # k C(l, k)/C(N-1, k)
    above = _weights(((k, 0, k, n - 1, k), (-k, 0, k - 1, n - 1, k - 1)), n, 1.0, False, r.dtype, r.device)
    upper = (above * g).flip(-1).cumsum(-1).flip(-1)  # inclusive: l >= i
    return _unsort(_exclusive_cumsum(below * g) + upper, order)


def maxk_centred_transform(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """rt_i - k r(N) / N: the max@k transform shifted by a per-group constant, computed cancellation-free.

    N rt_i / k = r(N) - sum_{l>=i} C(l-1, k-1)/C(N-1, k-1) g_l (sorted ascending, g_l = r(l+1) - r(l)), so
    rt_i - k r(N)/N = -(k/N) sum_{l>=i} C(l-1, k-1)/C(N-1, k-1) g_l. Used for the z-score, which ignores the
    shift but in float32 cannot afford the rounding of rt at large k. 1 <= k <= N.
    """
    n = rewards.shape[-1]
    r, order, g = _gaps(rewards)
    w = _weights(((-k / n, 0, k - 1, n - 1, k - 1),), n, 1.0, True, r.dtype, r.device)  # descending l
    return _unsort((w * g.flip(-1)).cumsum(-1).flip(-1), order)


def offpolicy_reward_transform(rewards: torch.Tensor, delta: torch.Tensor, k: int, scale: float = 1.0,
                               clip: float | None = None):
    """rt'_i = (1/C(N,k)) sum_{|I|=k, i in I} (1 + sum_{l in I} delta_l) max_{j in I} r_j  (MATH.md §3).

    First-order off-policy weights: rho(I) = prod_{l in I} (1 + delta_l) ~= 1 + sum_{l in I} delta_l.
    Suffix-sum form, sorted ascending (deltas permuted alike), P_i = sum_{l<i} delta_l, and
    a = C(i-1,k-1), b = C(i-2,k-2), e = C(i-3,k-3), all over C(N,k):
        rt'_i = a_i (1+delta_i) r_i + b_i P_i r_i + sum_{j>i} [b_j (1+delta_j) + e_j P_j] r_j
                + delta_i sum_{j>i} (b_j - e_j) r_j
    (the matrix form w'_ij = C(j-2,k-2)(1+delta_i+delta_j) + C(j-3,k-3)(P_j - delta_i) split into the
    part without delta_i and delta_i times b_j - e_j). Computed with inclusive sums over j >= i:
        rt'_i = r_i [(a_i - b_i)(1+delta_i) + f_i (P_i - delta_i)] + S1_i + delta_i S2_i,  f = b - e,
        S1_i = sum_{j>=i} [b_j (1+delta_j) + e_j P_j] r_j,  S2_i = sum_{j>=i} f_j r_j.
    delta = 0 gives rt. Returns scale * rt'. rewards, delta: (..., N); returns (..., N) in input order.
    clip: delta is first clamped to [-clip, clip] (None: used as given).
    """
    n = rewards.shape[-1]
    a, b, e = (_rank(n, k, drop) for drop in (0, 1, 2))
    # wb, we, wf = b - e, wab = a - b, wab_f = (a - b) - f
    terms = ((b,), (e,), (b, _times(e, -1)), (a, _times(b, -1)), (a, _times(b, -2), e))
    if delta.shape != rewards.shape or delta.device != rewards.device:
        raise ValueError(f"delta {tuple(delta.shape)} on {delta.device} must match rewards "
                         f"{tuple(rewards.shape)} on {rewards.device}")
    if _fused.applies(rewards):
        ws = tuple(_weights(t, n, float(scale), True, rewards.dtype, rewards.device) for t in terms)
        out, total = _fused.offpolicy_rt(rewards, delta, clip, ws)
        return _finite(out, rewards, delta, total=total)
    r, order = _sort(rewards.reshape(-1, n), descending=True, check=False)
    d = delta.reshape(-1, n).gather(-1, order)
    d = d if clip is None else d.clamp(-clip, clip)
    wb, we, wf, wab, wab_f = (_weights_rows(t, n, float(scale), True, r.dtype, r.device, r.shape[0])
                              for t in terms)
    cd = d.cumsum(-1)
    p = cd[..., -1:] - cd  # P_i = sum_{l<i} delta_l: later positions in descending order
    s1 = torch.addcmul(wb, wb, d).addcmul_(we, p).mul_(r).cumsum(-1)  # sums over j >= i
    s2 = (wf * r).cumsum(-1)
    own = torch.addcmul(wab, wab_f, d).addcmul_(wf, p)  # (a-b)(1+d) + f (p-d); = a - b when delta = 0,
    out = torch.addcmul(s1, own, r).addcmul_(d, s2)  # so delta = 0 gives maxk bit for bit
    return _finite(_unsort(out, order), rewards, delta).reshape(rewards.shape)


def offpolicy_exact_reward_transform(rewards: torch.Tensor, rho: torch.Tensor, k: int) -> torch.Tensor:
    """rt''_i = (1/C(N,k)) sum_{|I|=k, i in I} prod_{l in I} rho_l * max_{j in I} r_j  (exact subset ratios).

    Sorted ascending (rho permuted alike), with e_t the elementary symmetric polynomials:
        rt''_i = a_i rho_i e~_{k-1}(rho_{<i}) r_i
                 + sum_{j>i} b_j rho_i rho_j e~_{k-2}(rho_{<j} minus rho_i) r_j
    where e~_t(x_1..x_s) = e_t / C(s, t) is the mean product over t-subsets and a, b are the rank weights
    C(i-1,k-1)/C(N,k), C(i-2,k-2)/C(N,k). e~ obeys the convex recurrence
        e~_t(x_1..x_s) = (s-t)/s e~_t(x_1..x_{s-1}) + t/s x_s e~_{t-1}(x_1..x_{s-1}),
    so nothing overflows at any N. O(N^2 k) work and O(P N k) memory; a sequential loop over the N sorted
    positions (vectorised over prompts and samples). rho = 1 gives rt exactly (up to rounding).
    rewards, rho: (..., N) with rho > 0; returns (..., N) in input order.
    """
    n = rewards.shape[-1]
    r, order = _sort(rewards)
    x = rho.gather(-1, order)
    kw = dict(dtype=r.dtype, device=r.device)
    a, b = rank_weights(n, k, 0, **kw), rank_weights(n, k, 1, **kw)
    t = torch.arange(k, **kw)  # t = 0 .. k-1
    full = torch.zeros(r.shape[:-1] + (k,), **kw)  # e~_t(x_1..x_{j-1}), starts as the empty set
    full[..., 0] = 1
    excl = torch.zeros(r.shape + (k,), **kw)  # excl[..., i, t] = e~_t(x_1..x_{j-1} minus x_i), i < j
    out = torch.zeros_like(r)
    for j in range(n):  # 0-based position of the newly added (largest so far) reward
        xj, rj = x[..., j : j + 1], r[..., j : j + 1]
        out[..., j] += xj[..., 0] * full[..., k - 1] * a[j] * rj[..., 0]
        if k >= 2 and j > 0:
            out[..., :j] += x[..., :j] * xj * excl[..., :j, k - 2] * b[j] * rj
        # add x_j: sets below j grow from size j-1 to j (excl) and from j to j+1 (full)
        s = j  # the new size of the excluded sets for i < j
        if s > 0:
            shifted = torch.nn.functional.pad(excl[..., :j, :-1], (1, 0))
            excl[..., :j, :] = (s - t) / s * excl[..., :j, :] + t / s * xj.unsqueeze(-1) * shifted
        excl[..., j, :] = full  # x_1..x_j minus x_j = x_1..x_{j-1}
        shifted = torch.nn.functional.pad(full[..., :-1], (1, 0))
        full = (j + 1 - t) / (j + 1) * full + t / (j + 1) * xj * shifted
    return _unsort(out, order)
