"""maxk._fused: the compiled small-N kernels compute what the eager path computes.

The exact-enumeration and brute-force tests elsewhere run at N <= 16, so on a machine with a C compiler
they exercise the kernels; here both paths are checked against the brute-force definitions and against
each other, with ties, NaN/inf, clamping, every N up to the kernel's limit, and the fallbacks.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil

import pytest
import torch

from maxk import _fused
from maxk.advantages import ADVANTAGES
from maxk.estimators import maxk_reward_transform, offpolicy_reward_transform
from oracles import brute_offpolicy_rt, brute_rt

needs_kernel = pytest.mark.skipif(_fused.library() is None, reason="no C compiler: the fused kernels are off")


def grid(p: int, n: int, seed: int, dtype=torch.float64, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(p, n, generator=g, dtype=torch.float64)
    if ties:
        r = (r * 3).floor() / 3  # values in {0, 1/3, 2/3}: many ties
    delta = 0.3 * (2 * torch.rand(p, n, generator=g, dtype=torch.float64) - 1)
    return r.to(dtype), delta.to(dtype)


@pytest.mark.parametrize("n", range(1, _fused.MAX_N + 1))
def test_sorting_network_sorts_every_zero_one_input(n):
    # the 0-1 principle: a comparator network that sorts every 0/1 sequence sorts every sequence
    pairs = _fused.network(n).tolist()
    assert all(0 <= a < b < n for a, b in pairs)
    bits = torch.arange(2**n).unsqueeze(-1).bitwise_right_shift(torch.arange(n)).bitwise_and(1)  # (2^n, n)
    for a, b in pairs:
        hi, lo = torch.maximum(bits[:, a], bits[:, b]), torch.minimum(bits[:, a], bits[:, b])
        bits[:, a], bits[:, b] = hi, lo
    assert bool((bits[:, :-1] >= bits[:, 1:]).all())


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "eager"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_both_paths_match_brute_force(fused, ties):
    for n in (1, 2, 3, 5, 8):
        r, delta = grid(3, n, seed=n, ties=ties)
        for k in range(1, n + 1):
            with _fused.disabled() if not fused else contextlib.nullcontext():
                rt = maxk_reward_transform(r, k)
                rt1 = offpolicy_reward_transform(r, delta, k)
            for p in range(r.shape[0]):
                assert rt[p].tolist() == pytest.approx(brute_rt(r[p].tolist(), k), abs=1e-13)
                want = brute_offpolicy_rt(r[p].tolist(), delta[p].tolist(), k)
                assert rt1[p].tolist() == pytest.approx(want, abs=1e-13)


def transforms(r, delta, k):
    n = r.shape[-1]
    return maxk_reward_transform(r, k, scale=n), offpolicy_reward_transform(r, delta, k, n, clip=0.2)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_agree_with_eager_for_every_n_and_k(dtype):
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for n in range(1, _fused.MAX_N + 1):
        for ties in (False, True):
            r, delta = grid(61, n, seed=100 + n, dtype=dtype, ties=ties)  # 61: a partial last block
            for k in sorted({1, 2, max(1, n // 2), n}):
                assert _fused.applies(r)
                fused = transforms(r, delta, k)
                with _fused.disabled():
                    assert not _fused.applies(r)
                    eager = transforms(r, delta, k)
                for a, b in zip(fused, eager):
                    assert a.dtype == b.dtype == dtype
                    torch.testing.assert_close(a, b, **tol)


@needs_kernel
def test_zero_delta_is_maxk_bit_for_bit_and_clip_clamps():
    r, delta = grid(32, 8, seed=7, dtype=torch.float32)
    base = maxk_reward_transform(r, 3, scale=8)
    assert torch.equal(offpolicy_reward_transform(r, torch.zeros_like(r), 3, 8), base)
    # clamping inside the kernel = clamping before the call
    clipped = offpolicy_reward_transform(r, 5 * delta, 3, 8, clip=0.1)
    torch.testing.assert_close(clipped, offpolicy_reward_transform(r, (5 * delta).clamp(-0.1, 0.1), 3, 8))


@needs_kernel
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", [0, 3, 7])
def test_non_finite_input_anywhere_is_an_error(bad, where):
    r, delta = grid(4, 8, seed=3, dtype=torch.float32)
    r[2, where] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        ADVANTAGES.get("maxk")(r, k=3)
    with pytest.raises(ValueError, match="NaN or inf"):
        ADVANTAGES.get("maxk_offpolicy")(r, k=3, log_ratio=torch.log1p(delta))
    r[2, where] = 0.5
    lr = torch.log1p(delta)
    lr[1, where] = math.nan
    with pytest.raises(ValueError, match="log_ratio"):
        ADVANTAGES.get("maxk_offpolicy")(r, k=3, log_ratio=lr)
    lr[1, where] = math.inf  # clamped to delta_clip: a valid (extreme) ratio
    assert torch.isfinite(ADVANTAGES.get("maxk_offpolicy")(r, k=3, log_ratio=lr)).all()
    with pytest.raises(ValueError, match="log_ratio"):
        ADVANTAGES.get("maxk_offpolicy")(r, k=3, log_ratio=lr, delta_clip=None)


def test_log_ratio_on_another_device_is_a_named_error():
    r = torch.rand(2, 4)
    lr = torch.zeros(2, 4, device="meta")  # any device but the rewards': the kernel must never see it
    with pytest.raises(ValueError, match="log_ratio is on meta but rewards are on cpu"):
        ADVANTAGES.get("maxk_offpolicy")(r, k=2, log_ratio=lr)
    with pytest.raises(ValueError, match="must match rewards"):
        offpolicy_reward_transform(r, lr, 2)
    with pytest.raises(ValueError, match="must match rewards"):
        offpolicy_reward_transform(r, torch.zeros(2, 3), 2)


def test_other_inputs_take_the_eager_path():
    r = torch.rand(4, _fused.MAX_N + 1, dtype=torch.float64)
    assert not _fused.applies(r)  # N above the kernel's limit
    assert not _fused.applies(r[:, :8].half())  # a dtype without a kernel
    assert not _fused.applies(r[0, :8])  # not (P, N)
    assert not _fused.applies(r[:, :8].requires_grad_())
    half = torch.rand(4, 8).half()
    torch.testing.assert_close(maxk_reward_transform(half, 3).float(), maxk_reward_transform(half.float(), 3),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler on this machine")
def test_with_a_compiler_the_kernels_load():
    # the kernel tests here skip when the library is None; with a compiler present that would hide a
    # broken build behind skips, so it must load
    assert _fused.library() is not None
    assert _fused.applies(torch.rand(3, 8)) and _fused.applies(torch.rand(3, 16, dtype=torch.float64))


def test_without_a_compiler_everything_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("MAXK_CACHE", str(tmp_path / "cache"))
    _fused.library.cache_clear()
    try:
        assert _fused.library() is None
        r, _ = grid(4, 8, seed=1)
        assert not _fused.applies(r)
        assert maxk_reward_transform(r, 2)[0].tolist() == pytest.approx(brute_rt(r[0].tolist(), 2), abs=1e-13)
    finally:
        _fused.library.cache_clear()


@needs_kernel
def test_a_fresh_cache_compiles_once(monkeypatch, tmp_path):
    monkeypatch.setenv("MAXK_CACHE", str(tmp_path))
    _fused.library.cache_clear()
    try:
        assert _fused.library() is not None
        built = list(tmp_path.glob("fused-*.so"))
        assert len(built) == 1  # the temporary file was renamed into place, nothing left behind
        assert not list(tmp_path.glob("tmp*"))
        assert _fused.library().maxk_fused_abi() == _fused.ABI
    finally:
        _fused.library.cache_clear()


def test_an_unwritable_cache_falls_back(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("MAXK_CACHE", str(blocked / "cache"))  # mkdir under a file fails
    _fused.library.cache_clear()
    try:
        assert _fused.library() is None
    finally:
        _fused.library.cache_clear()


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("MAXK_FUSED", "0")
    _fused.library.cache_clear()
    try:
        assert _fused.library() is None
    finally:
        _fused.library.cache_clear()

