"""Reward functions by name: per-completion `Score`s for a batch, and plain float rewards.

Two registries with one signature each:
- `SCORERS`: name -> fn(completions: list[str], tasks: list[Task], **options) -> list[Score]; one task
  per completion; the batched, concurrent, status-carrying form the trainer and evaluation call through
  `score_completions(name, completions, tasks, **options)`.
- `REWARDS`: name -> fn(completions: list[str], task: Task, **options) -> list[float] in [0, 1]; the
  TRL-style plain callable for many completions of one task.
Names: code_tests (fraction of tests passed), code_tests_binary (1 when all pass), math_answer.

Options for the code rewards (all keyword, all optional): test_timeout_s, total_timeout_s, guard,
workers (ExecConfig fields), bwrap ("auto" | "require" | "off"), memory_mb, cpu_s, max_processes,
max_file_mb, max_open_files (SandboxConfig fields), extract (default True: run `extract_program` on each
completion; False: the completion is the program). For math_answer: timeout_s, budget_s.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from maxk.registry import Registry
from maxk.rewards.execution import ExecConfig, run_tests_batch
from maxk.rewards.extract import extract_program
from maxk.rewards.math_answer import verify_answers
from maxk.rewards.sandbox import SandboxConfig, isolation_level
from maxk.rewards.tasks import Task

log = logging.getLogger("maxk.rewards")


@dataclass(frozen=True)
class Score:
    """The reward of one completion and how it came about (never a string to parse)."""

    reward: float
    status: str
    passed: int | None = None
    total: int | None = None
    detail: str = ""


SCORERS: Registry = Registry("scorer")
REWARDS: Registry = Registry("reward")

_EXEC_FIELDS = {f.name for f in dataclasses.fields(ExecConfig)} - {"sandbox"}
_SANDBOX_FIELDS = {f.name for f in dataclasses.fields(SandboxConfig)} - {"timeout_s"}
_announced: set[str] = set()


def exec_config(**options) -> ExecConfig:
    """An ExecConfig from flat keyword options (see the module docstring); unknown keys are an error."""
    unknown = set(options) - _EXEC_FIELDS - _SANDBOX_FIELDS
    if unknown:
        known = ", ".join(sorted(_EXEC_FIELDS | _SANDBOX_FIELDS | {"extract"}))
        raise TypeError(f"unknown code reward option(s) {sorted(unknown)}; known: {known}")
    sandbox = SandboxConfig(**{k: v for k, v in options.items() if k in _SANDBOX_FIELDS})
    return ExecConfig(sandbox=sandbox, **{k: v for k, v in options.items() if k in _EXEC_FIELDS})


def announce_isolation(config: SandboxConfig) -> str:
    """Log once which isolation level is in force (raises if bubblewrap is required but missing)."""
    level = isolation_level(config)
    if level not in _announced:
        _announced.add(level)
        if level == "bwrap":
            log.info("code sandbox: bubblewrap (no network, private file system) + process limits")
        else:
            log.warning("code sandbox: process limits + audit-hook guard only (bubblewrap not in use); "
                        "install bubblewrap for file-system and network isolation")
    return level


def _code_scores(completions: list[str], tasks: list[Task], *, binary: bool, extract: bool = True,
                 **options) -> list[Score]:
    if len(completions) != len(tasks):
        raise ValueError(f"need one task per completion, got {len(completions)} completions and "
                         f"{len(tasks)} tasks")
    config = exec_config(**options)
    announce_isolation(config.sandbox)
    programs = [extract_program(c, t) if extract else c for c, t in zip(completions, tasks)]
    results = run_tests_batch(list(zip(programs, tasks)), config)
    scores = []
    for r in results:
        reward = float(r.total > 0 and r.passed == r.total) if binary else r.reward
        scores.append(Score(reward=reward, status=r.status, passed=r.passed, total=r.total, detail=r.detail))
    return scores


@SCORERS.register("code_tests")
def code_tests_scores(completions: list[str], tasks: list[Task], **options) -> list[Score]:
    """Fraction of a task's tests (assertions and io cases) the completion's program passes."""
    return _code_scores(completions, tasks, binary=False, **options)


@SCORERS.register("code_tests_binary")
def code_tests_binary_scores(completions: list[str], tasks: list[Task], **options) -> list[Score]:
    """1.0 when the completion's program passes every test of its task, else 0.0."""
    return _code_scores(completions, tasks, binary=True, **options)


@SCORERS.register("math_answer")
def math_answer_scores(completions: list[str], tasks: list[Task], *, timeout_s: int = 5,
                       budget_s: float | None = None) -> list[Score]:
    """1.0 when math-verify finds the completion's answer equivalent to `task.answer`, else 0.0."""
    if len(completions) != len(tasks):
        raise ValueError(f"need one task per completion, got {len(completions)} and {len(tasks)}")
    results = verify_answers([(c, t.answer) for c, t in zip(completions, tasks)],
                             timeout_s=timeout_s, budget_s=budget_s)
    return [Score(reward=r, status=s, passed=int(r), total=1, detail=d) for r, s, d in results]


def score_completions(reward_name: str, completions: list[str], tasks: list[Task], **options) -> list[Score]:
    """Score each completion against its own task (one task per completion) with reward `reward_name`.

    Runs concurrently on a bounded pool; a hostile program costs at most its own time limit.
    Unknown name: KeyError listing the known ones.
    """
    return SCORERS.get(reward_name)(list(completions), list(tasks), **options)


def _plain(name: str):
    def reward(completions: list[str], task: Task, **options) -> list[float]:
        return [s.reward for s in score_completions(name, completions, [task] * len(completions), **options)]

    reward.__name__ = name
    reward.__doc__ = f"Rewards in [0, 1] from scorer {name!r} for many completions of one task."
    return reward


for _name in ("code_tests", "code_tests_binary", "math_answer"):
    REWARDS.register(_name, _plain(_name))
