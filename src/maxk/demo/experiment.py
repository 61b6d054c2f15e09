"""The demo experiment: RL from one base with each estimator, Best-of-N evaluation on test prompts.

Everything heavy is maxk's own machinery: `maxk.trainer.train` (rollout, reward, advantage, PPO update),
`maxk.rollout.generate_rollouts` (test sampling), `maxk.rewards.score_completions("code_tests")` (the
sandboxed runner), `maxk.evaluation` (curves, paired Wilcoxon tests, diversity, plot). This module only
wires them together with the demo's settings, plus one thing of its own: a memo of sandbox results keyed
by (task id, completion), because a small policy repeats itself and every program here is deterministic
(`MemoScorer`; it changes only how often the sandbox runs, not a single reward).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maxk.rewards import Task, score_completions

METHODS = ("grpo", "maxk_zscore", "maxk_loo1", "maxk_offpolicy")
# Estimator options beyond k (none: every estimator runs with its registry defaults; maxk_offpolicy is
# the unbaselined first-order estimator N * rt' with delta clipped to [-0.2, 0.2]).
METHOD_OPTIONS: dict[str, dict] = {}


class MemoScorer:
    """`reward_fn(completions, tasks) -> list[float]` through the sandbox, each distinct (task, completion)
    pair run once. Counts calls and sandbox runs so the demo can report what scoring cost."""

    def __init__(self, reward: str = "code_tests", **options):
        self.reward, self.options = reward, options
        self.cache: dict[tuple[str, str], float] = {}
        self.requested = 0
        self.seconds = 0.0

    def __call__(self, completions: list[str], tasks: list[Task]) -> list[float]:
        t0 = time.perf_counter()
        keys = [(t.id, c) for c, t in zip(completions, tasks)]
        todo: dict[tuple[str, str], Task] = {}
        for key, task in zip(keys, tasks):
            if key not in self.cache:
                todo.setdefault(key, task)
        if todo:
            scores = score_completions(self.reward, [c for _, c in todo], list(todo.values()), **self.options)
            for key, s in zip(todo, scores):
                self.cache[key] = float(s.reward)
        self.requested += len(keys)
        self.seconds += time.perf_counter() - t0
        return [self.cache[key] for key in keys]


@dataclass(frozen=True)
class RLSettings:
    """One budget and recipe shared by every method (only the estimator differs)."""

    steps: int = 30  # RL steps (one rollout batch each)
    prompts_per_step: int = 16  # P
    n: int = 8  # N samples per prompt during training (the paper's 8)
    k: int = 4  # the k of max@k the max@k estimators optimise
    ppo_epochs: int = 3  # PPO iterations per batch (the paper's 3)
    minibatch_groups: int = 8  # groups per optimiser step: P / this = 2 optimiser steps per pass
    lr: float = 2.5e-4
    clip_eps: float = 0.2
    kl_beta: float = 0.0
    max_new_tokens: int = 20


def rl_config(base_dir: Path, method: str, out_dir: Path, s: RLSettings, seed: int):
    """The maxk.config.Config for one method; identical for all methods except the estimator."""
    from maxk.config import (
        AlgorithmConfig,
        Config,
        DataConfig,
        ModelConfig,
        OptimConfig,
        RolloutConfig,
        RunConfig,
    )

    return Config(
        model=ModelConfig(path=str(base_dir), device="cpu"),
        data=DataConfig(tasks="", prompts_per_step=s.prompts_per_step),
        rollout=RolloutConfig(n=s.n, max_new_tokens=s.max_new_tokens, batch_size=s.prompts_per_step * s.n),
        algorithm=AlgorithmConfig(
            estimator=method,
            k=s.k,
            estimator_options=METHOD_OPTIONS.get(method, {}),
            ppo_epochs=s.ppo_epochs,
            minibatch_size=s.minibatch_groups * s.n,
            micro_batch_size=s.minibatch_groups * s.n,
            clip_eps=s.clip_eps,
            kl_beta=s.kl_beta,
            aggregation="sequence_sum",
        ),
        optim=OptimConfig(lr=s.lr),
        run=RunConfig(
            output_dir=str(out_dir),
            steps=s.steps,
            seed=seed,
            save_every=0,
            keep_checkpoints=1,
            samples_every=0,
            tensorboard=False,
            progress=False,
        ),
    )


def train_method(
    base_dir: Path,
    method: str,
    out_dir: Path,
    tasks: list[Task],
    scorer: MemoScorer,
    s: RLSettings,
    seed: int,
) -> Path:
    """RL-train `method` from `base_dir`; returns the final model directory."""
    import shutil

    from maxk.trainer import train

    if out_dir.exists():
        shutil.rmtree(out_dir)
    run_dir = train(rl_config(base_dir, method, out_dir, s, seed), tasks=tasks, reward_fn=scorer)
    return Path(run_dir) / "final_model"


def sample_and_score(
    model_dir: Path,
    tasks: list[Task],
    scorer: MemoScorer,
    *,
    n: int,
    seed: int,
    max_new_tokens: int = 20,
    batch_size: int = 1024,
):
    """N samples per test task, scored; returns a list of `maxk.evaluation.PromptSamples` (task order)."""
    from maxk.evaluation import PromptSamples
    from maxk.models import load_model_and_tokenizer
    from maxk.rollout import generate_rollouts

    model, tok = load_model_and_tokenizer(str(model_dir))
    ro = generate_rollouts(
        model,
        tok,
        [t.prompt for t in tasks],
        n=n,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
    )
    flat = [c for row in ro.texts for c in row]
    rewards = np.array(scorer(flat, [t for t in tasks for _ in range(n)]), dtype=np.float64).reshape(
        len(tasks), n
    )
    mask = ro.completion_mask.float()
    ent = (ro.entropy.sum(1) / mask.sum(1).clamp(min=1)).numpy().reshape(len(tasks), n)
    ntok = mask.sum(1).numpy().reshape(len(tasks), n)
    return [
        PromptSamples(
            task_id=t.id,
            rewards=rewards[p],
            successes=rewards[p] == 1.0,
            completions=ro.texts[p],
            entropies=ent[p],
            num_tokens=ntok[p],
        )
        for p, t in enumerate(tasks)
    ]
