"""A seeded, procedurally generated code-synthesis task family with hidden tests (the demo's data).

Each task hides a one-line integer function `f(x)` drawn from a small grammar of programs
(`x*3+1`, `max(x,4)`, `abs(x-2)`, `x%3`, ...). The prompt shows a few input/output examples as comments;
the completion is a complete short program

    def f(x):
        return x*3+1

and the reward is the fraction of hidden tests (`assert f(11) == 34`, at inputs not shown) it passes,
scored by maxk's sandboxed runner (`maxk.rewards.score_completions("code_tests", ...)`).

Why the family is ambiguous on purpose: two examples rarely pin down the program. Every prompt has at
least `min_consistent` (3) fitting programs of the grammar (4.1 on average), and the hidden tests separate
the hidden one from at least one of them. A policy that guesses one plausible program earns partial
credit (about half the hidden tests on average); a policy that spreads its samples over the plausible
programs finds the hidden one in a Best-of-N batch. This is where max@k (expected best of k) and mean
reward (max@1) pull apart.

Splits: the prompt space (242 example sets) is shuffled by the seed and cut into disjoint train (145) and
test (97) prompts (`split_prompts`). `make_tasks("train", every_target=True)` pairs each train prompt with
every plausible hidden program, so RL cannot memorise "the" answer to a prompt; `make_tasks("test")`
draws one hidden program per test prompt. Everything is a pure function of the seed.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import lru_cache

from maxk.rewards import Task

EXAMPLE_INPUTS = tuple(range(0, 16))  # shown examples are drawn from here
DOMAIN = tuple(range(0, 20))  # hidden tests are drawn from here, never at a shown input
PROGRAM_HEADER = "def f(x):\n    return "
_SAFE_GLOBALS = {"__builtins__": {}, "max": max, "min": min, "abs": abs}


@dataclass(frozen=True)
class Program:
    """One program of the grammar: its expression and its values on DOMAIN (computed in-process, only
    to *generate* tasks; completions are always scored in the sandbox)."""

    expr: str
    values: tuple[int, ...]

    @classmethod
    def of(cls, expr: str) -> Program:
        code = compile(expr, "<grammar>", "eval")
        return cls(expr, tuple(eval(code, _SAFE_GLOBALS, {"x": x}) for x in DOMAIN))  # noqa: S307

    def __call__(self, x: int) -> int:
        return self.values[x]

    @property
    def source(self) -> str:
        return f"{PROGRAM_HEADER}{self.expr}\n"


@lru_cache(maxsize=1)
def grammar() -> tuple[Program, ...]:
    """All programs of the grammar (50), each with a distinct behaviour on DOMAIN."""
    exprs = ["x*x"]
    exprs += [f"x+{c}" for c in range(1, 6)]
    exprs += [f"x*{c}" for c in range(2, 5)]
    exprs += [f"x*{c}+{d}" for c in range(2, 4) for d in range(1, 4)]
    exprs += [f"x*x+{d}" for d in range(1, 3)]
    exprs += [f"{c}-x" for c in range(5, 10, 2)]
    exprs += [f"x//{c}" for c in range(2, 4)]
    exprs += [f"x%{c}" for c in range(2, 5)]
    exprs += [f"max(x,{c})" for c in range(2, 8)]
    exprs += [f"min(x,{c})" for c in range(2, 8)]
    exprs += [f"abs(x-{c})" for c in range(2, 8)]
    exprs += [f"max(x,{c})*2" for c in range(3, 6)]
    exprs += [f"x%{c}*{d}" for c in (2, 3) for d in (2, 3)]
    seen: dict[tuple[int, ...], Program] = {}
    for e in exprs:
        p = Program.of(e)
        seen.setdefault(p.values, p)
    return tuple(seen.values())


@dataclass(frozen=True)
class TaskSpec:
    """The knobs of the family (defaults are what the demo uses)."""

    n_shown: int = 2  # input/output examples in the prompt
    n_hidden: int = 6  # hidden tests, at inputs not shown
    min_consistent: int = 3  # at least this many grammar programs fit the shown examples


DEFAULT_SPEC = TaskSpec()
Examples = tuple[tuple[int, int], ...]


def consistent_programs(examples: Examples) -> list[Program]:
    """The grammar programs that reproduce every shown (input, output) example."""
    return [p for p in grammar() if all(p(x) == y for x, y in examples)]


def prompt_text(examples: Examples) -> str:
    """The prompt: the examples as comments; the model writes the whole `def f(x)` program."""
    return "".join(f"# f({x}) = {y}\n" for x, y in examples)


@lru_cache(maxsize=8)
def prompt_space(spec: TaskSpec = DEFAULT_SPEC) -> tuple[Examples, ...]:
    """Every example set (sorted inputs from EXAMPLE_INPUTS, outputs of some grammar program) that at
    least `spec.min_consistent` programs fit, in a fixed order. A few hundred for the defaults."""
    out: dict[Examples, None] = {}
    for xs in itertools.combinations(EXAMPLE_INPUTS, spec.n_shown):
        for p in grammar():
            ex = tuple((x, p(x)) for x in xs)
            if ex not in out and len(consistent_programs(ex)) >= spec.min_consistent:
                out[ex] = None
    return tuple(out)


def split_prompts(
    seed: int, test_fraction: float = 0.4, spec: TaskSpec = DEFAULT_SPEC
) -> dict[str, list[Examples]]:
    """The prompt space shuffled by `seed` and cut in two: {"train": [...], "test": [...]}, disjoint."""
    space = list(prompt_space(spec))
    random.Random(seed).shuffle(space)
    n_test = round(len(space) * test_fraction)
    return {"test": space[:n_test], "train": space[n_test:]}


def make_task(examples: Examples, target: Program, rng: random.Random, spec: TaskSpec, task_id: str) -> Task:
    """The task "find the program behind `examples`" whose hidden program is `target` (one of the fitting
    programs): `n_hidden` tests at unshown inputs, chosen so that they separate the target from at least
    one other fitting program."""
    fitting = consistent_programs(examples)
    if target not in fitting:
        raise ValueError(f"target {target.expr!r} does not fit the examples {examples}")
    shown = {x for x, _ in examples}
    while True:
        hidden = sorted(rng.sample([x for x in DOMAIN if x not in shown], spec.n_hidden))
        if any(any(p(x) != target(x) for x in hidden) for p in fitting if p != target):
            break
    return Task(
        id=task_id,
        prompt=prompt_text(examples),
        tests=[f"assert f({x}) == {target(x)}" for x in hidden],
        entry_point="f",
        io_cases=[],
        reference=target.source,
        answer=None,
        meta={"examples": [list(e) for e in examples], "hidden": hidden, "n_fitting": len(fitting)},
    )


def make_tasks(
    split: str,
    *,
    seed: int = 0,
    n: int | None = None,
    every_target: bool = False,
    spec: TaskSpec = DEFAULT_SPEC,
) -> list[Task]:
    """Tasks of one split ("train" or "test") over the split's prompts (the first `n` if given).

    every_target=False: one task per prompt, its hidden program drawn uniformly from the fitting ones.
    every_target=True: one task per (prompt, fitting program) pair, so the same prompt recurs with each
    plausible hidden program; a policy trained on these cannot memorise "the" answer to a prompt, the
    ambiguity stays real (the trainer's tasks). Train and test prompts are disjoint; same seed, same tasks.
    """
    prompts = split_prompts(seed, spec=spec)
    if split not in prompts:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    chosen = prompts[split][:n] if n is not None else prompts[split]
    rng = random.Random(f"{split}-{seed}")
    tasks = []
    for i, ex in enumerate(chosen):
        fitting = consistent_programs(ex)
        targets = fitting if every_target else [rng.choice(fitting)]
        tasks += [make_task(ex, t, rng, spec, f"{split}-{seed}-{i}-{t.expr}") for t in targets]
    return tasks


def sft_solution(examples: Examples, rng: random.Random, noise: float = 0.2) -> str:
    """A sampled, imperfect solution for supervised fine-tuning: with probability 1 - `noise` a program
    drawn uniformly from those that fit the shown examples (diverse; it knows nothing of the hidden
    tests), else a random grammar program (usually wrong even on the shown examples)."""
    pool = consistent_programs(examples) if rng.random() >= noise else grammar()
    return rng.choice(pool).source
