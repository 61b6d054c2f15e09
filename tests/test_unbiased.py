"""Unbiasedness proved exactly: enumerate every N-tuple of samples from a small categorical policy.

For a policy pi = softmax(theta) over M outcomes with fixed rewards v, every tuple (y_1..y_N) has
probability prod_i pi(y_i) and grad_theta log pi(y_i) = onehot(y_i) - pi. So

    E[(1/N) sum_i A_i grad log pi(y_i)] = sum_tuples prob(tuple) (1/N) sum_i A_i (onehot(y_i) - pi)

is an exact finite sum, compared with the true gradient of max@k (autograd through the closed form
sum_v v (F(v)^k - F(v-)^k), tests/oracles.py) to 1e-10. A biased estimator fails the same test.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from maxk.advantages import ADVANTAGES
from oracles import categorical_max_at_k

VALUES = {
    "spread": [0.0, 0.3, 0.7, 1.0],
    "ties": [0.2, 0.9, 0.2],
    "binary": [0.0, 1.0, 0.0],
}
LOGITS = {"spread": [0.3, -0.5, 0.1, 0.4], "ties": [0.2, -0.3, 0.5], "binary": [0.4, -0.6, 0.1]}


def enumerate_tuples(m: int, n: int):
    """(M^N, N) long tensor of every N-tuple of outcome indices."""
    return torch.tensor(list(itertools.product(range(m), repeat=n)), dtype=torch.long)


def expected_gradient(advantage, logits, values, n: int, *, sum_not_mean: bool = False):
    """sum over tuples of prob * (1/N) sum_i A_i grad log pi(y_i), exactly (float64)."""
    p = torch.softmax(logits, -1)
    ys = enumerate_tuples(len(values), n)
    rewards = values[ys]  # (M^N, N): every tuple is one "prompt"
    prob = p[ys].prod(-1)  # (M^N,)
    a = advantage(rewards)  # (M^N, N)
    score = torch.nn.functional.one_hot(ys, len(values)).double() - p  # (M^N, N, M)
    per_tuple = (a.unsqueeze(-1) * score).sum(1) / (1 if sum_not_mean else n)
    return (prob.unsqueeze(-1) * per_tuple).sum(0)


def true_gradient(logits, values, k: int):
    theta = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(categorical_max_at_k(theta, values, k), theta)
    return g


CASES = [(v, n, k) for v in ("spread", "ties") for n, k in [(1, 1), (2, 1), (2, 2), (3, 2), (4, 2), (4, 3),
                                                             (4, 4), (5, 3)]]
CASES += [("binary", 6, 1), ("binary", 6, 4), ("ties", 6, 5)]


def _case(vname):
    return torch.tensor(LOGITS[vname], dtype=torch.float64), torch.tensor(VALUES[vname], dtype=torch.float64)


UNBIASED = ["maxk", "maxk_loo", "maxk_loo1", "maxk_offpolicy", "maxk_offpolicy_exact"]


def in_range(name: str, n: int, k: int) -> bool:
    return not ((name == "maxk_loo" and k > n - 1) or (name == "maxk_loo1" and k < 2))


UNBIASED_CASES = [(e, *c) for e in UNBIASED for c in CASES if in_range(e, *c[1:])]


@pytest.mark.parametrize("name, vname, n, k", UNBIASED_CASES)
def test_unbiased_for_grad_max_at_k(name, vname, n, k):
    logits, values = _case(vname)
    # on-policy: log_ratio = 0, so the off-policy entries must be unbiased too
    fn = ADVANTAGES.bind(name, k=k, log_ratio=None)
    got = expected_gradient(fn, logits, values, n)
    torch.testing.assert_close(got, true_gradient(logits, values, k), rtol=0, atol=1e-10)


@pytest.mark.parametrize("vname, n", [("spread", 2), ("spread", 4), ("ties", 5)])
def test_tang_times_n_is_unbiased_for_max_at_n(vname, n):
    logits, values = _case(vname)
    got = expected_gradient(ADVANTAGES.get("tang"), logits, values, n, sum_not_mean=True)
    torch.testing.assert_close(got, true_gradient(logits, values, n), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name, vname, n, k", [("grpo", "spread", 4, 2), ("maxk_zscore", "spread", 4, 2),
                                               ("dr_grpo", "spread", 4, 3), ("maxk_zscore", "spread", 5, 3),
                                               ("bon_max_mean", "spread", 4, 4),
                                               ("passk_chen", "binary", 6, 4)])
def test_biased_estimators_fail_the_same_test(name, vname, n, k):
    """The proof can fail: these are not (scaled) unbiased estimates of grad max@k."""
    logits, values = _case(vname)
    got = expected_gradient(ADVANTAGES.bind(name, k=k), logits, values, n)
    true = true_gradient(logits, values, k)
    assert (got - true).abs().max() > 1e-3, (got, true)
    if len(set(VALUES[vname])) > 2:  # with 3+ distinct rewards: not even parallel (no rescaling fixes it)
        assert torch.nn.functional.cosine_similarity(got, true, dim=0) < 0.9999


def test_dr_grpo_is_unbiased_for_grad_mean_reward_only():
    """Sanity of the harness: r - mean(r) is (N-1)/N times an unbiased estimate of grad max@1 = grad E[r]."""
    logits, values = _case("spread")
    got = expected_gradient(ADVANTAGES.get("dr_grpo"), logits, values, 4)
    torch.testing.assert_close(got, 3 / 4 * true_gradient(logits, values, 1), rtol=0, atol=1e-10)
