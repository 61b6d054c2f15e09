"""maxk.advantages: every registered estimator against its brute-force definition, ties, degenerate
groups, dtypes, N = 4096, and the contracts (clear ValueErrors)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.advantages import ADVANTAGES, BINARY_ONLY, USES_LOG_RATIO
from oracles import (
    brute_chen,
    brute_loo,
    brute_loo1_credit,
    brute_max_at_k,
    brute_offpolicy_rt,
    brute_rt,
    groups,
    matrix_offpolicy_rt,
)

FAST = settings(max_examples=60, deadline=None)
ALL = ["maxk", "maxk_loo", "maxk_loo1", "maxk_zscore", "maxk_offpolicy", "maxk_offpolicy_exact", "grpo",
       "dr_grpo", "rloo", "bon_max_mean", "bon_max_second", "tang", "passk_chen"]


def adv(name, rewards, **kw):
    return ADVANTAGES.get(name)(torch.tensor([rewards], dtype=torch.float64), **kw)[0].tolist()


def valid_k(name: str, n: int) -> int:
    return {"maxk_loo": max(1, n // 2), "maxk_loo1": max(2, n // 2)}.get(name, max(1, n // 2))


def test_registry_has_every_name_and_the_sets():
    assert set(ALL) <= set(ADVANTAGES.names())
    assert {"passk_chen"} == BINARY_ONLY
    assert {"maxk_offpolicy"} <= USES_LOG_RATIO <= set(ADVANTAGES.names())
    with pytest.raises(KeyError, match="maxk_loo1"):
        ADVANTAGES.get("maxk_typo")


# ---------------------------------------------------------------------------------------------- golden values
def test_golden_maxk_and_baselines():
    r = [0.1, 0.3, 0.5, 0.7, 0.9]
    # rt = [0.24, 0.24, 0.26, 0.30, 0.36] (tests/test_estimators.py); A = N * rt
    assert adv("maxk", r, k=2) == pytest.approx([1.2, 1.2, 1.3, 1.5, 1.8], abs=1e-14)
    # k = 1: A = r
    assert adv("maxk", r, k=1) == pytest.approx(r, abs=1e-15)
    # loo1 at k = 2: A_i = 5 rt_i - 2 * mean(others): 0.1: 1.2 - 2*0.6 = 0; 0.3: 1.2 - 2*0.55 = 0.1;
    # 0.5: 1.3 - 2*0.5 = 0.3; 0.7: 1.5 - 2*0.45 = 0.6; 0.9: 1.8 - 2*0.4 = 1.0
    assert adv("maxk_loo1", r, k=2) == pytest.approx([0.0, 0.1, 0.3, 0.6, 1.0], abs=1e-14)
    # loo at k = 2: A_i = 5 rt_i - 2 * max@2(others); max@2 of [0.3,0.5,0.7,0.9] = (0.5 + 1.4 + 2.7)/6 = 23/30
    assert adv("maxk_loo", r, k=2)[0] == pytest.approx(1.2 - 2 * 23 / 30, abs=1e-14)
    # grpo: mean 0.5, sample std sqrt(0.1) = 0.316228; dr_grpo r - 0.5; rloo 5/4 (r - 0.5)
    std = math.sqrt(0.1)
    assert adv("grpo", r, k=2, eps=0.0) == pytest.approx([(x - 0.5) / std for x in r], abs=1e-14)
    assert adv("dr_grpo", r) == pytest.approx([x - 0.5 for x in r], abs=1e-15)
    assert adv("rloo", r) == pytest.approx([1.25 * (x - 0.5) for x in r], abs=1e-15)
    # BoN-max mean: only the max gets 0.9 - 0.5; BoN-max second and Tang: 0.9 - 0.7 on the max
    assert adv("bon_max_mean", r) == pytest.approx([0, 0, 0, 0, 0.4], abs=1e-15)
    assert adv("bon_max_second", r) == pytest.approx([0, 0, 0, 0, 0.2], abs=1e-15)
    assert adv("tang", r) == pytest.approx([0, 0, 0, 0, 0.2], abs=1e-15)


def test_golden_ties_at_the_max():
    r = [0.2, 0.9, 0.9, 0.5]
    assert adv("bon_max_mean", r) == pytest.approx([0, 0.275, 0.275, 0], abs=1e-15)  # mean 0.625
    assert adv("bon_max_second", r) == pytest.approx([0, 0.4, 0.4, 0], abs=1e-15)  # 0.9 - 0.5
    assert adv("tang", r) == pytest.approx([0, 0, 0, 0], abs=1e-15)  # best - second best = 0


def test_golden_passk_chen():
    # N = 4, c = 2, k = 2: rho = 5/6, sigma = sqrt(5/36); A_pos = (1/6)/sigma;
    # A_neg = (1 - 5/6 - C(1,1)/C(3,1)) / sigma = (1/6 - 1/3)/sigma
    sigma = math.sqrt(5 / 36)
    got = adv("passk_chen", [1.0, 0.0, 1.0, 0.0], k=2)
    assert got == pytest.approx([1 / 6 / sigma, -1 / 6 / sigma, 1 / 6 / sigma, -1 / 6 / sigma], abs=1e-14)


# ---------------------------------------------------------------------------------------------- brute force
@FAST
@given(groups())
def test_maxk_is_n_times_brute_rt(case):
    r, k = case
    assert adv("maxk", r, k=k) == pytest.approx([len(r) * x for x in brute_rt(r, k)], abs=1e-12)


@FAST
@given(groups(min_n=2, k_below_n=1))
def test_maxk_loo_matches_brute_force(case):
    r, k = case
    n = len(r)
    expect = [n * a - k * b for a, b in zip(brute_rt(r, k), brute_loo(r, k))]
    assert adv("maxk_loo", r, k=k) == pytest.approx(expect, abs=1e-12)


@FAST
@given(groups(min_k=2))
def test_maxk_loo1_matches_per_subset_credit(case):
    r, k = case
    got = adv("maxk_loo1", r, k=k)
    assert got == pytest.approx(brute_loo1_credit(r, k), abs=1e-12)
    # zero for the k-1 smallest
    for i in sorted(range(len(r)), key=lambda i: r[i])[: k - 1]:
        assert got[i] == pytest.approx(0.0, abs=1e-12)


@FAST
@given(groups(min_n=2).flatmap(lambda c: st.tuples(st.just(c[0]), st.just(c[1]),
                                                      st.lists(st.floats(-0.5, 0.5), min_size=len(c[0]),
                                                               max_size=len(c[0])))))
def test_offpolicy_matches_brute_force_and_matrix_form(case):
    r, k, delta = case
    expect = brute_offpolicy_rt(r, delta, k)
    assert matrix_offpolicy_rt(r, delta, k) == pytest.approx(expect, abs=1e-12)  # the oracle of MATH.md §3
    log_ratio = torch.tensor([[math.log1p(d) for d in delta]], dtype=torch.float64)
    got = adv("maxk_offpolicy", r, k=k, log_ratio=log_ratio, delta_clip=None)
    assert got == pytest.approx([len(r) * x for x in expect], abs=1e-12)


@FAST
@given(groups(binary=True))
def test_passk_chen_matches_subset_definition(case):
    r, k = case
    assert adv("passk_chen", r, k=k) == pytest.approx(brute_chen(r, k), abs=1e-10)


def test_loo1_at_n_equals_k_is_k_times_tang():
    r = torch.rand(50, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r[:10] = (r[:10] * 3).floor() / 3  # ties
    torch.testing.assert_close(ADVANTAGES.get("maxk_loo1")(r, k=6), 6 * ADVANTAGES.get("tang")(r))


def test_zscore_variants():
    r = torch.rand(7, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rt = ADVANTAGES.get("maxk")(r, k=3) / 8
    z = (rt - rt.mean(-1, keepdim=True)) / (rt.std(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(ADVANTAGES.get("maxk_zscore")(r, k=3), z)
    torch.testing.assert_close(ADVANTAGES.get("maxk_offpolicy")(r, k=3, zscore=True), z)
    grpo = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(ADVANTAGES.get("grpo")(r), grpo)


# ---------------------------------------------------------------------------------------------- off-policy
def test_offpolicy_without_log_ratio_is_exactly_maxk():
    r = torch.rand(5, 9, generator=torch.Generator().manual_seed(2))
    base = ADVANTAGES.get("maxk")(r, k=4)
    assert torch.equal(ADVANTAGES.get("maxk_offpolicy")(r, k=4), base)
    assert torch.equal(ADVANTAGES.get("maxk_offpolicy")(r, k=4, log_ratio=torch.zeros_like(r)), base)


def test_offpolicy_clamps_delta():
    r = [0.1, 0.5, 0.9]
    huge = torch.tensor([[5.0, -5.0, 5.0]], dtype=torch.float64)
    clipped = torch.tensor([[math.log1p(0.2), math.log1p(-0.2), math.log1p(0.2)]], dtype=torch.float64)
    assert adv("maxk_offpolicy", r, k=2, log_ratio=huge) == pytest.approx(
        adv("maxk_offpolicy", r, k=2, log_ratio=clipped), abs=1e-14)


# -------------------------------------------------------------------------------------- ties, degenerate
@pytest.mark.parametrize("name", ALL)
def test_permutation_equivariant_with_ties(name):
    g = torch.Generator().manual_seed(3)
    r = (torch.rand(20, 7, generator=g, dtype=torch.float64) * 3).floor() / 3  # many ties
    if name in BINARY_ONLY:
        r = (r > 0.5).double()
    lr = 0.1 * torch.randn(20, 7, generator=g, dtype=torch.float64)
    fn = ADVANTAGES.bind(name, k=valid_k(name, 7), log_ratio=lr)
    perm = torch.randperm(7, generator=g)
    out = fn(r)
    torch.testing.assert_close(ADVANTAGES.get(name)(r[:, perm], k=valid_k(name, 7), log_ratio=lr[:, perm]),
                               out[:, perm], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
def test_degenerate_groups_give_zeros_never_nan(name, value):
    r = torch.full((3, 6), value, dtype=torch.float32)
    if name in BINARY_ONLY and value not in (0.0, 1.0):
        pytest.skip(f"{name} takes only 0/1 rewards")
    ks = {"maxk_loo": [1, 2, 5], "maxk_loo1": [2, 5, 6]}.get(name, [1, 2, 5, 6])
    for k in ks:
        out = ADVANTAGES.get(name)(r, k=k, log_ratio=torch.full_like(r, 0.05))
        assert not out.isnan().any()
        if name == "maxk":  # unbaselined: the exact value k * r (see the module docstring)
            torch.testing.assert_close(out, torch.full_like(r, k * value))
        elif name not in USES_LOG_RATIO:
            assert (out == 0).all(), (name, k, out)


def test_zscore_at_k_equal_n_is_zero():
    r = torch.rand(4, 5, generator=torch.Generator().manual_seed(4))
    assert (ADVANTAGES.get("maxk_zscore")(r, k=5) == 0).all()


# ----------------------------------------------------------------------------------------- dtypes, scale
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n, k", [(8, 4), (64, 2), (4096, 1), (4096, 3), (4096, 64), (4096, 2048),
                                  (4096, 4095)])
def test_float32_agrees_with_float64_and_is_finite(name, n, k):
    if (name == "maxk_loo1" and k < 2) or (name == "maxk_loo" and k > n - 1):
        pytest.skip(f"k = {k} is outside {name}'s range")
    if name == "maxk_offpolicy_exact" and n > 64:
        pytest.skip("O(N^2 k): its large-N check is the slow test")
    g = torch.Generator().manual_seed(n + k)
    r = torch.rand(2, n, generator=g).double()  # float32-representable: the same input in both precisions
    if name in BINARY_ONLY:
        r = (r > 0.9).double()
    lr = 0.1 * torch.randn(2, n, generator=g).double()
    a64 = ADVANTAGES.get(name)(r, k=k, log_ratio=lr)
    a32 = ADVANTAGES.get(name)(r.float(), k=k, log_ratio=lr.float())
    assert a32.dtype == torch.float32 and torch.isfinite(a32).all() and torch.isfinite(a64).all()
    scale = float(a64.abs().max()) + 1e-12
    torch.testing.assert_close(a32.double(), a64, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_and_stays_close(dtype):
    g = torch.Generator().manual_seed(7)
    r = torch.rand(4, 16, generator=g).to(dtype).double()  # representable in the half type
    lr = (0.1 * torch.randn(4, 16, generator=g)).to(dtype).double()
    for name in ALL:
        rr = (r > 0.5).double() if name in BINARY_ONLY else r
        low = ADVANTAGES.get(name)(rr.to(dtype), k=3, log_ratio=lr.to(dtype))
        ref = ADVANTAGES.get(name)(rr, k=3, log_ratio=lr)
        assert low.dtype == dtype and torch.isfinite(low).all()
        torch.testing.assert_close(low.double(), ref, rtol=0, atol=3e-2 * float(ref.abs().max()))


# ---------------------------------------------------------------------------------------------- contracts
@pytest.mark.parametrize(
    "name, rewards, kw, match",
    [
        ("maxk", [[0.1, 0.2]], dict(k=3), "1 <= k <= 2"),
        ("maxk", [[0.1, 0.2]], dict(k=0), "1 <= k <= 2"),
        ("maxk", [0.1, 0.2], dict(k=1), r"must be \(P, N\)"),
        ("maxk", [[[0.1, 0.2]]], dict(k=1), r"must be \(P, N\)"),
        ("maxk", [[0.1, float("nan")]], dict(k=1), "NaN or inf"),
        ("grpo", [[0.1, float("inf")]], {}, "NaN or inf"),
        ("maxk_loo1", [[float("-inf"), 0.2, 0.3]], dict(k=2), "NaN or inf"),
        ("maxk_offpolicy", [[0.3, float("nan"), 0.2]], dict(k=2), "NaN or inf"),
        ("maxk_zscore", [[float("inf"), 0.2]], dict(k=2), "NaN or inf"),
        ("maxk_loo", [[0.1, 0.2, 0.3]], dict(k=3), "maxk_loo needs 1 <= k <= 2"),
        ("maxk_loo", [[0.1]], dict(k=1), "maxk_loo needs"),
        ("maxk_loo1", [[0.1, 0.2, 0.3]], dict(k=1), "maxk_loo1 needs 2 <= k <= 3"),
        ("rloo", [[0.1]], {}, "N >= 2"),
        ("tang", [[0.1]], {}, "N >= 2"),
        ("passk_chen", [[0.0, 0.5]], dict(k=1), "binary rewards"),
        ("maxk_offpolicy", [[0.1, 0.2]], dict(k=1, log_ratio=torch.zeros(1, 3)), "log_ratio shape"),
        ("maxk_offpolicy", [[0.1, 0.2]], dict(k=1, log_ratio=torch.tensor([[0.0, math.nan]])), "NaN"),
    ],
)
def test_bad_input_is_a_clear_value_error(name, rewards, kw, match):
    with pytest.raises(ValueError, match=match):
        ADVANTAGES.get(name)(torch.tensor(rewards), **kw)


@pytest.mark.parametrize("name", ALL)
def test_no_prompts_gives_an_empty_result(name):
    assert ADVANTAGES.get(name)(torch.zeros(0, 4), k=2).shape == (0, 4)


def test_ignores_k_and_log_ratio_where_unused():
    r = torch.tensor([[0.1, 0.4, 0.8]])
    for name in ["grpo", "dr_grpo", "rloo", "bon_max_mean", "bon_max_second", "tang"]:
        torch.testing.assert_close(ADVANTAGES.get(name)(r, k=99, log_ratio=torch.ones(1, 3)),
                                   ADVANTAGES.get(name)(r))
    assert brute_max_at_k([0.1, 0.4, 0.8], 3) == 0.8
