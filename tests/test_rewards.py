"""Reward registries and score_completions: code (fraction / binary), math answers, contracts."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from maxk.rewards import REWARDS, SCORERS, Score, Task, exec_config, load_tasks, score_completions

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks.jsonl"
FAST = dict(test_timeout_s=2.0, total_timeout_s=10.0)


@pytest.fixture(scope="module")
def tasks():
    return {t.id: t for t in load_tasks(str(EXAMPLES))}


def test_registry_names_and_unknown_name():
    assert {"code_tests", "code_tests_binary", "math_answer"} <= set(REWARDS.names())
    assert set(SCORERS.names()) == set(REWARDS.names())
    with pytest.raises(KeyError, match="known: code_tests"):
        score_completions("nope", ["x"], [Task(id="a", prompt="")])


def test_reference_solutions_score_one(tasks):
    code = [t for t in tasks.values() if t.reference]
    scores = score_completions("code_tests", [t.reference for t in code], code, **FAST)
    assert all(isinstance(s, Score) for s in scores)
    assert [(s.reward, s.status, s.passed == s.total) for s in scores] == [(1.0, "ok", True)] * len(code)


def test_fraction_and_binary(tasks):
    add = tasks["add"]  # tests: (1,2)->3, (-1,1)->0, (0,0)->0, (2.5,0.5)->3.0
    wrong = "```python\ndef add(a, b):\n    return abs(a) + b\n```"  # fails only (-1, 1): 3/4
    frac = score_completions("code_tests", [wrong], [add], **FAST)[0]
    assert (frac.reward, frac.passed, frac.total) == (0.75, 3, 4)
    binary = score_completions("code_tests_binary", [wrong, add.reference], [add, add], **FAST)
    assert [s.reward for s in binary] == [0.0, 1.0]
    assert REWARDS.get("code_tests")([wrong, "no code"], add, **FAST) == [0.75, 0.0]


def test_io_task_and_prose_completion(tasks):
    t = tasks["reverse_words"]
    good = "Sure!\n```python\nprint(' '.join(input().split()[::-1]))\n```"
    scores = score_completions("code_tests", [good, "I cannot do that."], [t, t], **FAST)
    assert [s.reward for s in scores] == [1.0, 0.0]
    assert scores[1].status == "syntax_error"


def test_no_tests_and_contracts(tasks):
    s = score_completions("code_tests", ["print(1)"], [tasks["six_times_seven"]], **FAST)[0]
    assert (s.reward, s.status) == (0.0, "no_tests")
    with pytest.raises(ValueError, match="one task per completion"):
        score_completions("code_tests", ["a", "b"], [tasks["add"]])
    with pytest.raises(TypeError, match="unknown code reward option"):
        score_completions("code_tests", ["a"], [tasks["add"]], timeout=3)
    cfg = exec_config(bwrap="off", memory_mb=512, test_timeout_s=1.5, workers=3, chunk=1)
    got = (cfg.sandbox.bwrap, cfg.sandbox.memory_mb, cfg.test_timeout_s, cfg.n_workers(), cfg.chunk)
    assert got == ("off", 512, 1.5, 3, 1)


def test_isolation_is_announced(tasks, caplog, monkeypatch):
    from maxk.rewards import scoring

    monkeypatch.setattr(scoring, "_announced", set())
    with caplog.at_level(logging.INFO, logger="maxk.rewards"):
        score_completions("code_tests", ["x = 1"], [tasks["add"]], bwrap="off", **FAST)
    assert "process limits" in caplog.text


MATH = [("The product is \\boxed{42}.", "42", 1.0), ("so the answer is $\\frac{2}{4}$", "\\frac{1}{2}", 1.0),
        ("\\boxed{0.5}", "\\frac{1}{2}", 1.0), ("\\boxed{43}", "42", 0.0), ("no idea", "42", 0.0)]


def _math_scores():
    tasks = [Task(id=f"m{i}", prompt="", answer=a) for i, (_, a, _) in enumerate(MATH)]
    return score_completions("math_answer", [c for c, _, _ in MATH], tasks)


def test_math_answer_in_main_thread():
    scores = _math_scores()
    assert [s.reward for s in scores] == [r for _, _, r in MATH]
    assert scores[-1].status == "no_answer"
    missing = score_completions("math_answer", ["\\boxed{1}"], [Task(id="x", prompt="")])[0]
    assert (missing.reward, missing.status) == (0.0, "no_reference")


def test_math_answer_off_the_main_thread():
    """math-verify's SIGALRM timeouts need the main thread: from a worker thread it runs in a subprocess."""
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("scores", _math_scores()))
    worker.start()
    worker.join(timeout=120)
    assert [s.reward for s in out["scores"]] == [r for _, _, r in MATH]
