"""Best-of-N curves, schema errors, diversity and paired tests (maxk.evaluation, no model needed)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.evaluation.compare import paired_comparison, wilcoxon_p
from maxk.evaluation.diversity import (
    distinct_fraction,
    distinct_rewards,
    mean_token_entropy,
    normalise_whitespace,
)
from maxk.evaluation.metrics import bootstrap_interval, curves_from_groups, curves_from_samples, default_ks
from maxk.evaluation.report import compare_markdown, metrics_markdown
from maxk.evaluation.schema import (
    PromptSamples,
    SamplesFormatError,
    read_records,
    read_samples,
    record_success,
)


def group(tid, rewards, successes=None, completions=None):
    r = np.asarray(rewards, dtype=np.float64)
    s = (r == 1.0) if successes is None else np.asarray(successes, dtype=bool)
    return PromptSamples(tid, r, s, completions or [None] * len(r), None, None, [None] * len(r))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def brute_max_at_k(r, k):
    """Mean over all k-subsets of the subset max (the definition)."""
    subsets = list(itertools.combinations(r, k))
    return sum(max(s) for s in subsets) / len(subsets)


# ---------------------------------------------------------------------------------------------- golden values
def test_golden_single_prompt():
    # N=4, r = [0.2, 0.5, 0.5, 1.0]; k=2: subset maxima .5 .5 1 .5 1 1 -> 4.5/6 = 0.75
    # one success (reward 1): pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5; k=4: max = 1, pass = 1
    c = curves_from_groups([group("a", [0.2, 0.5, 0.5, 1.0])], ks=[1, 2, 4], n_boot=0)
    assert c.per_prompt["max@k"][0].tolist() == pytest.approx([0.55, 0.75, 1.0])
    assert c.per_prompt["pass@k"][0].tolist() == pytest.approx([0.25, 0.5, 1.0])
    assert c.overall["max@k"].at(2) == pytest.approx((0.75, 0.75, 0.75))  # one prompt: no spread


def test_default_ks_are_powers_of_two():
    assert default_ks(1) == [1]
    assert default_ks(16) == [1, 2, 4, 8, 16]
    assert default_ks(20) == [1, 2, 4, 8, 16]
    with pytest.raises(ValueError):
        default_ks(0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=1, max_size=6), min_size=1, max_size=5)
)
def test_per_prompt_matches_brute_force_with_mixed_n(reward_lists):
    groups = [group(f"t{i}", r) for i, r in enumerate(reward_lists)]
    ks = [1, 2, 3, 4, 6]
    c = curves_from_groups(groups, ks=ks, n_boot=0)
    for p, r in enumerate(reward_lists):
        for j, k in enumerate(ks):
            got_max, got_pass = c.per_prompt["max@k"][p, j], c.per_prompt["pass@k"][p, j]
            if k > len(r):
                assert math.isnan(got_max) and math.isnan(got_pass)  # k > N: undefined, not 0
            else:
                assert got_max == pytest.approx(brute_max_at_k(r, k))
                wins = [1.0 if x == 1.0 else 0.0 for x in r]
                assert got_pass == pytest.approx(brute_max_at_k(wins, k))
    for j, k in enumerate(ks):  # overall = mean over prompts with N >= k; the others counted as excluded
        included = [brute_max_at_k(r, k) for r in reward_lists if len(r) >= k]
        assert c.overall["max@k"].n_prompts[j] == len(included)
        assert c.overall["max@k"].n_excluded[j] == len(reward_lists) - len(included)
        if included:
            assert c.overall["max@k"].mean[j] == pytest.approx(np.mean(included))
        else:
            assert math.isnan(c.overall["max@k"].mean[j])


def test_k_beyond_n_is_reported_not_dropped():
    groups = [group("a", [0, 1, 0, 1]), group("b", [1, 0])]
    c = curves_from_groups(groups, ks=[1, 2, 4, 8], n_boot=10)
    md = metrics_markdown(c)
    assert "| 4 |" in md and "1 with N<k excluded" in md
    assert "| 8 | n/a |" in md and "2 with N<k excluded" in md
    assert any("mixed N" in n for n in c.notes)
    rows = metrics_markdown(c, per_prompt=True).splitlines()
    # prompt b: N=2, r=[1, 0]: max@1 = 0.5, max@2 = 1; k=4, 8 undefined; pass@8 undefined
    assert "| b | 2 | 0.500 | 1.000 | n/a | n/a | n/a | n/a | 2 |" in rows  # no texts: distinct n/a


# ---------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_width_matches_normal_theory():
    # 400 prompts with values 0/1 half each: sd of the mean = 0.5/20 = 0.025; 95% half-width ~ 1.96 * 0.025
    values = np.array([0.0, 1.0] * 200)
    lo, hi = bootstrap_interval(values, n_boot=4000, confidence=0.95, seed=1)
    assert (hi - lo) / 2 == pytest.approx(1.96 * 0.025, rel=0.1)
    assert lo < 0.5 < hi


def test_bootstrap_deterministic_and_degenerate_cases():
    v = np.random.default_rng(0).random(30)
    assert bootstrap_interval(v, n_boot=500, confidence=0.9, seed=3) == bootstrap_interval(
        v, n_boot=500, confidence=0.9, seed=3
    )
    assert bootstrap_interval(np.array([0.3]), n_boot=500, confidence=0.9, seed=0) == (0.3, 0.3)
    assert all(math.isnan(x) for x in bootstrap_interval(np.zeros(0), n_boot=5, confidence=0.9, seed=0))


# ---------------------------------------------------------------------------------------------- schema
def test_success_rule():
    assert record_success({"reward": 0.2, "success": True})  # explicit wins
    assert record_success({"reward": 0.99, "passed": 3, "total": 3})
    assert not record_success({"reward": 1.0, "passed": 2, "total": 3})
    assert not record_success({"reward": 1.0, "passed": 0, "total": 0})  # no tests run: not a pass
    assert record_success({"reward": 1.0}) and not record_success({"reward": 0.999})


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"task_id": "a"}', "missing required field(s) ['reward']"),
        ('{"reward": 1.0}', "missing required field(s) ['task_id']"),
        ('{"task_id": "a", "reward": "high"}', "'reward' must be a finite number"),
        ('{"task_id": "a", "reward": NaN}', "'reward' must be a finite number"),
        ('{"task_id": "a", "reward": 1, "passed": 1.5}', "'passed' must be an integer"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "s.jsonl"
    path.write_text('{"task_id": "a", "reward": 0.5}\n\n' + line + "\n")
    with pytest.raises(SamplesFormatError) as e:
        read_records(path)
    assert f"{path}:3:" in str(e.value) and message in str(e.value)


def test_duplicate_sample_and_empty_and_missing(tmp_path):
    dup = write_jsonl(tmp_path / "d.jsonl", [{"task_id": "a", "sample_index": 0, "reward": 1}] * 2)
    with pytest.raises(SamplesFormatError, match=r"d.jsonl:2: duplicate sample .* \(first at line 1\)"):
        read_records(dup)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(SamplesFormatError, match="empty"):
        read_records(tmp_path / "e.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_records(tmp_path / "nope.jsonl")


def test_grouping_keeps_prompt_order_and_sorts_samples(tmp_path):
    rows = [
        {"task_id": "z", "sample_index": 1, "reward": 1.0},
        {"task_id": 7, "sample_index": 0, "reward": 0.0},
        {"task_id": "z", "sample_index": 0, "reward": 0.5},
    ]
    groups = read_samples(write_jsonl(tmp_path / "s.jsonl", rows))
    assert [g.task_id for g in groups] == ["z", "7"]
    assert groups[0].rewards.tolist() == [0.5, 1.0] and groups[1].n == 1


# ---------------------------------------------------------------------------------------------- diversity
def test_diversity_pieces():
    assert normalise_whitespace("def f():\n\treturn  1\n\n") == "def f(): return 1"
    assert distinct_fraction(["a  b", "a b\n", "a c", None]) == pytest.approx(2 / 3)
    assert math.isnan(distinct_fraction([None, None]))
    # token-weighted: (1.0 * 3 + 2.0 * 1) / 4 = 1.25; without counts the plain mean 1.5
    assert mean_token_entropy(np.array([1.0, 2.0]), np.array([3, 1])) == pytest.approx(1.25)
    assert mean_token_entropy(np.array([1.0, 2.0]), None) == pytest.approx(1.5)
    assert distinct_rewards(np.array([0.1, 0.1 + 1e-15, 0.3, 1.0])) == 3


def test_diversity_in_curves_from_file(tmp_path):
    rows = [
        {"task_id": "a", "reward": 0.0, "completion": "x=1", "entropy": 1.0, "num_tokens": 2},
        {"task_id": "a", "reward": 1.0, "completion": "x = 1", "entropy": 3.0, "num_tokens": 2},
        {"task_id": "b", "reward": 0.5, "completion": "y", "entropy": 0.5, "num_tokens": 1},
        {"task_id": "b", "reward": 0.5, "completion": "y ", "entropy": 0.5, "num_tokens": 1},
    ]
    c = curves_from_samples(write_jsonl(tmp_path / "s.jsonl", rows), n_boot=0)
    # 'x=1' and 'x = 1' differ (whitespace inside tokens is kept as one space), 'y' == 'y '
    assert c.diversity.distinct_fraction.tolist() == [1.0, 0.5]
    assert c.diversity.mean_entropy.tolist() == [2.0, 0.5]
    assert c.diversity.distinct_rewards.tolist() == [2, 1]
    assert c.label == "s"


# ---------------------------------------------------------------------------------------------- compare
def test_difference_formatting():
    from maxk.evaluation.report import fmt_diff

    assert [fmt_diff(x) for x in (0.0123, -0.0344, -1e-17, float("nan"))] == [
        "+0.012",
        "-0.034",
        "0.000",
        "n/a",
    ]


def test_wilcoxon_golden_and_ties():
    # 10 prompts, all improved with distinct magnitudes: exact two-sided p = 2 / 2^10
    d = np.arange(1, 11) / 100.0
    assert wilcoxon_p(d) == pytest.approx(2 / 2**10)
    assert wilcoxon_p(np.zeros(5)) == 1.0
    assert math.isnan(wilcoxon_p(np.zeros(0)))


def test_paired_comparison_uses_shared_prompts_only():
    a = curves_from_groups([group("p1", [0, 0]), group("p2", [0, 1]), group("only_a", [1, 1])], ks=[1, 2])
    b = curves_from_groups([group("p2", [1, 1]), group("p1", [0, 1]), group("only_b", [0, 0])], ks=[1, 2])
    res = {(r.metric, r.k): r for r in paired_comparison(a, b)}
    r = res[("max@k", 1)]
    # p1: 0 -> 0.5, p2: 0.5 -> 1.0; mean diff 0.5, both wins
    assert (r.n_prompts, r.wins, r.ties, r.losses) == (2, 2, 0, 0)
    assert r.mean_diff == pytest.approx(0.5) and r.mean_a == pytest.approx(0.25)
    md = compare_markdown([a, b])
    assert "### max@k" in md and "### pass@k" in md and "+0.500" in md
    assert "shares 2 prompts" in md
