"""The samples.jsonl schema: one JSON object per sample, read into per-prompt groups (plumbing).

A samples file is what `maxk eval` writes and what `maxk metrics` / `maxk compare` read, so samples
produced by vLLM, verl or any other harness can be scored the same way. One line per sample:

    required  task_id      str (ints are accepted and turned into str)  which prompt the sample answers
              reward       finite number (maxk's rewards are in [0, 1])  the sample's reward
    optional  sample_index int    position within its prompt; (task_id, sample_index) must be unique
              prompt_index int    position of the prompt in the task file (written by `maxk eval`)
              completion   str    the generated text (diversity: distinct programs)
              status       str    scorer status, e.g. "ok", "fail", "timeout", "syntax_error"
              passed,total int|null  unit tests passed / run
              success      bool   binary outcome for pass@k; when absent it is passed == total > 0 if
                                  both are given, else reward == 1
              num_tokens   int    completion length in tokens
              entropy      number mean per-token entropy of the sample's completion (nats)

Samples of one prompt need not be contiguous; prompts keep the order of their first line. Different
prompts may have different numbers of samples N (metrics handle them per prompt).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REQUIRED_FIELDS = ("task_id", "reward")


class SamplesFormatError(ValueError):
    """A samples file that does not follow the schema; the message names the file and line."""


@dataclass
class PromptSamples:
    """All samples of one prompt. Arrays have shape (N,), N = number of samples of this prompt."""

    task_id: str
    rewards: np.ndarray
    successes: np.ndarray
    completions: list[str | None] = field(default_factory=list)
    entropies: np.ndarray | None = None
    num_tokens: np.ndarray | None = None
    statuses: list[str | None] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.rewards.shape[0])


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_record(rec, where: str) -> dict:
    """Check one parsed line against the schema; return it with task_id as str. `where` = 'file:line'."""
    if not isinstance(rec, dict):
        raise SamplesFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in rec]
    if missing:
        raise SamplesFormatError(
            f"{where}: missing required field(s) {missing}; every line needs 'task_id' and 'reward'"
        )
    tid = rec["task_id"]
    if not (isinstance(tid, str) or _is_int(tid)):
        raise SamplesFormatError(f"{where}: 'task_id' must be a string, got {tid!r}")
    if not _is_number(rec["reward"]):
        raise SamplesFormatError(f"{where}: 'reward' must be a finite number, got {rec['reward']!r}")
    for name in ("sample_index", "prompt_index", "num_tokens"):
        if rec.get(name) is not None and not _is_int(rec[name]):
            raise SamplesFormatError(f"{where}: {name!r} must be an integer, got {rec[name]!r}")
    for name in ("passed", "total"):
        if rec.get(name) is not None and not _is_int(rec[name]):
            raise SamplesFormatError(f"{where}: {name!r} must be an integer or null, got {rec[name]!r}")
    if rec.get("success") is not None and not isinstance(rec["success"], bool):
        raise SamplesFormatError(f"{where}: 'success' must be true/false, got {rec['success']!r}")
    if rec.get("entropy") is not None and not _is_number(rec["entropy"]):
        raise SamplesFormatError(f"{where}: 'entropy' must be a finite number, got {rec['entropy']!r}")
    if rec.get("completion") is not None and not isinstance(rec["completion"], str):
        raise SamplesFormatError(f"{where}: 'completion' must be a string, got {type(rec['completion'])}")
    return {**rec, "task_id": str(tid)}


def record_success(rec: dict) -> bool:
    """Binary outcome for pass@k: 'success' if given, else all tests passed, else reward == 1."""
    if rec.get("success") is not None:
        return bool(rec["success"])
    passed, total = rec.get("passed"), rec.get("total")
    if passed is not None and total is not None:
        return total > 0 and passed == total
    return float(rec["reward"]) == 1.0


def read_records(path: str | os.PathLike) -> list[dict]:
    """Parse and validate every line of a samples file. Blank lines are skipped.

    Raises FileNotFoundError for a missing file and SamplesFormatError (with 'path:line') for a malformed
    line, a schema violation or a duplicated (task_id, sample_index).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "samples.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"samples file {str(path)!r} does not exist")
    records, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SamplesFormatError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            rec = validate_record(rec, where)
            if rec.get("sample_index") is not None:
                key = (rec["task_id"], rec["sample_index"])
                if key in seen:
                    raise SamplesFormatError(
                        f"{where}: duplicate sample task_id={key[0]!r} sample_index={key[1]} "
                        f"(first at line {seen[key]})"
                    )
                seen[key] = lineno
            records.append(rec)
    if not records:
        raise SamplesFormatError(f"{path}: no samples (the file is empty)")
    return records


def group_records(records: list[dict]) -> list[PromptSamples]:
    """Group validated records by task_id, in order of first appearance, samples in sample_index order."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(rec["task_id"], []).append(rec)
    out = []
    for tid, recs in groups.items():
        if all(r.get("sample_index") is not None for r in recs):
            recs = sorted(recs, key=lambda r: r["sample_index"])
        ent = [r.get("entropy") for r in recs]
        ntok = [r.get("num_tokens") for r in recs]
        out.append(
            PromptSamples(
                task_id=tid,
                rewards=np.array([float(r["reward"]) for r in recs], dtype=np.float64),
                successes=np.array([record_success(r) for r in recs], dtype=bool),
                completions=[r.get("completion") for r in recs],
                entropies=None if any(e is None for e in ent) else np.array(ent, dtype=np.float64),
                num_tokens=None if any(t is None for t in ntok) else np.array(ntok, dtype=np.int64),
                statuses=[r.get("status") for r in recs],
            )
        )
    return out


def read_samples(path: str | os.PathLike) -> list[PromptSamples]:
    """Read a samples file (or a run directory holding samples.jsonl) into per-prompt groups."""
    return group_records(read_records(path))
