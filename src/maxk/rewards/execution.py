"""Run programs against a task's tests in the sandbox; one result dataclass per program; batches.

`run_tests(program, task)` runs the harness (maxk.rewards.harness) inside `run_sandboxed` and turns its
report lines into a `ProgramResult`: tests passed, tests total, a status, per-test outcomes, a stderr tail.
`run_tests_batch(pairs)` does many at once on a bounded thread pool (each worker waits on one child
process), so one hostile program costs at most its own time limit and never stalls or kills the batch.

Status, by priority: syntax_error (does not compile), no_tests (the task has none), error (the sandbox
itself failed), timeout (the whole run or some test hit its time limit), memory (some test ran out of
memory), crashed (the harness died, e.g. the program killed it), output_limit, ok (every test ran; the
program may still have failed some). Reward = passed / total; tests that never ran count as failed.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from maxk.rewards.sandbox import SandboxConfig, isolation_level, run_sandboxed
from maxk.rewards.tasks import Task

_HARNESS_SOURCE: str | None = None


def _harness_source() -> str:
    global _HARNESS_SOURCE
    if _HARNESS_SOURCE is None:
        with open(os.path.join(os.path.dirname(__file__), "harness.py"), encoding="utf-8") as f:
            _HARNESS_SOURCE = f.read()
    return _HARNESS_SOURCE


@dataclass(frozen=True)
class ExecConfig:
    """How programs are run against tests."""

    test_timeout_s: float = 3.0
    """Wall-clock limit per test (the harness kills that test's process)."""
    total_timeout_s: float = 30.0
    """Wall-clock limit per program (all its tests); tests not reached count as failed."""
    guard: bool = True
    """Install the harness's audit-hook guard in every test process (see maxk.rewards.harness)."""
    workers: int = 0
    """Concurrent programs in a batch; 0: one per CPU available to this process."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Process limits and bubblewrap policy; its timeout_s is replaced by total_timeout_s."""

    def __post_init__(self):
        if self.test_timeout_s <= 0 or self.total_timeout_s <= 0:
            raise ValueError("test_timeout_s and total_timeout_s must be positive")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")

    def n_workers(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class ProgramResult:
    """One program against one task's tests."""

    passed: int
    total: int
    status: str
    outcomes: tuple[str, ...] = ()
    detail: str = ""
    duration_s: float = 0.0
    isolation: str = ""

    @property
    def reward(self) -> float:
        """Fraction of tests passed, in [0, 1]; 0.0 when there are no tests."""
        return self.passed / self.total if self.total else 0.0


def _items(task: Task) -> list[dict]:
    return ([{"kind": "assert", "src": t} for t in task.tests]
            + [{"kind": "io", "input": c["input"], "output": c["output"]} for c in task.io_cases])


def run_tests(program: str, task: Task, config: ExecConfig = ExecConfig()) -> ProgramResult:
    """Run `program` against every test of `task`, each in its own process; never raises for the program.

    program: Python source (see maxk.rewards.extract for getting it from a completion).
    """
    items = _items(task)
    if not items:
        return ProgramResult(0, 0, "no_tests", detail=f"task {task.id!r} has no tests or io_cases")
    spec = {"program": program, "items": items, "entry_point": task.entry_point,
            "test_timeout_s": config.test_timeout_s, "guard": config.guard,
            "max_output_bytes": 1 << 20}
    sandbox = replace(config.sandbox, timeout_s=config.total_timeout_s,
                      cpu_s=max(1, int(config.test_timeout_s + 1)))
    try:
        proc = run_sandboxed(_harness_source(), stdin=json.dumps(spec).encode(), config=sandbox)
    except RuntimeError:
        raise  # bwrap="require" without bubblewrap: a configuration error, not a program's fault
    except Exception as e:  # e.g. out of file descriptors or disk: the sandbox failed, not the program
        return ProgramResult(0, len(items), "error", detail=f"sandbox failure: {type(e).__name__}: {e}")
    return _parse_report(proc, len(items))


def _parse_report(proc, total: int) -> ProgramResult:
    outcomes: list[str] = []
    details: list[str] = []
    syntax_error, done = None, False
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "i" in obj and obj["i"] == len(outcomes) and len(outcomes) < total:
            outcomes.append(str(obj.get("outcome")))
            if obj.get("detail"):
                details.append(f"test {obj['i']}: {obj['detail']}")
        elif "syntax_error" in obj:
            syntax_error = str(obj["syntax_error"])
        elif obj.get("done"):
            done = True
    passed = sum(o == "pass" for o in outcomes)
    tail = proc.stderr_tail[-500:]
    common = dict(outcomes=tuple(outcomes), duration_s=proc.duration_s, isolation=proc.isolation)
    if syntax_error is not None:
        return ProgramResult(0, total, "syntax_error", detail=syntax_error, **common)
    if proc.timed_out:
        status = "timeout"
    elif not done or len(outcomes) != total:
        status = "crashed"
    else:
        status = next((s for s in ("timeout", "memory", "crashed", "output_limit") if s in outcomes), "ok")
    detail = "; ".join(details[:5])
    if status != "ok" or tail:
        detail = (detail + ("\nstderr: " + tail if tail else "")).strip()
    return ProgramResult(passed, total, status, detail=detail, **common)


def run_tests_batch(pairs: list[tuple[str, Task]], config: ExecConfig = ExecConfig()) -> list[ProgramResult]:
    """`run_tests` over many (program, task) pairs on a bounded pool; results in input order."""
    isolation_level(config.sandbox)  # fail fast on bwrap="require" before starting anything
    if not pairs:
        return []
    with ThreadPoolExecutor(max_workers=min(config.n_workers(), len(pairs))) as pool:
        return list(pool.map(lambda pair: run_tests(pair[0], pair[1], config), pairs))
