"""Length-sorted micro-batches: the cut points are the best of all partitions (brute force), every row is
in exactly one pass, and no pass cuts a row short."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from maxk.batching import micro_batches, split_by_length


def area(lengths, ends, pass_cost=0) -> int:
    starts = [0, *ends[:-1]]
    return sum((e - s) * lengths[e - 1] for s, e in zip(starts, ends)) + pass_cost * len(ends)


def all_partitions(n: int, most: int):
    """Every way to cut n sorted rows into at most `most` non-empty runs, as lists of run ends."""
    for runs in range(1, min(most, n) + 1):
        for cuts in itertools.combinations(range(1, n), runs - 1):
            yield [*cuts, n]


def test_split_by_length_is_the_least_cost_of_all_partitions():
    """Padded area plus pass_cost per pass, against every way to cut the sorted rows."""
    rng = np.random.default_rng(0)
    for _, buckets, cost in itertools.product(range(30), range(1, 5), [0, 7, 40]):
        n = int(rng.integers(1, 9))
        lengths = np.sort(rng.choice([1, 2, 3, 5, 8, 13, 40], size=n))
        ends = split_by_length(lengths, buckets, cost)
        best = min(area(lengths, p, cost) for p in all_partitions(n, buckets))
        assert area(lengths, ends, cost) == best
        assert ends[-1] == n and len(ends) <= buckets and ends == sorted(set(ends))
        fewest = min(len(p) for p in all_partitions(n, buckets) if area(lengths, p, cost) == best)
        assert len(ends) == fewest  # ties go to fewer passes


def test_a_pass_is_split_off_only_when_it_skips_more_padding_than_it_costs():
    lengths = [60] + [64] * 31  # short completions that nearly all run to the limit
    assert split_by_length(lengths, 4, 0) == [1, 32]  # 4 positions saved
    assert split_by_length(lengths, 4, 4) == [32]  # saved = cost: the tie keeps one pass
    assert split_by_length(lengths, 4, 128) == [32]
    ragged = [10] * 16 + [256] * 16  # 3,936 positions saved by a second pass
    assert split_by_length(ragged, 4, 128) == [16, 32] and split_by_length(ragged, 4, 4000) == [32]


def test_split_by_length_edge_cases():
    assert split_by_length([], 3) == []
    assert split_by_length([7, 7, 7], 3) == [3]  # equal lengths: one pass
    assert split_by_length([1, 100], 1) == [2]
    assert split_by_length([1, 100], 2) == [1, 2]
    with pytest.raises(ValueError, match="ascending"):
        split_by_length([3, 1], 2)
    with pytest.raises(ValueError, match="buckets"):
        split_by_length([1], 0)


def test_micro_batches_cover_each_row_once_within_size_and_width():
    lengths = torch.tensor([5, 256, 11, 256, 130, 34, 256, 2, 181, 70, 256, 13])
    for size, buckets in [(4, 1), (4, 4), (12, 1), (12, 4), (5, 2)]:
        passes = micro_batches(lengths, size, buckets)
        rows = torch.cat([p for p, _ in passes])
        assert sorted(rows.tolist()) == list(range(len(lengths)))
        assert all(len(p) <= size and w == int(lengths[p].max()) for p, w in passes)
        assert len(passes) <= -(-len(lengths) // size) * buckets
    one = micro_batches(lengths, 12, 1)
    assert len(one) == 1 and one[0][1] == 256
    four = micro_batches(lengths, 12, 4)
    assert sum(len(p) * w for p, w in four) < 12 * 256  # the padding it exists to skip
    with pytest.raises(ValueError, match="size"):
        micro_batches(lengths, 0, 1)
