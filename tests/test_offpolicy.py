"""Off-policy max@k: samples from pi_old, gradient wanted at pi_theta = pi_old moved by epsilon.

Exact expectations by enumerating every N-tuple under pi_old (as in test_unbiased.py):
    estimate(eps) = sum_tuples pi_old(tuple) (1/N) sum_i A_i grad_theta log pi_theta(y_i)
with A from the estimator given the per-sample log-ratios log pi_theta(y_i) - log pi_old(y_i).
`maxk_offpolicy` (first order in delta) must have error O(eps^2) against grad max@k(pi_theta); the plain
ratio-weighted on-policy weights rho_i * N rt_i only O(eps); `maxk_offpolicy_exact` is exact.
Also: the O(N log N) suffix-sum form against the O(N^2) matrix form and brute force (test_advantages.py
holds the hypothesis version).
"""

from __future__ import annotations

import math

import pytest
import torch

from maxk.advantages import ADVANTAGES
from maxk.estimators import offpolicy_exact_reward_transform, offpolicy_reward_transform
from oracles import brute_offpolicy_exact_rt, categorical_max_at_k, matrix_offpolicy_rt
from test_unbiased import enumerate_tuples

F64 = dict(dtype=torch.float64)
VALUES = torch.tensor([0.0, 0.3, 0.6, 1.0], **F64)
THETA_OLD = torch.tensor([0.3, -0.5, 0.1, 0.4], **F64)
DIRECTION = torch.tensor([0.9, -0.4, 0.7, -1.1], **F64)  # generic: no symmetry hides first-order terms


def offpolicy_error(advantage, eps: float, n: int, k: int) -> float:
    """|E_old[(1/N) sum_i A_i grad log pi_theta(y_i)] - grad max@k(pi_theta)|_inf, exactly."""
    theta = THETA_OLD + eps * DIRECTION
    p_old, p_new = torch.softmax(THETA_OLD, -1), torch.softmax(theta, -1)
    ys = enumerate_tuples(len(VALUES), n)
    rewards = VALUES[ys]
    log_ratio = (p_new.log() - p_old.log())[ys]  # (M^N, N) sequence log-ratio of each sample
    a = advantage(rewards, log_ratio)
    score = torch.nn.functional.one_hot(ys, len(VALUES)).double() - p_new
    est = (p_old[ys].prod(-1).unsqueeze(-1) * (a.unsqueeze(-1) * score).sum(1) / n).sum(0)
    t = theta.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(categorical_max_at_k(t, VALUES, k), t)
    return float((est - true).abs().max())


def first_order(k):
    return lambda r, lr: ADVANTAGES.get("maxk_offpolicy")(r, k=k, log_ratio=lr, delta_clip=None)


def exact(k):
    return lambda r, lr: ADVANTAGES.get("maxk_offpolicy_exact")(r, k=k, log_ratio=lr, delta_clip=None)


def plain_ratio_weighted(k):
    return lambda r, lr: lr.exp() * ADVANTAGES.get("maxk")(r, k=k)


EPS = [0.2, 0.1, 0.05, 0.025]


@pytest.mark.parametrize("n, k", [(3, 2), (4, 2), (4, 3), (5, 3)])
def test_first_order_error_shrinks_quadratically_plain_only_linearly(n, k):
    off = [offpolicy_error(first_order(k), e, n, k) for e in EPS]
    plain = [offpolicy_error(plain_ratio_weighted(k), e, n, k) for e in EPS]
    off_order = [math.log2(a / b) for a, b in zip(off, off[1:])]
    plain_order = [math.log2(a / b) for a, b in zip(plain, plain[1:])]
    assert all(1.8 < o < 2.2 for o in off_order), (off, off_order)  # error ~ eps^2
    assert all(0.8 < o < 1.2 for o in plain_order), (plain, plain_order)  # error ~ eps
    assert all(a < b for a, b in zip(off, plain))


@pytest.mark.parametrize("baseline", ["loo", "loo1"])
@pytest.mark.parametrize("n, k", [(3, 2), (4, 2), (4, 3), (5, 3)])
def test_a_leave_one_out_baseline_adds_exactly_zero_in_expectation(baseline, n, k):
    # (1 + delta_i) b_i grad log pi(y_i): b_i ignores y_i and 1 + delta_i is y_i's exact ratio, so its
    # expectation under pi_old is E[b_i] * sum_y grad pi_theta(y) = 0: same error as without, eps^2
    def baselined(r, lr):
        return ADVANTAGES.get("maxk_offpolicy")(r, k=k, log_ratio=lr, delta_clip=None, baseline=baseline)

    with_baseline = [offpolicy_error(baselined, e, n, k) for e in EPS]
    without = [offpolicy_error(first_order(k), e, n, k) for e in EPS]
    assert with_baseline == pytest.approx(without, abs=1e-12)
    orders = [math.log2(a / b) for a, b in zip(with_baseline, with_baseline[1:])]
    assert all(1.8 < o < 2.2 for o in orders), (with_baseline, orders)


def test_baseline_options_reduce_to_the_on_policy_estimators_and_check_their_ranges():
    r = torch.rand(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for baseline in ("loo", "loo1"):
        got = ADVANTAGES.get("maxk_offpolicy")(r, k=3, baseline=baseline, log_ratio=torch.zeros_like(r))
        torch.testing.assert_close(got, ADVANTAGES.get(f"maxk_{baseline}")(r, k=3), rtol=0, atol=1e-14)
    constant = torch.full((2, 6), 0.25)
    assert torch.equal(ADVANTAGES.get("maxk_offpolicy")(constant, k=3, baseline="loo1"), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="k <= 5"):
        ADVANTAGES.get("maxk_offpolicy")(r, k=6, baseline="loo")
    with pytest.raises(ValueError, match="2 <= k"):
        ADVANTAGES.get("maxk_offpolicy")(r, k=1, baseline="loo1")
    with pytest.raises(ValueError, match="'loo' or 'loo1'"):
        ADVANTAGES.get("maxk_offpolicy")(r, k=2, baseline="mean")
    with pytest.raises(ValueError, match="not both"):
        ADVANTAGES.get("maxk_offpolicy")(r, k=2, baseline="loo1", zscore=True)


@pytest.mark.parametrize("n, k", [(3, 2), (4, 3), (5, 5)])
@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_exact_product_weights_have_no_error(n, k, eps):
    assert offpolicy_error(exact(k), eps, n, k) < 1e-10


def test_k1_offpolicy_is_the_ratio_weighted_reward():
    # k = 1: subsets are single samples, rho(I) = rho_i: first order (1 + delta_i) r_i is rho_i r_i exactly
    r = torch.rand(3, 5, generator=torch.Generator().manual_seed(0), **F64)
    lr = 0.1 * torch.randn(3, 5, generator=torch.Generator().manual_seed(1), **F64)
    got = ADVANTAGES.get("maxk_offpolicy")(r, k=1, log_ratio=lr, delta_clip=None)
    torch.testing.assert_close(got, lr.exp() * r)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 9])
def test_suffix_sum_form_equals_matrix_form_and_brute_force(n):
    g = torch.Generator().manual_seed(n)
    r = (torch.rand(4, n, generator=g, **F64) * 4).floor() / 4  # ties
    delta = 0.3 * torch.randn(4, n, generator=g, **F64)
    for k in range(1, n + 1):
        got = offpolicy_reward_transform(r, delta, k)
        for p in range(4):
            expect = matrix_offpolicy_rt(r[p].tolist(), delta[p].tolist(), k)
            assert got[p].tolist() == pytest.approx(expect, abs=1e-13)
        rho = 1 + delta.abs()
        got_exact = offpolicy_exact_reward_transform(r, rho, k)
        for p in range(4):
            expect = brute_offpolicy_exact_rt(r[p].tolist(), rho[p].tolist(), k)
            assert got_exact[p].tolist() == pytest.approx(expect, abs=1e-13)


def test_offpolicy_large_n_is_finite_and_float32_close():
    g = torch.Generator().manual_seed(5)
    r = torch.rand(2, 4096, generator=g).double()
    lr = 0.2 * torch.randn(2, 4096, generator=g).double()
    for k in (1, 8, 512, 4096):
        a64 = ADVANTAGES.get("maxk_offpolicy")(r, k=k, log_ratio=lr)
        a32 = ADVANTAGES.get("maxk_offpolicy")(r.float(), k=k, log_ratio=lr.float())
        assert torch.isfinite(a32).all()
        torch.testing.assert_close(a32.double(), a64, rtol=1e-4, atol=1e-4 * float(a64.abs().max()))


@pytest.mark.slow
def test_exact_offpolicy_at_n_512_is_finite_and_matches_first_order_for_small_delta():
    g = torch.Generator().manual_seed(6)
    r = torch.rand(2, 512, generator=g, **F64)
    lr = 1e-4 * torch.randn(2, 512, generator=g, **F64)
    for k in (2, 64, 256, 512):
        ex = ADVANTAGES.get("maxk_offpolicy_exact")(r, k=k, log_ratio=lr)
        fo = ADVANTAGES.get("maxk_offpolicy")(r, k=k, log_ratio=lr)
        assert torch.isfinite(ex).all()
        torch.testing.assert_close(ex, fo, rtol=1e-5, atol=1e-5 * k)
