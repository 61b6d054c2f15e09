"""Time every registered advantage estimator next to a bare torch.sort and the O(N^2) matrix forms.

    python benchmarks/bench_advantages.py [--threads 1] [--blocks 15] [--dtype float32] [--shapes 1024x8]

For each (P, N) and each function: timeit-style blocks of back-to-back calls (about 20 ms each), the block
alternated with a block of the reference `torch.sort` of the same (P, N) tensor, `--blocks` pairs; the
time per call is the fastest block's mean, and the ratio compares it with the sort's fastest block from the
same alternation. Times are the timing thread's CPU time (`time.thread_time`), so other processes on a
shared machine do not count; with --threads > 1 use a quiet machine instead.
Rows "(eager)" run `maxk` and `maxk_offpolicy` with the fused small-N kernels switched off (maxk._fused);
at N > 16 the two paths are the same code. The last rows are the O(N^2) matrix forms that the estimators
replace: `maxk` as sorted rewards times the (N, N) matrix W_ij = C(j-2, k-2) / C(N,k) (j > i), and the
off-policy weights w'_ij of MATH.md §3 built per prompt as a (P, N, N) tensor (chunked over P).
Targets (issue 2): maxk <= 2x sort, maxk_offpolicy <= 3x sort. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from maxk import _fused
from maxk.advantages import ADVANTAGES
from maxk.estimators import rank_weights

SKIP_LARGE = {"maxk_offpolicy_exact"}  # O(N^2 k) by design; timed only at N <= 64
BLOCK_S = 0.02


def block_mean(fn, calls: int) -> float:
    """Mean CPU seconds of this thread per call over `calls` back-to-back calls (other processes' load
    on a shared machine does not count; torch runs single-threaded here, see --threads)."""
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - t0) / calls


def versus_sort(fn, sort, blocks: int) -> tuple[float, float]:
    """(seconds per call of fn, of sort): fastest block means over `blocks` alternating block pairs."""
    fn(), sort()  # warm-up (caches, allocator, compiled kernels)
    calls = {f: max(1, int(BLOCK_S / max(block_mean(f, 3), 1e-7))) for f in (fn, sort)}
    best = {fn: float("inf"), sort: float("inf")}
    for _ in range(blocks):
        for f in (sort, fn):
            best[f] = min(best[f], block_mean(f, calls[f]))
    return best[fn], best[sort]


def eager(fn):
    """fn with the fused small-N kernels switched off."""
    def run():
        with _fused.disabled():
            return fn()
    return run


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


def bench_shape(p: int, n: int, k: int, dtype, blocks: int, g: torch.Generator) -> list[tuple]:
    """(name, seconds per call, ratio to the sort) rows for one (P, N); the first row is the bare sort."""
    r = torch.rand(p, n, generator=g).to(dtype)
    lr = (0.1 * torch.randn(p, n, generator=g)).to(dtype)
    delta = torch.expm1(lr).clamp(-0.2, 0.2)
    # the matrix forms compute the same numbers (guards the comparison)
    torch.testing.assert_close(matrix_maxk(r, k), ADVANTAGES.get("maxk")(r, k=k), rtol=1e-3, atol=1e-4)
    offpolicy = ADVANTAGES.get("maxk_offpolicy")(r, k=k, log_ratio=lr)
    torch.testing.assert_close(matrix_offpolicy(r, delta, k), offpolicy, rtol=1e-3, atol=1e-4)
    sort = functools.partial(r.sort, dim=-1)
    fns = {}
    for name in ADVANTAGES.names():
        if name in SKIP_LARGE and n > 64:
            continue
        rr = (r > 0.5).to(dtype) if name == "passk_chen" else r
        fns[name] = functools.partial(ADVANTAGES.bind(name, k=k, log_ratio=lr), rr)
        if name in ("maxk", "maxk_offpolicy") and n <= _fused.MAX_N:
            fns[f"{name} (eager)"] = eager(fns[name])
    fns["matrix form O(N^2): maxk"] = lambda: matrix_maxk(r, k)
    fns["matrix form O(N^2): maxk_offpolicy"] = lambda: matrix_offpolicy(r, delta, k)
    rows = [("torch.sort (reference)", 0.0, 1.0)]
    for name, fn in fns.items():
        blocks_here = blocks if n <= 64 or "matrix" not in name else 2  # the dense (P, N, N) form takes s
        t, t_sort = versus_sort(fn, sort, blocks_here)
        rows.append((name, t, t / t_sort))
        rows[0] = ("torch.sort (reference)", min(rows[0][1] or t_sort, t_sort), 1.0)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noisy)")
    ap.add_argument("--blocks", type=int, default=15, help="alternating (sort, estimator) block pairs")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--k", type=int, default=4, help="k for the max@k estimators (clipped to N-1)")
    ap.add_argument("--shapes", nargs="*", default=["1024x8", "1024x64", "4096x256"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    kernels = "on" if _fused.library() is not None else "off (no C compiler)"
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.dtype}, k = {args.k}, "
          f"fastest of {args.blocks} blocks alternated with the sort, fused small-N kernels {kernels}")
    for shape in args.shapes:
        p, n = (int(x) for x in shape.split("x"))
        rows = bench_shape(p, n, min(args.k, n - 1), getattr(torch, args.dtype), args.blocks, g)
        print(f"\n(P, N) = ({p}, {n})")
        print(f"| {'estimator':<36} | {'ms/call':>9} | {'x sort':>7} |")
        print(f"|{'-' * 38}|{'-' * 10}:|{'-' * 8}:|")
        for name, t, ratio in rows:
            print(f"| {name:<36} | {1e3 * t:9.3f} | {ratio:7.2f} |")
        ratio = {name: x for name, _, x in rows}
        print(f"targets: maxk {ratio['maxk']:.2f}x sort (<= 2), "
              f"maxk_offpolicy {ratio['maxk_offpolicy']:.2f}x (<= 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
