"""maxk's sandboxed rewards for verl: the dataset row format and `compute_score` (plumbing).

verl's RL dataset is a parquet file of rows {data_source, prompt (chat messages), ability,
reward_model: {style, ground_truth}, extra_info}. `verl_row` writes a maxk `Task` into one such row,
the whole task as JSON in `reward_model.ground_truth`; `compute_score` (verl's
`reward.custom_reward_function`, `path: pkg://maxk.integrations.verl_reward`, `name: compute_score`)
reads it back and scores the completion with `maxk.rewards.score_completions` (the sandbox; for code,
the fraction of unit tests passed). verl calls it once per completion:

    compute_score(data_source, solution_str, ground_truth, extra_info=None, **reward_kwargs) -> dict

Returns {"score": reward in [0, 1], "passed": tests passed, "total": tests run}; verl uses "score" as the
reward and logs the others (numbers only, so verl's metric reductions work; -1 when not known).
"""

from __future__ import annotations

import json
from typing import Any

from maxk.rewards import Task, score_completions, task_from_dict

__all__ = ["DATA_SOURCE", "verl_row", "task_of", "compute_score"]

DATA_SOURCE = "maxk"
VERL_EXTRA_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})  # verl's, not ours


def verl_row(task: Task, *, split: str, index: int, ability: str = "code") -> dict[str, Any]:
    """One verl dataset row for `task`: the prompt as a single user message, the task as ground truth."""
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": task.prompt}],
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": json.dumps(task.to_dict())},
        "extra_info": {"split": split, "index": index, "task_id": task.id},
    }


def task_of(ground_truth) -> Task:
    """The Task stored by `verl_row` (a JSON string, or a dict when a loader already decoded it)."""
    row = json.loads(ground_truth) if isinstance(ground_truth, str) else dict(ground_truth)
    return task_from_dict(row)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, *,
                  reward_name: str = "code_tests", **options) -> dict[str, float]:
    """Score one completion against the task in `ground_truth` with maxk reward `reward_name`.

    reward_name: a `maxk.rewards` scorer (`code_tests`, `code_tests_binary`, `math_answer`); options go
    to it (e.g. test_timeout_s). verl's extra keyword arguments (reward_router_address, ...) are not
    scorer options and are dropped.
    """
    options = {k: v for k, v in options.items() if k not in VERL_EXTRA_KWARGS}
    score = score_completions(reward_name, [solution_str], [task_of(ground_truth)], **options)[0]
    return {
        "score": float(score.reward),
        "passed": float(-1 if score.passed is None else score.passed),
        "total": float(-1 if score.total is None else score.total),
    }
