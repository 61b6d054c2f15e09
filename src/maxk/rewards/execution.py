"""Run programs against a task's tests in the sandbox; one result dataclass per program; batches.

`run_tests(program, task)` runs the harness (maxk.rewards.harness) inside `run_sandboxed` and turns its
report lines into a `ProgramResult`: tests passed, tests total, a status, per-test outcomes, a stderr tail.
`run_tests_batch(pairs)` does many at once on a bounded thread pool (each worker waits on one sandbox
run); several programs share one run's start-up, each still in its own processes and work directory.
One hostile program costs at most its own time limit: if it takes its run down (e.g. kills the harness),
the results already reported stand and the programs not yet finished are rerun without it.

Status, by priority: syntax_error (does not compile), no_tests (the task has none), error (the sandbox
itself failed), timeout (the whole run or some test hit its time limit), memory (some test ran out of
memory), crashed (the harness died, e.g. the program killed it), output_limit, ok (every test ran; the
program may still have failed some). Reward = passed / total; tests that never ran count as failed.
"""

from __future__ import annotations

import marshal
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
    total_timeout_s: float = 10.0
    """Wall-clock limit per program (all its tests); tests not reached count as failed."""
    guard: bool = True
    """Install the harness's audit-hook guard in every test process (see maxk.rewards.harness)."""
    workers: int = 0
    """Concurrent sandbox runs in a batch; 0: one per CPU available to this process."""
    chunk: int = 0
    """Programs per sandbox run (they share its start-up); 0: automatic (`chunk_size`); 1: one each."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Process limits and bubblewrap policy; its timeout_s is replaced by total_timeout_s."""

    def __post_init__(self):
        if self.test_timeout_s <= 0 or self.total_timeout_s <= 0:
            raise ValueError("test_timeout_s and total_timeout_s must be positive")
        if self.workers < 0 or self.chunk < 0:
            raise ValueError(f"workers and chunk must be >= 0, got {self.workers}, {self.chunk}")

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
    return _run_chunk([(program, task)], config)[0]


def _run_chunk(pairs: list[tuple[str, Task]], config: ExecConfig) -> list[ProgramResult]:
    """Several programs in one sandbox run (one start-up); programs the run did not finish are rerun.

    If the run dies or times out, the programs fully reported keep their results; the one in progress
    is rerun alone (so its status is its own) and the rest as a new chunk. A chunk of one is final.
    """
    results: list[ProgramResult | None] = [None] * len(pairs)
    todo = []
    for idx, (_, task) in enumerate(pairs):
        if task.n_tests == 0:
            results[idx] = ProgramResult(0, 0, "no_tests", detail=f"task {task.id!r} has no tests")
        else:
            todo.append(idx)
    if not todo:
        return results  # type: ignore[return-value]
    programs = [{"program": pairs[i][0], "items": _items(pairs[i][1]), "entry_point": pairs[i][1].entry_point}
                for i in todo]
    spec = {"programs": programs, "test_timeout_s": config.test_timeout_s,
            "total_timeout_s": config.total_timeout_s, "guard": config.guard, "max_output_bytes": 1 << 20}
    wall = config.total_timeout_s * len(todo) + 5.0  # the harness enforces each program's own limit
    sandbox = replace(config.sandbox, timeout_s=wall, cpu_s=int(wall) + 1)
    try:
        proc = run_sandboxed(_harness_source(), stdin=marshal.dumps(spec), config=sandbox)
    except RuntimeError:
        raise  # bwrap="require" without bubblewrap: a configuration error, not a program's fault
    except Exception as e:  # e.g. out of file descriptors or disk: the sandbox failed, not the program
        for i in todo:
            results[i] = ProgramResult(0, pairs[i][1].n_tests, "error",
                                       detail=f"sandbox failure: {type(e).__name__}: {e}")
        return results  # type: ignore[return-value]
    reports = _parse_reports(proc, [pairs[i][1].n_tests for i in todo])
    unfinished = [i for i, rep in zip(todo, reports) if rep is None]
    for i, rep in zip(todo, reports):
        if rep is not None:
            results[i] = rep
    if unfinished and len(todo) == 1:
        results[todo[0]] = _unfinished_result(proc, pairs[todo[0]][1].n_tests)
    elif unfinished:
        first, rest = unfinished[0], unfinished[1:]
        results[first] = _run_chunk([pairs[first]], config)[0]
        if rest:
            for i, r in zip(rest, _run_chunk([pairs[i] for i in rest], config)):
                results[i] = r
    return results  # type: ignore[return-value]


def _scan(proc, totals: list[int]):
    """Per program: outcomes and details in test order, syntax error message, whether `done` came."""
    outcomes: list[list[str]] = [[] for _ in totals]
    details: list[list[str]] = [[] for _ in totals]
    syntax: list[str | None] = [None] * len(totals)
    done = [False] * len(totals)
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        f = line.split("\t")
        if len(f) < 2 or not f[1].isdigit() or int(f[1]) >= len(totals):
            continue
        j = int(f[1])
        in_order = len(f) == 5 and f[2] == str(len(outcomes[j])) and len(outcomes[j]) < totals[j]
        if f[0] == "test" and in_order:
            outcomes[j].append(f[3])
            if f[4]:
                details[j].append(f"test {f[2]}: {f[4]}")
        elif f[0] == "syntax_error" and len(f) == 3:
            syntax[j] = f[2]
        elif f[0] == "done":
            done[j] = True
    return outcomes, details, syntax, done


_WORST_FIRST = ("timeout", "memory", "crashed", "output_limit")


def _parse_reports(proc, totals: list[int]) -> list[ProgramResult | None]:
    """ProgramResult for each program whose report ended with `done`; None for the others."""
    outcomes, details, syntax, done = _scan(proc, totals)
    per_program = proc.duration_s / max(1, len(totals))
    out: list[ProgramResult | None] = []
    for j, total in enumerate(totals):
        common = dict(outcomes=tuple(outcomes[j]), duration_s=per_program, isolation=proc.isolation)
        passed = sum(o == "pass" for o in outcomes[j])
        if not done[j]:
            out.append(None)
        elif syntax[j] is not None:
            out.append(ProgramResult(0, total, "syntax_error", detail=syntax[j], **common))
        elif len(outcomes[j]) != total:
            out.append(ProgramResult(passed, total, "crashed", detail="incomplete report", **common))
        else:
            status = next((s for s in _WORST_FIRST if s in outcomes[j]), "ok")
            out.append(ProgramResult(passed, total, status, detail="; ".join(details[j][:5]), **common))
    return out


def _unfinished_result(proc, total: int) -> ProgramResult:
    """A lone program whose sandbox run ended without `done`: it timed out or killed the harness."""
    outcomes, details, _, _ = _scan(proc, [total])
    status = "timeout" if proc.timed_out else "crashed"
    tail = proc.stderr_tail[-300:].strip()
    detail = "; ".join(details[0][:5] + ([f"stderr: {tail}"] if tail else []))
    return ProgramResult(sum(o == "pass" for o in outcomes[0]), total, status, outcomes=tuple(outcomes[0]),
                         detail=detail or f"sandbox run ended without a report ({status})",
                         duration_s=proc.duration_s, isolation=proc.isolation)


def chunk_size(n_pairs: int, workers: int, max_chunk: int = 16) -> int:
    """Programs per sandbox run: about four runs per worker, at most `max_chunk`, at least 1."""
    return max(1, min(max_chunk, n_pairs // (4 * max(1, workers))))


def run_tests_batch(pairs: list[tuple[str, Task]], config: ExecConfig = ExecConfig()) -> list[ProgramResult]:
    """`run_tests` over many (program, task) pairs on a bounded pool; results in input order.

    Pairs are grouped into chunks (`chunk_size`) that share one sandbox start-up; each worker thread
    waits on one sandbox run at a time, so at most `config.n_workers()` run at once.
    """
    isolation_level(config.sandbox)  # fail fast on bwrap="require" before starting anything
    if not pairs:
        return []
    workers = config.n_workers()
    size = config.chunk if config.chunk else chunk_size(len(pairs), workers)
    chunks = [pairs[i: i + size] for i in range(0, len(pairs), size)]
    with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
        return [r for chunk in pool.map(lambda c: _run_chunk(c, config), chunks) for r in chunk]
