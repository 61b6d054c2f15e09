"""Time every registered advantage estimator next to a bare torch.sort and the O(N^2) matrix forms.

    python benchmarks/bench_advantages.py [--threads 1] [--repeats 20] [--dtype float32] [--shapes 1024x8]

For each (P, N) it prints, per estimator, the time per call (the minimum over repeats after a warm-up,
measured round-robin with the sort so that all see the same machine load; the minimum is the least
noisy statistic on a shared machine) and its ratio to `torch.sort` of the same (P, N) tensor.
The last rows are the O(N^2) matrix forms that the estimators replace: `maxk` as sorted rewards times
the (N, N) matrix W_ij = C(j-2, k-2) / C(N,k) (j > i), and the off-policy weights w'_ij of MATH.md §3
built per prompt as a (P, N, N) tensor (chunked over P to bound memory).
Targets (issue 2): maxk <= 2x sort, maxk_offpolicy <= 3x sort. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from maxk.advantages import ADVANTAGES
from maxk.estimators import rank_weights

SKIP_LARGE = {"maxk_offpolicy_exact"}  # O(N^2 k) by design; timed only at N <= 64


def measure(fns: dict, repeats: int, budget_s: float = 10.0) -> dict[str, float]:
    """Minimum seconds per call of each function, measured round-robin.

    Interleaving (sort, estimator 1, estimator 2, ..., sort, ...) exposes every function to the same
    machine load over the same window, so ratios to the sort stay meaningful on a busy machine. A
    function stops being timed after 3 calls once its calls have taken budget_s in total.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up (caches, allocator)
    for _ in range(repeats):
        for name, fn in fns.items():
            if len(times[name]) >= 3 and sum(times[name]) > budget_s:
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def matrix_maxk(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """N * rt via the dense (N, N) matrix: rt(i) = sum_j W_ij r(j) on sorted rewards, then unsorted."""
    n = rewards.shape[-1]
    r, order = rewards.sort(dim=-1)
    a = rank_weights(n, k, 0, dtype=r.dtype)
    b = rank_weights(n, k, 1, dtype=r.dtype)
    w = torch.diag(a) + torch.triu(b.expand(n, n), diagonal=1)  # W_ii = a_i, W_ij = b_j for j > i
    return torch.empty_like(r).scatter_(-1, order, n * (r @ w.T))


def matrix_offpolicy(rewards: torch.Tensor, delta: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    """N * rt' with the per-prompt (N, N) matrix w'_ij of MATH.md §3 (chunks of prompts)."""
    n = rewards.shape[-1]
    r, order = rewards.sort(dim=-1)
    d = delta.gather(-1, order)
    a, b, e = (rank_weights(n, k, drop, dtype=r.dtype) for drop in (0, 1, 2))
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    out = []
    for s in range(0, r.shape[0], chunk):
        rs, ds = r[s : s + chunk], d[s : s + chunk]
        p = ds.cumsum(-1) - ds  # P_j = sum_{l<j} delta_l
        di, dj, pj = ds.unsqueeze(-1), ds.unsqueeze(-2), p.unsqueeze(-2)
        w = b * (1 + di + dj) + e * (pj - di)  # (chunk, N, N), column j uses b_j, e_j
        w = torch.where(upper, w, torch.zeros_like(w))
        w = w + torch.diag_embed(a * (1 + ds) + b * p)
        out.append(n * (w @ rs.unsqueeze(-1)).squeeze(-1))
    return torch.empty_like(r).scatter_(-1, order, torch.cat(out))


def bench_shape(p: int, n: int, k: int, dtype, repeats: int, g: torch.Generator) -> list[tuple[str, float]]:
    """(name, seconds per call) rows for one (P, N); the first row is the bare sort."""
    r = torch.rand(p, n, generator=g).to(dtype)
    lr = (0.1 * torch.randn(p, n, generator=g)).to(dtype)
    delta = torch.expm1(lr).clamp(-0.2, 0.2)
    # the matrix forms compute the same numbers (guards the comparison)
    torch.testing.assert_close(matrix_maxk(r, k), ADVANTAGES.get("maxk")(r, k=k), rtol=1e-3, atol=1e-4)
    offpolicy = ADVANTAGES.get("maxk_offpolicy")(r, k=k, log_ratio=lr)
    torch.testing.assert_close(matrix_offpolicy(r, delta, k), offpolicy, rtol=1e-3, atol=1e-4)
    fns = {"torch.sort (reference)": lambda: r.sort(dim=-1)}
    for name in ADVANTAGES.names():
        if name in SKIP_LARGE and n > 64:
            continue
        rr = (r > 0.5).to(dtype) if name == "passk_chen" else r
        fns[name] = functools.partial(ADVANTAGES.bind(name, k=k, log_ratio=lr), rr)
    fns["matrix form O(N^2): maxk"] = lambda: matrix_maxk(r, k)
    fns["matrix form O(N^2): maxk_offpolicy"] = lambda: matrix_offpolicy(r, delta, k)
    rows = list(measure(fns, repeats).items())
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noisy)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--k", type=int, default=4, help="k for the max@k estimators (clipped to N-1)")
    ap.add_argument("--shapes", nargs="*", default=["1024x8", "1024x64", "4096x256"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.dtype}, k = {args.k}, "
          f"min of {args.repeats} calls")
    for shape in args.shapes:
        p, n = (int(x) for x in shape.split("x"))
        rows = bench_shape(p, n, min(args.k, n - 1), getattr(torch, args.dtype), args.repeats, g)
        t_sort = rows[0][1]
        print(f"\n(P, N) = ({p}, {n})")
        print(f"| {'estimator':<36} | {'ms/call':>9} | {'x sort':>7} |")
        print(f"|{'-' * 38}|{'-' * 10}:|{'-' * 8}:|")
        for name, t in rows:
            print(f"| {name:<36} | {1e3 * t:9.3f} | {t / t_sort:7.2f} |")
        ratio = {name: t / t_sort for name, t in rows}
        print(f"targets: maxk {ratio['maxk']:.2f}x sort (<= 2), "
              f"maxk_offpolicy {ratio['maxk_offpolicy']:.2f}x (<= 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
