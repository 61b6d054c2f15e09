"""The demo's task family, base-model SFT batches, memoised scoring and report logic (fast tests)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from maxk.demo.tasks import (
    DOMAIN,
    Program,
    consistent_programs,
    grammar,
    make_tasks,
    prompt_space,
    sft_solution,
    split_prompts,
)


def test_grammar_programs_are_distinct_functions():
    progs = grammar()
    assert len({p.values for p in progs}) == len(progs) >= 40
    # golden values, arithmetic by hand: x*3+1 at 4 = 13; abs(x-5) at 2 = 3; max(x,4)*2 at 1 = 8
    assert Program.of("x*3+1")(4) == 13
    assert Program.of("abs(x-5)")(2) == 3
    assert Program.of("max(x,4)*2")(1) == 8


def test_every_prompt_is_ambiguous():
    space = prompt_space()
    assert len(space) > 150
    for ex in space:
        assert len(consistent_programs(ex)) >= 3


def test_splits_are_disjoint_deterministic_and_seeded():
    a, b = split_prompts(0), split_prompts(0)
    assert a == b
    assert not set(a["train"]) & set(a["test"])
    assert set(a["train"]) | set(a["test"]) == set(prompt_space())
    assert split_prompts(1)["test"] != a["test"]
    train, test = make_tasks("train", seed=0, every_target=True), make_tasks("test", seed=0)
    assert not {t.prompt for t in train} & {t.prompt for t in test}
    assert [t.tests for t in make_tasks("test", seed=0)] == [t.tests for t in test]


def _target(task) -> Program:
    return Program.of(task.reference.split("return ", 1)[1].strip())


def test_tasks_hide_a_fitting_program_that_the_hidden_tests_single_out():
    for task in make_tasks("test", seed=3, n=40):
        examples = tuple(tuple(e) for e in task.meta["examples"])
        target = _target(task)
        fitting = consistent_programs(examples)
        assert target in fitting
        hidden = task.meta["hidden"]
        assert len(hidden) == len(task.tests) == 6
        assert not {x for x, _ in examples} & set(hidden)
        assert all(x in DOMAIN for x in hidden)
        # some other plausible program fails at least one hidden test
        assert any(any(p(x) != target(x) for x in hidden) for p in fitting if p != target)
        for line, x in zip(task.tests, hidden):
            assert line == f"assert f({x}) == {target(x)}"


def test_every_target_lists_each_fitting_program_once_per_prompt():
    tasks = make_tasks("train", seed=0, n=5, every_target=True)
    by_prompt: dict[str, list[str]] = {}
    for t in tasks:
        by_prompt.setdefault(t.prompt, []).append(t.reference)
    assert len(by_prompt) == 5
    for prompt, refs in by_prompt.items():
        examples = tuple(tuple(e) for e in next(t for t in tasks if t.prompt == prompt).meta["examples"])
        assert sorted(refs) == sorted(p.source for p in consistent_programs(examples))


def test_partial_credit_is_common_for_plausible_programs():
    """Fraction of hidden tests a uniformly chosen plausible program passes: strictly between 0 and 1
    on average (ambiguity), computed in-process from the program tables."""
    credits = []
    for task in make_tasks("test", seed=0, n=60):
        target = _target(task)
        for p in consistent_programs(tuple(tuple(e) for e in task.meta["examples"])):
            credits.append(np.mean([p(x) == target(x) for x in task.meta["hidden"]]))
    credits = np.array(credits)
    assert 0.3 < credits.mean() < 0.8
    assert ((credits > 0) & (credits < 1)).mean() > 0.3


def test_sft_solutions_follow_the_examples_except_for_noise():
    ex = prompt_space()[0]
    fitting = {p.source for p in consistent_programs(ex)}
    rng = random.Random(0)
    clean = [sft_solution(ex, rng, noise=0.0) for _ in range(200)]
    assert set(clean) == fitting  # uniform over the fitting set: every one appears in 200 draws
    noisy = [sft_solution(ex, rng, noise=1.0) for _ in range(200)]
    assert set(noisy) - fitting


def test_reference_programs_pass_in_the_real_sandbox_and_alternatives_get_partial_credit():
    from maxk.demo.experiment import MemoScorer

    tasks = make_tasks("test", seed=0, n=4)
    scorer = MemoScorer(workers=2)
    refs = scorer([t.reference for t in tasks], tasks)
    assert refs == [1.0] * 4
    alt = []
    for t in tasks:
        others = [p for p in consistent_programs(tuple(tuple(e) for e in t.meta["examples"]))
                  if p.source != t.reference]
        alt.append(others[0].source)
    got = scorer(alt, tasks)
    want = [np.mean([o(x) == _target(t)(x) for x in t.meta["hidden"]])
            for o, t in zip([Program.of(a.split("return ", 1)[1].strip()) for a in alt], tasks)]
    assert got == pytest.approx(want)
    assert scorer(["def f(x):\n    return (\n"], tasks[:1]) == [0.0]  # syntax error scores 0


def test_memo_scorer_runs_each_distinct_pair_once(monkeypatch):
    from maxk.demo import experiment
    from maxk.rewards import Score

    calls = []

    def fake(name, completions, tasks, **options):
        calls.append(list(completions))
        return [Score(reward=len(c) / 10, status="ok") for c in completions]

    monkeypatch.setattr(experiment, "score_completions", fake)
    tasks = make_tasks("test", seed=0, n=2)
    scorer = experiment.MemoScorer()
    out = scorer(["a", "bb", "a", "a"], [tasks[0], tasks[0], tasks[0], tasks[1]])
    assert out == [0.1, 0.2, 0.1, 0.1]
    assert calls == [["a", "bb", "a"]]  # ("a", task1) is a different pair from ("a", task0)
    scorer(["bb", "a"], [tasks[0], tasks[1]])
    assert len(calls) == 1 and scorer.requested == 6


def test_sft_batch_trains_only_on_the_solution_and_eos():
    from maxk.demo.base import BaseConfig, _sft_batch

    space = prompt_space()[:3]
    prompt_ids = [[1, 2, 3], [4, 5], [6]]
    program_ids = {p.source: [100 + j, 200 + j] for j, p in enumerate(grammar())}
    ids, labels, mask = _sft_batch(space, prompt_ids, program_ids, random.Random(0),
                                   BaseConfig(batch_size=8, noise=0.0), eos=9, pad=0)
    for row in range(8):
        n = int(mask[row].sum())
        seq = ids[row, :n].tolist()
        prompt = next(p for p in prompt_ids if seq[: len(p)] == p)
        assert seq[-1] == 9 and len(seq) == len(prompt) + 3  # prompt + 2 program tokens + eos
        assert (labels[row, : len(prompt)] == -100).all() and (labels[row, n:] == -100).all()
        assert labels[row, len(prompt) : n].tolist() == seq[len(prompt) :]


def _curves(label: str, rewards: np.ndarray, ks=(1, 2, 4)):
    from maxk.evaluation import PromptSamples, curves_from_groups

    groups = [PromptSamples(task_id=f"t{p}", rewards=r, successes=r == 1.0, completions=[str(x) for x in r])
              for p, r in enumerate(rewards)]
    return curves_from_groups(groups, list(ks), label=label, n_boot=50)


def test_goal_check_needs_all_three_conditions():
    from maxk.demo import report

    rng = np.random.default_rng(0)
    base = rng.choice([0.0, 0.5, 1.0], size=(30, 4))
    collapsed = np.repeat(base[:, :1] * 0 + 0.5, 4, axis=1)  # always 0.5: max@4 = 0.5 everywhere
    spread = base.copy()
    spread[:, 0] = 1.0  # one perfect sample per prompt: max@4 = 1, max@1 >= base's
    runs = [_curves("base", base), _curves("grpo", collapsed), _curves("maxk_offpolicy", spread)]
    met, text = report.goal_met(runs, 4)
    assert met and "MET" in text
    # the same, but off-policy's max@1 falls below the base's: not met
    worse = np.zeros_like(base)
    worse[:, 0] = 1.0
    runs_bad = [_curves("base", np.full_like(base, 0.6)), runs[1], _curves("maxk_offpolicy", worse)]
    assert not report.goal_met(runs_bad, 4)[0]
    # no difference from GRPO: not met
    assert not report.goal_met([runs[0], runs[1], _curves("maxk_offpolicy", collapsed)], 4)[0]
    assert [r.label for r in report.best_two(runs, 4)] == ["base", "maxk_offpolicy"]
    table = report.curve_table(runs, "max@k")
    assert table.splitlines()[0].startswith("| max@k | k=1 | k=2 | k=4 |") and "| grpo | 0.500 |" in table


def test_cli_refuses_methods_without_the_compared_pair(capsys):
    from maxk.demo.__main__ import main

    assert main(["--methods", "grpo", "maxk_loo1"]) == 2
    assert "maxk_offpolicy" in capsys.readouterr().err
    assert main(["--methods", "grpo", "maxk_offpolicy", "ppo"]) == 2
