"""The RL trainer: rollout, reward, advantage, update, repeated (plumbing around the pure core).

    run_dir = train(config)                       # maxk.config.Config; returns the run directory
    run_dir = train(load_config(run_dir / "config.yaml"), resume=True)

One step (P prompts, N samples each, B = P * N rows, T completion tokens):
  1. rollout    maxk.rollout.generate_rollouts          texts (P, N), behaviour log-probs (B, T)
  2. reward     maxk.rewards.score_completions          rewards (P, N)
  3. advantage  maxk.advantages.ADVANTAGES[estimator]   advantages (P, N), one scalar per sample
  4. update     ppo_update: mu passes, minibatches of whole groups, clipped surrogate (maxk.losses)
For estimators in USES_LOG_RATIO (off-policy max@k) step 3 is redone inside the update before every
minibatch once the parameters have moved, from the current sequence log-ratio of every sample of each
group (MATH.md section 3); the loss then carries the weights as they are (weights_include_ratio), so its
gradient is sum_i A_i grad log pi_theta(y_i) before clipping engages.
Run outputs (metrics.jsonl, completions.jsonl, TensorBoard, checkpoints) are written by maxk.checkpoint.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maxk.advantages import ADVANTAGES, BINARY_ONLY, USES_LOG_RATIO
from maxk.batching import micro_batches
from maxk.checkpoint import (
    RunOutputs,
    latest_checkpoint,
    load_checkpoint,
    restore,
    save_checkpoint,
    save_final_model,
    training_state,
)
from maxk.config import AlgorithmConfig, Config, ModelConfig, OptimConfig, save_config
from maxk.estimators import max_at_k
from maxk.evaluation.sampling import prompt_text
from maxk.losses import clipped_surrogate_loss, kl_penalty
from maxk.rollout import Rollouts, generate_rollouts, rollout_log_probs

RewardFn = Any  # (completions: list[str], tasks: list[Task]) -> list[float], one task per completion


# fmt: off
def train(config: Config, *, resume: bool = False, tasks=None, reward_fn: RewardFn = None, eval_fn=None):
    """Train `config.model.path` with the configured estimator; returns the run directory (a Path).

    resume: continue from the newest checkpoint in config.run.output_dir (a fresh start if there is none);
    metrics after the resume equal those of an uninterrupted run. tasks: a list of `Task` instead of
    loading config.data.tasks. reward_fn: a callable instead of the configured reward (tests, custom
    rewards). eval_fn(model, tokenizer, step) -> dict of numbers replaces the held-out evaluation.
    """
    c, a, run = config, config.algorithm, config.run
    run_dir = Path(run.output_dir)
    _check_run_dir(run_dir, resume)
    torch.manual_seed(run.seed)
    model, tokenizer = load_policy(c.model)
    tasks = _load_tasks(c.data.tasks, c.data.split, c.data.max_tasks) if tasks is None else tasks
    reward_fn = reward_fn or configured_reward(c.data.reward, c.data.reward_options)
    eval_fn = eval_fn or configured_evaluation(c)
    # bind the configuration to the four parts once
    rollout = functools.partial(
        generate_rollouts, model, tokenizer, n=c.rollout.n, temperature=c.rollout.temperature,
        top_p=c.rollout.top_p, max_new_tokens=c.rollout.max_new_tokens, batch_size=c.rollout.batch_size,
        engine=c.rollout.engine)
    reward = functools.partial(score_rollouts, reward_fn, binary=a.estimator in BINARY_ONLY)
    advantage = ADVANTAGES.bind(a.estimator, k=a.k, **a.estimator_options)
    updates = run.steps * a.ppo_epochs * (c.batch_size // c.minibatch_size)
    optimizer, scheduler = build_optimizer(model, c.optim, updates)
    update = functools.partial(
        ppo_update, model, optimizer, scheduler, advantage_fn=advantage, a=a,
        uses_log_ratio=a.estimator in USES_LOG_RATIO, minibatch_size=c.minibatch_size,
        reference=reference_model(model, c) if a.kl_beta > 0 else None, temperature=c.rollout.temperature,
        max_grad_norm=c.optim.max_grad_norm, length_norm=c.rollout.max_new_tokens)

    ckpt = latest_checkpoint(run_dir) if resume else None
    start = restore(load_checkpoint(ckpt), model, optimizer, scheduler) if ckpt is not None else 0
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    out = RunOutputs(run_dir, config, start_step=start)
    for step in range(start, run.steps):
        t0 = time.perf_counter()
        batch = tasks_for_step(tasks, step, c.data.prompts_per_step, run.seed, c.data.shuffle)
        prompts = [prompt_text(tokenizer, t.prompt, c.data.chat) for t in batch]
        rollouts = rollout(prompts, seed=step_seed(run.seed, step))                     # 1. rollout
        t1 = time.perf_counter()
        rewards = reward(rollouts, batch)                                               # 2. reward
        t2 = time.perf_counter()
        advantages = advantage(rewards)                                                 # 3. advantage
        stats = update(rollouts, rewards, advantages, seed=step_seed(run.seed, step))  # 4. update
        t3 = time.perf_counter()

        metrics = step_metrics(rollouts, rewards, advantages, a.k, stats)
        metrics.update(time_metrics(rollouts.num_tokens, t0, t1, t2, t3, a.ppo_epochs))
        metrics["lr"] = scheduler.get_last_lr()[0]
        if eval_fn is not None and _due(step + 1, c.eval.every, run.steps):
            metrics.update(eval_fn(model, tokenizer, step + 1))
        out.log(step + 1, metrics, rollouts, rewards, batch)
        if _due(step + 1, run.save_every, run.steps):
            state = training_state(step + 1, model, optimizer, scheduler, lora=c.model.lora_rank > 0)
            save_checkpoint(run_dir, step + 1, state, keep=run.keep_checkpoints)
    out.close()
    if run.save_final_model:
        save_final_model(model, tokenizer, run_dir / "final_model")
    return run_dir
# fmt: on


# ----------------------------------------------------------------------------------------------------------
# 4. The update
# ----------------------------------------------------------------------------------------------------------
def ppo_update(
    model,
    optimizer,
    scheduler,
    ro: Rollouts,
    rewards,
    advantages,
    *,
    advantage_fn,
    a: AlgorithmConfig,
    uses_log_ratio: bool,
    reference=None,
    minibatch_size: int,
    temperature: float,
    max_grad_norm: float,
    length_norm: float,
    seed: int,
) -> dict[str, float]:
    """mu = a.ppo_epochs passes over the batch; each pass shuffles the P groups and steps the optimiser once
    per minibatch of `minibatch_size // N` whole groups (gradient accumulation over micro-batches).

    rewards, advantages: (P, N). For `uses_log_ratio` estimators the advantages of a minibatch are
    recomputed from the current sequence log-ratios of all its samples whenever the parameters have moved
    since the rollout. Returns the means of the loss statistics over optimiser steps.
    """
    p, n = rewards.shape
    groups_per_mb = minibatch_size // n
    ref_logp = _reference_log_probs(reference, ro, a, temperature)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = functools.partial(
        clipped_surrogate_loss,
        clip_low=a.clip_eps,
        clip_high=a.clip_eps_high,
        ratio_level=a.ratio_level,
        aggregation=a.aggregation,
        weights_include_ratio=uses_log_ratio,
        length_norm=length_norm,
    )
    totals: dict[str, float] = {}
    moved = False
    model.train()
    for _ in range(a.ppo_epochs):
        order = torch.randperm(p, generator=gen)
        for g0 in range(0, p, groups_per_mb):
            groups = order[g0 : g0 + groups_per_mb]
            rows = (groups[:, None] * n + torch.arange(n)).reshape(-1)
            adv = advantages[groups]
            if uses_log_ratio and moved:
                log_ratio = _sequence_log_ratio(model, ro, rows, temperature, a)
                adv = advantage_fn(rewards[groups], log_ratio=log_ratio.view(-1, n))
            stats = _accumulate_gradients(model, ro, rows, adv.reshape(-1), loss_fn, ref_logp, a, temperature)
            limit = max_grad_norm if max_grad_norm > 0 else math.inf
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(_trainable(model), limit))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            moved = True
            for key, v in stats.items():
                totals[key] = totals.get(key, 0.0) + v
    steps = a.ppo_epochs * math.ceil(p / groups_per_mb)
    return {key: v / steps for key, v in totals.items()}


def _accumulate_gradients(
    model, ro: Rollouts, rows, adv_rows, loss_fn, ref_logp, a: AlgorithmConfig, temperature: float
) -> dict[str, float]:
    """Backward over the micro-batches of one minibatch (losses normalised by the minibatch's totals)."""
    device = ro.completion_ids.device
    totals = {"num_tokens": ro.completion_mask[rows].sum().clamp(min=1), "num_sequences": len(rows)}
    stats = {"loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "ratio_mean": 0.0}
    if ref_logp is not None:
        stats["kl_ref"] = 0.0
    for part, width in _passes(ro, rows, a):
        r = rows[part].to(device)
        logp = rollout_log_probs(model, ro, r, temperature=temperature, width=width)
        cmask = ro.completion_mask[r, :width]
        adv = adv_rows[part].to(device)
        loss, st = loss_fn(logp, ro.logprobs[r, :width], adv, cmask, **totals)
        if ref_logp is not None:
            kl = kl_penalty(
                logp,
                ref_logp[r, :width],
                cmask,
                aggregation=a.aggregation,
                **totals,
                length_norm=loss_fn.keywords["length_norm"],
            )
            loss = loss + a.kl_beta * kl
            stats["kl_ref"] += float(kl.detach())
        loss.backward()
        weight = float(cmask.sum() / totals["num_tokens"])  # stats are token means per micro-batch
        stats["loss"] += float(loss.detach())
        for key in ("clip_frac", "approx_kl", "ratio_mean"):
            stats[key] += float(st[key]) * weight
    return stats


def _passes(ro: Rollouts, rows, a: AlgorithmConfig) -> list[tuple[torch.Tensor, int]]:
    """The forward passes over `rows` (1-D long): (positions into rows, completion width) pairs, rows of
    similar length together, at most a.micro_batch_size per pass (maxk.batching)."""
    lengths = ro.completion_mask[rows.to(ro.completion_mask.device)].sum(-1)
    return micro_batches(lengths, a.micro_batch_size, a.length_buckets, a.pass_cost_tokens)


@torch.no_grad()
def _log_probs(model, ro: Rollouts, rows, temperature: float, a: AlgorithmConfig) -> torch.Tensor:
    """(len(rows), T) no-grad `rollout_log_probs` of `rows` (1-D long) in the update's passes; 0 past a
    pass's width, where every row's mask is 0 too."""
    out = ro.logprobs.new_zeros(len(rows), ro.logprobs.shape[1])
    for part, width in _passes(ro, rows, a):
        out[part, :width] = rollout_log_probs(model, ro, rows[part], temperature=temperature, width=width)
    return out


def _sequence_log_ratio(model, ro: Rollouts, rows, temperature: float, a: AlgorithmConfig) -> torch.Tensor:
    """(len(rows),) sum_t [log pi_theta - log pi_old](y_t): the current sequence log-ratio of each row."""
    r = rows.to(ro.completion_ids.device)
    logp = _log_probs(model, ro, rows, temperature, a)
    return ((logp - ro.logprobs[r]) * ro.completion_mask[r]).sum(-1).cpu()


def _reference_log_probs(reference, ro: Rollouts, a: AlgorithmConfig, temperature: float):
    """(B, T) log-probs of the frozen reference policy, or None without a reference."""
    if reference is None:
        return None
    model, context = reference
    with context():
        return _log_probs(model, ro, torch.arange(ro.completion_ids.shape[0]), temperature, a)


# ----------------------------------------------------------------------------------------------------------
# Set-up: model, optimiser, data order, reward, evaluation
# ----------------------------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_policy(m: ModelConfig):
    """The policy and its tokenizer on the configured device, with LoRA / activation checkpointing."""
    from maxk.models import load_model_and_tokenizer

    if not m.path:
        raise ValueError("model.path is empty; set it to a local Hugging Face model directory")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[m.dtype]
    model, tokenizer = load_model_and_tokenizer(m.path, dtype=dtype, device=pick_device(m.device))
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if m.lora_rank > 0:
        if m.gradient_checkpointing:  # frozen embeddings: checkpointed blocks need inputs that require grad
            model.enable_input_require_grads()
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=m.lora_rank,
            lora_alpha=m.lora_alpha,
            target_modules=list(m.lora_target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model, tokenizer


def reference_model(model, config: Config):
    """(frozen reference model, context manager to run it in): the LoRA base with adapters off, or a copy."""
    import contextlib

    if config.model.lora_rank > 0:
        return model, model.disable_adapter
    ref = copy.deepcopy(model).eval()
    for q in ref.parameters():
        q.requires_grad_(False)
    return ref, contextlib.nullcontext


def _trainable(model):
    return [q for q in model.parameters() if q.requires_grad]


def build_optimizer(model, o: OptimConfig, total_updates: int):
    """AdamW and a LambdaLR: linear warm-up over o.warmup_steps, then constant, linear or cosine to 0."""
    optimizer = torch.optim.AdamW(
        _trainable(model), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
    )
    decay = {
        "constant": lambda f: 1.0,
        "linear": lambda f: 1.0 - f,
        "cosine": lambda f: 0.5 * (1.0 + math.cos(math.pi * f)),
    }[o.schedule]

    def factor(i: int) -> float:
        if i < o.warmup_steps:
            return (i + 1) / (o.warmup_steps + 1)
        return decay(min(1.0, (i - o.warmup_steps) / max(1, total_updates - o.warmup_steps)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of a step: a function of (run seed, step) only, so a resumed run samples the same."""
    return (seed * 1_000_003 + step) % (2**63 - 1)


def tasks_for_step(tasks: list, step: int, per_step: int, seed: int, shuffle: bool) -> list:
    """The `per_step` tasks of `step`: positions step * per_step ... in an endless stream of epochs, each
    epoch a permutation seeded by (seed, epoch). A function of the step alone: the data position."""
    if not tasks:
        raise ValueError("no training tasks")
    out = []
    for pos in range(step * per_step, (step + 1) * per_step):
        epoch, offset = divmod(pos, len(tasks))
        order = np.random.default_rng([seed, epoch]).permutation(len(tasks)) if shuffle else range(len(tasks))
        out.append(tasks[order[offset]])
    return out


def score_rollouts(reward_fn, ro: Rollouts, batch: list, *, binary: bool = False) -> torch.Tensor:
    """(P, N) float32 rewards of the completions, task p for the N samples of prompt p."""
    p, n = ro.shape
    flat = reward_fn([t for row in ro.texts for t in row], [task for task in batch for _ in range(n)])
    rewards = torch.tensor([float(getattr(r, "reward", r)) for r in flat], dtype=torch.float32).view(p, n)
    if binary and not bool(((rewards == 0) | (rewards == 1)).all()):
        raise ValueError("this estimator needs 0/1 rewards but the reward returned other values")
    return rewards


def configured_reward(name: str, options: dict):
    """completions, tasks -> list[Score] via maxk.rewards.score_completions (concurrent, sandboxed)."""
    from maxk.rewards import score_completions

    return functools.partial(score_completions, name, **options)


def configured_evaluation(config: Config):
    """eval_fn(model, tokenizer, step) -> {"eval/max@k/4": ...} through maxk.evaluation, or None if off."""
    e = config.eval
    if e.every <= 0:
        return None
    from maxk.evaluation import evaluate_best_of_n

    held_out = _load_tasks(e.tasks, None, e.max_tasks)

    def evaluate(model, tokenizer, step: int) -> dict[str, float]:
        res = evaluate_best_of_n(
            model,
            tokenizer,
            held_out,
            ks=list(e.ks),
            n=e.n,
            reward=config.data.reward,
            reward_options=dict(config.data.reward_options),
            temperature=config.rollout.temperature,
            top_p=config.rollout.top_p,
            max_new_tokens=e.max_new_tokens or config.rollout.max_new_tokens,
            batch_size=config.rollout.batch_size,
            engine=config.rollout.engine,
            chat=config.data.chat,
            seed=config.run.seed,
            progress=False,
            plot=False,
            n_boot=200,
        )
        curves = res.curves.overall.items()
        return {f"eval/{m}/{k}": float(v) for m, c in curves for k, v in zip(c.ks, c.mean)}

    return evaluate


def _load_tasks(path: str, split, limit):
    from maxk.rewards import load_tasks

    tasks = load_tasks(path, split=split)
    return tasks[:limit] if limit else tasks


# ----------------------------------------------------------------------------------------------------------
# Metrics, checkpoints
# ----------------------------------------------------------------------------------------------------------
def step_metrics(ro: Rollouts, rewards, advantages, k: int, stats: dict) -> dict[str, float]:
    """One step's numbers: reward mean, max@k_hat (training k), pass@1, advantage stats, entropy, loss."""
    m = ro.completion_mask.float()
    lengths = m.sum(-1)
    return {
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        f"max@{k}": float(max_at_k(rewards, min(k, rewards.shape[1])).mean()),
        "pass@1": float((rewards == 1).float().mean()),
        "adv_mean": float(advantages.mean()),
        "adv_std": float(advantages.std()) if advantages.numel() > 1 else 0.0,
        "adv_abs_max": float(advantages.abs().max()),
        "adv_zero_frac": float((advantages == 0).float().mean()),
        "entropy": float((ro.entropy * m).sum() / m.sum().clamp(min=1)),
        "completion_len": float(lengths.mean()),
        "truncated_frac": float((~ro.finished).float().mean()),
        **stats,
    }


def time_metrics(tokens: int, t0: float, t1: float, t2: float, t3: float, epochs: int) -> dict[str, float]:
    """Wall-clock fields: the only non-reproducible ones (left out when comparing resumed runs)."""
    return {
        "time/step_s": t3 - t0,
        "time/rollout_s": t1 - t0,
        "time/reward_s": t2 - t1,
        "time/update_s": t3 - t2,
        "time/tokens_per_s": tokens / max(t3 - t0, 1e-9),
        "time/rollout_tokens_per_s": tokens / max(t1 - t0, 1e-9),
        "time/update_tokens_per_s": tokens * epochs / max(t3 - t2, 1e-9),
        "tokens": float(tokens),
    }


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if not resume and (run_dir / "metrics.jsonl").exists():
        raise FileExistsError(
            f"{run_dir} already holds a run; resume it (maxk train --resume {run_dir}) or set run.output_dir"
        )
