"""Math answers: binary reward, 1.0 when the completion's final answer is equivalent to the reference.

Uses `math-verify` (install `math-verify[antlr4_9_3]`, the extra that coexists with other antlr users):
`parse` extracts the answer (\\boxed{...} first, then LaTeX / plain expressions), `verify` checks
equivalence with sympy. Its own timeouts use SIGALRM, which only works in the main thread of a process.
So: in the main thread we call it with its timeouts; anywhere else (a trainer's or evaluator's worker
thread) the whole batch runs in a fresh spawned process, where it is the main thread, and that process is
killed if it outlives a wall-clock budget (a sympy call stuck in C ignores SIGALRM).

Status per answer: ok (verified, reward 0 or 1), no_answer (nothing parseable in the completion),
no_reference (the task has no `answer`), timeout, error.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout


def _verify_one(completion: str, answer: str | None, timeout_s: int) -> tuple[float, str, str]:
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    if answer is None:
        return 0.0, "no_reference", "task has no reference answer"
    try:
        gold = parse(answer if "$" in answer or "\\" in answer else f"${answer}$",
                     parsing_timeout=timeout_s, raise_on_error=True)
        pred = parse(completion, parsing_timeout=timeout_s, raise_on_error=True)
        if not pred:
            return 0.0, "no_answer", "no answer found in the completion"
        ok = verify(gold, pred, timeout_seconds=timeout_s, raise_on_error=True)
        return (1.0 if ok else 0.0), "ok", f"parsed {str(pred[-1])[:80]!r}"
    except TimeoutException:
        return 0.0, "timeout", "math-verify timed out"
    except Exception as e:  # malformed LaTeX and friends: the completion's problem, reward 0
        return 0.0, "error", f"{type(e).__name__}: {str(e)[:120]}"


def _verify_batch(pairs: list[tuple[str, str | None]], timeout_s: int) -> list[tuple[float, str, str]]:
    return [_verify_one(c, a, timeout_s) for c, a in pairs]


def verify_answers(pairs: list[tuple[str, str | None]], *, timeout_s: int = 5,
                   budget_s: float | None = None) -> list[tuple[float, str, str]]:
    """(reward, status, detail) for each (completion, reference answer) pair.

    timeout_s: math-verify's own per-call timeout (SIGALRM).  budget_s: wall clock for the whole batch
    when it runs in a subprocess (default 30 + 3 * timeout_s per pair); when exceeded every pair is
    scored 0 with status timeout.
    """
    if not pairs:
        return []
    if threading.current_thread() is threading.main_thread():
        return _verify_batch(pairs, timeout_s)
    budget = budget_s if budget_s is not None else 30.0 + 3.0 * timeout_s * len(pairs)
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return pool.submit(_verify_batch, pairs, timeout_s).result(timeout=budget)
    except FutureTimeout:
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        return [(0.0, "timeout", f"math-verify batch exceeded {budget:.0f} s")] * len(pairs)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
