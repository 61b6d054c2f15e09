"""Advantage estimators for group sampling: the max@k family and its baselines (pure core).

`ADVANTAGES` is a registry; every entry has the signature

    fn(rewards: Tensor[P, N], *, k: int, log_ratio: Tensor[P, N] | None = None, **options) -> Tensor[P, N]

P prompts, N samples each (sample i of prompt p is row p, column i). Entries that do not use k or
log_ratio accept and ignore them; options are keyword-only and bound once (`ADVANTAGES.bind`).
The returned A_i multiplies grad log pi(y_i) in a per-sample mean loss: (1/N) sum_i A_i grad log pi(y_i).
With maxk's convention A = N * rt, `maxk`, `maxk_loo` and `maxk_loo1` are unbiased for grad max@k
(proved by enumeration in tests/test_unbiased.py). Formulas: ../shared/MATH.md §2-3, arXiv:2510.23393.

Degenerate groups (all rewards equal) give exact zeros for every estimator with a baseline or a
normalisation; the unbaselined `maxk` and `maxk_offpolicy` return their exact value k * r there (0 for an
all-failed group), which the unbiasedness proof needs. Never NaN.
`BINARY_ONLY`: names that need 0/1 rewards. `USES_LOG_RATIO`: names whose output depends on log_ratio and
so must be recomputed at every PPO pass.
"""

from __future__ import annotations

import torch

from maxk.estimators import (
    LOG_RATIO_NOT_FINITE,
    check_k,
    check_rewards,
    maxk_centred_transform,
    maxk_loo1_transform,
    maxk_loo_transform,
    maxk_reward_transform,
    offpolicy_exact_reward_transform,
    offpolicy_reward_transform,
    pass_at_k,
)
from maxk.registry import Registry

__all__ = ["ADVANTAGES", "BINARY_ONLY", "USES_LOG_RATIO"]

ADVANTAGES: Registry = Registry("advantage estimator")
BINARY_ONLY = frozenset({"passk_chen"})
USES_LOG_RATIO = frozenset({"maxk_offpolicy", "maxk_offpolicy_exact"})


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------
def _checked(rewards, k=None, *, lo: int = 1, hi_drop: int = 0, what: str = "max@k", sorts: bool = False):
    """(rewards as a checked (P, N) float tensor, k as an int or None); hi = N - hi_drop.

    sorts=True: the estimator sorts, and the sort checks for NaN/inf (cheaper than a separate scan)."""
    r = check_rewards(torch.as_tensor(rewards), rank=2, finite=not sorts)
    if k is not None:
        k = check_k(k, r.shape[-1], lo=lo, hi=r.shape[-1] - hi_drop, what=what)
    return r, k


def _constant(r: torch.Tensor) -> torch.Tensor:
    """(P, 1) bool: groups whose values are all equal (degenerate: no signal)."""
    return (r.amax(-1, keepdim=True) == r.amin(-1, keepdim=True))


def _zscore(x: torch.Tensor, eps: float) -> torch.Tensor:
    """(x - mean) / (std + eps) over the last axis, sample std (ddof=1); constant groups give 0."""
    centred = x - x.mean(-1, keepdim=True)
    std = (centred.square().sum(-1, keepdim=True) / max(x.shape[-1] - 1, 1)).sqrt()
    return torch.where(_constant(x), torch.zeros_like(x), centred / (std + eps))


def _zscore_unless_constant(x: torch.Tensor, r: torch.Tensor, eps: float) -> torch.Tensor:
    """z-score of x over the group; zeros where the rewards r are all equal (x is then constant up to
    rounding, and a z-score would amplify the rounding)."""
    z = _zscore(x, eps)
    return torch.where(_constant(r), torch.zeros_like(z), z)


def _delta(log_ratio, rewards: torch.Tensor, clip: float | None, check: bool = True) -> torch.Tensor:
    """delta_i = exp(log_ratio_i) - 1, detached and clamped to [-clip, clip]; zeros when log_ratio is None.

    check=False leaves the NaN check to the caller (`offpolicy_reward_transform` checks its result)."""
    if log_ratio is None:
        return torch.zeros_like(rewards)
    lr = torch.as_tensor(log_ratio).detach().to(dtype=rewards.dtype)
    if lr.shape != rewards.shape:
        raise ValueError(f"log_ratio shape {tuple(lr.shape)} differs from rewards {tuple(rewards.shape)}")
    if lr.device != rewards.device:
        raise ValueError(f"log_ratio is on {lr.device} but rewards are on {rewards.device}; move one of them")
    # exp - 1 rather than expm1: exp is vectorised (about twice as fast at small N), and delta only ever
    # enters as 1 + (sums of deltas), where the absolute error, one rounding of 1, is what counts.
    d = lr.exp().sub_(1)  # in [-1, inf]: no -inf, so the sum below is NaN only if some delta is NaN
    d = d if clip is None else d.clamp_(-clip, clip)
    if check and bool(torch.isnan(d.sum())):
        raise ValueError(LOG_RATIO_NOT_FINITE)
    return d


# ----------------------------------------------------------------------------------------------------------
# The max@k family
# ----------------------------------------------------------------------------------------------------------
@ADVANTAGES.register("maxk")
def maxk_advantages(rewards, *, k: int, log_ratio=None):
    """A_i = N * rt_i, rt_i = (1/C(N,k)) sum_{|I|=k, i in I} max_{j in I} r_j: unbiased for grad max@k.

    E[(1/N) sum_i A_i grad log pi(y_i)] = grad max@k. k = 1 gives A = r. 1 <= k <= N. (P, N) -> (P, N).
    """
    r, k = _checked(rewards, k, sorts=True)
    return maxk_reward_transform(r, k, scale=r.shape[-1])


@ADVANTAGES.register("maxk_loo")
def maxk_loo_advantages(rewards, *, k: int, log_ratio=None):
    """A_i = N * rt_i - k * max@k_hat(rewards without i): unbiased (the baseline ignores y_i). k <= N-1.

    Computed in the cancellation-free gap form (`maxk.estimators.maxk_loo_transform`).
    """
    r, k = _checked(rewards, k, hi_drop=1, what="maxk_loo", sorts=True)
    a = maxk_loo_transform(r, k)
    return torch.where(_constant(r), torch.zeros_like(a), a)


@ADVANTAGES.register("maxk_loo1")
def maxk_loo1_advantages(rewards, *, k: int, log_ratio=None):
    """A_i = N * rt_i - k * max@(k-1)_hat(rewards without i)  (PKPO s^(loo-1), the paper's BoN LOO-1).

    Per subset: credit max_I r - max_{I minus i} r. Unbiased; zero for the k-1 smallest rewards; at N = k
    it is k times Tang et al.'s best-minus-second-best. Needs 2 <= k <= N. Computed in the gap form
    (`maxk.estimators.maxk_loo1_transform`): a cumulative sum of non-negative terms.
    """
    r, k = _checked(rewards, k, lo=2, what="maxk_loo1", sorts=True)
    a = maxk_loo1_transform(r, k)
    return torch.where(_constant(r), torch.zeros_like(a), a)


@ADVANTAGES.register("maxk_zscore")
def maxk_zscore_advantages(rewards, *, k: int, log_ratio=None, eps: float = 1e-6):
    """A_i = (rt_i - mean(rt)) / (std(rt) + eps) over the group (sample std): the paper's "BoN mean".

    Biased, but strong in practice. Degenerate at k = N (all rt equal) and for constant groups: zeros.
    """
    r, k = _checked(rewards, k, sorts=True)
    return _zscore_unless_constant(maxk_centred_transform(r, k), r, eps)  # rt shifted: same z-score


@ADVANTAGES.register("maxk_offpolicy")
def maxk_offpolicy_advantages(rewards, *, k: int, log_ratio=None, delta_clip: float | None = 0.2,
                              zscore: bool = False, baseline: str | None = None, eps: float = 1e-6):
    """A_i = N * rt'_i, the first-order off-policy max@k weights (MATH.md §3, arXiv:2510.23393).

    rt'_i = (1/C(N,k)) sum_{|I|=k, i in I} (1 + sum_{l in I} delta_l) max_{j in I} r_j with
    delta = clamp(exp(log_ratio) - 1, -delta_clip, delta_clip) (detached; delta_clip=None: no clamp).
    log_ratio: (P, N) sequence log(pi_theta / pi_old) per sample; None or zeros gives exactly `maxk`.
    The gradient error against grad max@k(pi_theta) is O(delta^2). zscore=True returns the group z-score
    of rt' instead (like `maxk_zscore`). Recompute at every PPO pass (it is in USES_LOG_RATIO).

    baseline="loo" / "loo1" (beyond the paper) subtracts (1 + delta_i) b_i with b_i the baseline of
    `maxk_loo` (k max@k_hat of the others) / `maxk_loo1` (k max@(k-1)_hat of the others). b_i does not
    depend on y_i and 1 + delta_i is its importance ratio, so the subtracted term has expectation zero
    under the sampling policy (exactly, for unclamped delta): same O(delta^2) accuracy, less variance;
    at delta = 0 it is `maxk_loo` / `maxk_loo1` (up to rounding; zeros for constant groups).
    """
    if baseline not in (None, "loo", "loo1"):
        raise ValueError(f"maxk_offpolicy baseline must be None, 'loo' or 'loo1', got {baseline!r}")
    if baseline is not None and zscore:
        raise ValueError("maxk_offpolicy: choose zscore=True or a baseline, not both (the z-score centres)")
    lo, what = {None: (1, "max@k"), "loo": (1, "maxk_offpolicy baseline='loo'"),
                "loo1": (2, "maxk_offpolicy baseline='loo1'")}[baseline]
    r, k = _checked(rewards, k, lo=lo, hi_drop=int(baseline == "loo"), what=what, sorts=True)
    delta = _delta(log_ratio, r, None, check=False)  # clamped by the transform, NaN found in its result
    if zscore:
        return _zscore_unless_constant(offpolicy_reward_transform(r, delta, k, clip=delta_clip), r, eps)
    n = r.shape[-1]
    a = offpolicy_reward_transform(r, delta, k, scale=n, clip=delta_clip)
    if baseline is None:
        return a
    on_policy = ADVANTAGES.get(f"maxk_{baseline}")(r, k=k)  # N rt - b
    b = maxk_reward_transform(r, k, scale=n) - on_policy
    d = delta if delta_clip is None else delta.clamp(-delta_clip, delta_clip)
    return a - (1 + d) * b


# ----------------------------------------------------------------------------------------------------------
# Baselines the paper compares against
# ----------------------------------------------------------------------------------------------------------
@ADVANTAGES.register("grpo")
def grpo_advantages(rewards, *, k: int | None = None, log_ratio=None, eps: float = 1e-6):
    """A_i = (r_i - mean(r)) / (std(r) + eps), sample std (ddof=1) as TRL and verl use. Ignores k."""
    r, _ = _checked(rewards)
    return _zscore(r, eps)


@ADVANTAGES.register("dr_grpo")
def dr_grpo_advantages(rewards, *, k: int | None = None, log_ratio=None):
    """A_i = r_i - mean(r) (Dr. GRPO, no std normalisation). Ignores k."""
    r, _ = _checked(rewards)
    a = r - r.mean(-1, keepdim=True)
    return torch.where(_constant(r), torch.zeros_like(a), a)


@ADVANTAGES.register("rloo")
def rloo_advantages(rewards, *, k: int | None = None, log_ratio=None):
    """A_i = r_i - mean of the other N-1 rewards = (N r_i - sum r) / (N-1). Needs N >= 2. Ignores k."""
    r, _ = _checked(rewards)
    n = r.shape[-1]
    if n < 2:
        raise ValueError(f"rloo needs N >= 2 samples per group, got N = {n}")
    a = (n * r - r.sum(-1, keepdim=True)) / (n - 1)
    return torch.where(_constant(r), torch.zeros_like(a), a)


@ADVANTAGES.register("bon_max_mean")
def bon_max_mean_advantages(rewards, *, k: int | None = None, log_ratio=None):
    """A_i = r_i - mean(r) for samples tied at the group max, 0 elsewhere ("BoN-max mean"). Ignores k."""
    r, _ = _checked(rewards)
    at_max = r == r.amax(-1, keepdim=True)
    a = torch.where(at_max, r - r.mean(-1, keepdim=True), torch.zeros_like(r))
    return torch.where(_constant(r), torch.zeros_like(a), a)


@ADVANTAGES.register("bon_max_second")
def bon_max_second_advantages(rewards, *, k: int | None = None, log_ratio=None):
    """A_i = max(r) - (largest reward below the max) for samples at the max, 0 elsewhere and 0 when all
    rewards are equal ("BoN-max second"; ties at the max all get the credit). Ignores k."""
    r, _ = _checked(rewards)
    top = r.amax(-1, keepdim=True)
    below = torch.where(r < top, r, torch.full_like(r, -torch.inf)).amax(-1, keepdim=True)
    a = torch.where(r == top, top - below, torch.zeros_like(r))
    return torch.where(_constant(r), torch.zeros_like(a), a)


@ADVANTAGES.register("tang")
def tang_advantages(rewards, *, k: int | None = None, log_ratio=None):
    """A_i = r(N) - r(N-1) (best minus second best, order statistics) on the arg-max, 0 elsewhere.

    Tang et al. (arXiv:2503.19595). Ties at the max give 0 to all (second best = best). N * A is unbiased
    for grad max@N (it is `maxk_loo1` at k = N divided by N). Needs N >= 2. Ignores k.
    """
    r, _ = _checked(rewards)
    if r.shape[-1] < 2:
        raise ValueError(f"tang needs N >= 2 samples per group, got N = {r.shape[-1]}")
    top2 = r.topk(2, dim=-1).values
    return torch.where(r == top2[:, :1], top2[:, :1] - top2[:, 1:], torch.zeros_like(r))


@ADVANTAGES.register("passk_chen")
def passk_chen_advantages(rewards, *, k: int, log_ratio=None):
    """Chen et al. (arXiv:2508.10751) analytic pass@k advantage, 0/1 rewards only.

    rho = pass@k_hat(N, c, k), sigma = sqrt(rho (1 - rho)):  A_pos = (1 - rho) / sigma,
    A_neg = (1 - rho - C(N-c-1, k-1) / C(N-1, k-1)) / sigma (the mean over the k-subsets containing a
    sample of (max_I r - rho) / sigma). sigma = 0 (c = 0 or N - c < k) gives zeros. 1 <= k <= N.
    """
    r, k = _checked(rewards, k, what="passk_chen")
    if not bool(((r == 0) | (r == 1)).all()):
        raise ValueError("passk_chen needs binary rewards in {0, 1}; use maxk for continuous rewards")
    n = r.shape[-1]
    c = r.sum(-1).round().long()
    dt = torch.promote_types(r.dtype, torch.float32)  # per-group scalars: 1 - rho is tiny in half types
    rho = pass_at_k(n, c, k, dtype=dt)
    # C(N-c-1, k-1) / C(N-1, k-1) = 1 - pass@(k-1) of the other N-1 samples (c of them correct); 1 at k = 1
    q = 1 - pass_at_k(n - 1, c.clamp(max=n - 1), k - 1, dtype=dt) if k > 1 else torch.ones_like(rho)
    rho, q = rho.unsqueeze(-1), q.unsqueeze(-1)
    sigma = (rho * (1 - rho)).sqrt()
    ok = sigma > 0
    safe = torch.where(ok, sigma, torch.ones_like(sigma))
    a = torch.where(r == 1, (1 - rho) / safe, (1 - rho - q) / safe)
    return torch.where(ok, a, torch.zeros_like(a)).to(r.dtype)


@ADVANTAGES.register("maxk_offpolicy_exact")
def maxk_offpolicy_exact_advantages(rewards, *, k: int, log_ratio=None, delta_clip: float | None = 0.2,
                                    zscore: bool = False, eps: float = 1e-6):
    """A_i = N * rt''_i with the full product of ratios per k-subset (beyond the paper; exact for any rho).

    rt''_i = (1/C(N,k)) sum_{|I|=k, i in I} prod_{l in I} rho_l max_{j in I} r_j, rho = 1 + delta with delta
    as in `maxk_offpolicy` (clamped by delta_clip; keep delta_clip < 1 so rho > 0). Elementary symmetric
    polynomials, O(N^2 k) per group: meant for the paper's small N (8 - 64). zscore as in `maxk_offpolicy`.
    """
    r, k = _checked(rewards, k, sorts=True)
    rt = offpolicy_exact_reward_transform(r, 1 + _delta(log_ratio, r, delta_clip), k)
    return _zscore_unless_constant(rt, r, eps) if zscore else r.shape[-1] * rt
