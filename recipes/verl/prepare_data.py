"""Turn a local JSONL task file (maxk's schema, docs/rewards.md) into verl's train/test parquet files.

    python recipes/verl/prepare_data.py --tasks tasks.jsonl --out ~/data/maxk [--test-fraction 0.1]
    python recipes/verl/prepare_data.py --tasks train.jsonl --test-tasks test.jsonl --out ~/data/maxk

Each row carries the whole task as JSON in reward_model.ground_truth, which
maxk.integrations.verl_reward.compute_score reads back to run the tests in maxk's sandbox.
The split is deterministic (a seeded permutation). Prints the row counts.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path


def split_tasks(tasks: list, test_fraction: float, seed: int) -> tuple[list, list]:
    """(train, test): a seeded shuffle, the last round(test_fraction * len) tasks go to test."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    order = list(range(len(tasks)))
    random.Random(seed).shuffle(order)
    n_test = round(test_fraction * len(tasks))
    cut = len(tasks) - n_test
    return [tasks[i] for i in order[:cut]], [tasks[i] for i in order[cut:]]


def write_parquet(tasks: list, path: Path, split: str) -> int:
    from datasets import Dataset

    from maxk.integrations.verl_reward import verl_row

    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list([verl_row(t, split=split, index=i) for i, t in enumerate(tasks)]).to_parquet(str(path))
    return len(tasks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", required=True, help="JSONL task file (anything load_tasks reads)")
    p.add_argument("--test-tasks", default=None, help="a separate test task file (else split --tasks)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of --tasks held out for test")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--out", required=True, help="output directory for train.parquet and test.parquet")
    args = p.parse_args(argv)

    from maxk.rewards import load_tasks

    tasks = load_tasks(args.tasks)
    if args.test_tasks:
        train, test = tasks, load_tasks(args.test_tasks)
    else:
        train, test = split_tasks(tasks, args.test_fraction, args.seed)
    if not train or not test:
        raise SystemExit(f"need tasks in both splits, got {len(train)} train and {len(test)} test")
    out = Path(args.out).expanduser()
    n_train = write_parquet(train, out / "train.parquet", "train")
    n_test = write_parquet(test, out / "test.parquet", "test")
    print(f"wrote {n_train} train rows to {out / 'train.parquet'} "
          f"and {n_test} test rows to {out / 'test.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
