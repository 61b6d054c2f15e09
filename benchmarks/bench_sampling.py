"""Time of one sampling step: softmax + `maxk.engines.draw` next to softmax + `torch.multinomial`.

    python benchmarks/bench_sampling.py
    python benchmarks/bench_sampling.py --device cuda

Rows x vocabulary sizes: the trainer benchmark's (32 rows, the tiny model's 346 tokens), 64 rows of a
32k vocabulary (Llama 2 / Mistral) and of 151,936 tokens (Qwen2). Both samplers get the same float32 scores;
`draw` gets one float64 uniform per row, multinomial draws its own. Each cell is the best of 5
blocks of back-to-back calls, in milliseconds per call; the blocks of the two samplers alternate.
"""

from __future__ import annotations

import argparse
import time

import torch

from maxk.engines import draw

SHAPES = [(32, 346), (64, 32_000), (64, 151_936)]


def per_call_ms(fn, calls: int, sync) -> float:
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - t0) / calls * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--blocks", type=int, default=5)
    a = p.parse_args()
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    print(f"device={a.device} threads={torch.get_num_threads()}; ms per call, best of {a.blocks} blocks")
    print("| rows x vocabulary | softmax + multinomial | softmax + draw | ratio |")
    print("|---|---:|---:|---:|")
    for rows, vocab in SHAPES:
        scores = torch.randn(rows, vocab, device=device, generator=gen) * 3
        v = 1 - torch.rand(rows, 1, dtype=torch.float64, device=device, generator=gen)
        calls = max(3, int(2e6 // (rows * vocab)))
        samplers = {
            "multinomial": lambda s=scores: torch.multinomial(s.softmax(dim=-1), 1),
            "draw": lambda s=scores, v=v: draw(s, v),
        }
        best = {name: float("inf") for name in samplers}
        for _ in range(a.blocks):
            for name, fn in samplers.items():
                best[name] = min(best[name], per_call_ms(fn, calls, sync))
        ratio = best["multinomial"] / best["draw"]
        print(f"| {rows} x {vocab:,} | {best['multinomial']:.3f} | {best['draw']:.3f} | {ratio:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
