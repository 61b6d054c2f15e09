"""Micro-batches of the update by completion length (pure).

A forward and backward over R rows padded to width W costs about R * W token positions, whatever the
rows' own lengths. Sorting a minibatch's rows by completion length and cutting each micro-batch into a
few passes of similar lengths, each only as wide as its longest row, skips most of the padding: in a
batch where half the completions run to the token limit and the rest end anywhere before it, a quarter
of the positions. The gradient is the same sum (the losses are normalised by the minibatch's totals, not
by the pass), up to the order of float additions.

    for rows, width in micro_batches(lengths, size=16, buckets=4, pass_cost=128):  # lengths: (R,)
        ...forward rows[:, :width]...

A pass has a fixed cost too (the model's Python, launching its kernels): on the CPU benchmark model one
more forward and backward costs about as much as 130-150 more token positions (14 ms against about
0.1 ms per position), so with completions that mostly run to the limit, splitting is slower than not.
The cut points weigh it: `pass_cost` token positions per pass (`algorithm.pass_cost_tokens`).
"""

from __future__ import annotations

import numpy as np
import torch


def split_by_length(lengths, buckets: int, pass_cost: float = 0.0) -> list[int]:
    """Where to cut ascending `lengths` into at most `buckets` runs of consecutive rows so that the padded
    area, sum over runs of (rows in the run) x (the run's longest length), plus `pass_cost` per run, is
    smallest. Returns the end index of each run (the last is len(lengths)); of equal costs, the one with
    fewer runs.

    Exact dynamic programme over cut points: area[k][j], the least area of the first j rows in k runs,
    is min over i < j of area[k - 1][i] + (j - i) * lengths[j - 1]; the answer is the k minimising
    area[k][n] + k * pass_cost.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if n == 0:
        return []
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    if np.any(np.diff(lengths) < 0):
        raise ValueError("lengths must be sorted in ascending order")
    j = np.arange(1, n + 1)
    i = np.arange(n)
    # run (i, j] costs (j - i) * lengths[j - 1]; inf where i >= j
    run = np.where(i[:, None] < j[None, :], (j[None, :] - i[:, None]) * lengths[j - 1][None, :], np.inf)
    area = np.full(n + 1, np.inf)
    area[0] = 0.0
    choices = []  # per number of runs k: the best start i of the last run ending at j
    best_k, best = 0, np.inf
    for k in range(1, min(buckets, n) + 1):
        total = area[:n, None] + run  # (start i, end j)
        start = total.argmin(axis=0)
        area = np.concatenate([[np.inf], total[start, j - 1]])
        choices.append(start)
        if area[n] + k * pass_cost < best:  # strictly smaller: ties keep fewer runs
            best_k, best = k, area[n] + k * pass_cost
    ends, end = [], n
    for k in range(best_k, 0, -1):
        ends.append(end)
        end = int(choices[k - 1][end - 1])
    return ends[::-1]


def micro_batches(
    lengths: torch.Tensor, size: int, buckets: int, pass_cost: float = 0.0
) -> list[tuple[torch.Tensor, int]]:
    """The passes of an update over R rows: (positions into `lengths`, width) pairs covering every row once.

    lengths: (R,) completion lengths (tokens up to and including EOS). Rows are sorted by length
    (stable); consecutive runs of at most `size` rows form the micro-batches, and each micro-batch is cut
    into at most `buckets` passes by `split_by_length` (a pass costing `pass_cost` token positions). A
    pass's width is its longest row (at least 1).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    lengths = lengths.detach().cpu().long()
    order = torch.sort(lengths, stable=True).indices
    out = []
    for micro in order.split(size):
        sorted_lengths = lengths[micro]
        start = 0
        for end in split_by_length(sorted_lengths.numpy(), buckets, pass_cost):
            out.append((micro[start:end], max(1, int(sorted_lengths[end - 1]))))
            start = end
    return out
