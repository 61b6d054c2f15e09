"""Verifiable rewards: tasks, sandboxed code execution (fraction of tests passed), math answers.

    from maxk.rewards import load_tasks, score_completions
    tasks = load_tasks("examples/tasks.jsonl")
    scores = score_completions("code_tests", completions, [task] * len(completions))  # list[Score]

Modules: tasks (Task, JSONL schema, loaders), extract (program from completion), sandbox (process runner,
bubblewrap), harness (in-sandbox per-test runner), execution (programs x tests, batches), humaneval
(the 164 problems, `check` split into assertions), math_answer (math-verify), scoring (registries).
"""

from maxk.rewards.execution import ExecConfig, ProgramResult, run_tests, run_tests_batch
from maxk.rewards.extract import extract_program
from maxk.rewards.sandbox import SandboxConfig, isolation_level, run_sandboxed
from maxk.rewards.scoring import REWARDS, SCORERS, Score, exec_config, score_completions
from maxk.rewards.tasks import Task, load_tasks, task_from_dict

__all__ = [
    "REWARDS",
    "SCORERS",
    "ExecConfig",
    "SandboxConfig",
    "Score",
    "Task",
    "ProgramResult",
    "exec_config",
    "extract_program",
    "isolation_level",
    "load_tasks",
    "run_sandboxed",
    "run_tests",
    "run_tests_batch",
    "score_completions",
    "task_from_dict",
]
