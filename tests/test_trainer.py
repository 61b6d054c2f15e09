"""The trainer: group-whole minibatches, off-policy weights from the current log-ratio, the off-policy
gradient property on a real model (autograd), data order, and a 2-step smoke run where parameters change."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch

from maxk.advantages import ADVANTAGES
from maxk.config import (
    AlgorithmConfig,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
    RunConfig,
    load_config,
    replace_in,
)
from maxk.losses import clipped_surrogate_loss
from maxk.rewards import Task
from maxk.rollout import generate_rollouts, token_log_probs
from maxk.trainer import (
    _accumulate_gradients,
    _sequence_log_ratio,
    build_optimizer,
    ppo_update,
    tasks_for_step,
    train,
)

PROMPTS = ["def add(a, b):", "The answer is", "print(sum(", "def square(x):"]
TASKS = [Task(id=f"t{i}", prompt=p) for i, p in enumerate(PROMPTS)]


def letter_reward(completions, tasks):
    """A continuous toy reward in [0, 1]: how many 'a's, capped at 4."""
    return [min(1.0, text.count("a") / 4) for text in completions]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    from maxk.models import load_model_and_tokenizer

    torch.set_num_threads(1)
    return load_model_and_tokenizer(str(tiny_model_dir))


@pytest.fixture
def fresh_model(tiny_model_dir):
    from maxk.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_dir))[0]


def test_tasks_for_step_is_a_seeded_permutation_per_epoch():
    tasks = list(range(5))
    epoch0 = [t for s in range(5) for t in tasks_for_step(tasks, s, 1, seed=3, shuffle=True)]
    assert sorted(epoch0) == tasks  # each task once per epoch
    seq = [tasks_for_step(tasks, s, 2, seed=3, shuffle=True) for s in range(5)]  # 10 = two epochs
    flat = [t for b in seq for t in b]
    assert sorted(flat[:5]) == tasks and sorted(flat[5:]) == tasks and flat[:5] != flat[5:]
    assert seq == [tasks_for_step(tasks, s, 2, seed=3, shuffle=True) for s in range(5)]
    assert tasks_for_step(tasks, 3, 2, seed=3, shuffle=False) == [1, 2]  # positions 6, 7 -> 1, 2


def test_minibatches_hold_whole_groups_and_weights_use_the_current_log_ratio(fresh_model, policy):
    """P=4 groups, minibatch of 2 groups, 2 passes: every estimator call sees whole groups; after the first
    optimiser step the log-ratio passed in is the current model's sequence log-ratio (recomputed here)."""
    model, tok = fresh_model, policy[1]
    p, n = 4, 3
    ro = generate_rollouts(model, tok, PROMPTS, n=n, max_new_tokens=8, seed=0)
    rewards = torch.arange(p * n, dtype=torch.float32).view(p, n) / (p * n)  # distinct: identifies groups
    base = ADVANTAGES.bind("maxk_offpolicy", k=2)
    calls = []

    def spy(r, log_ratio=None):
        groups = [int(torch.nonzero((rewards == row).all(-1))[0]) for row in r]
        assert all(torch.equal(rewards[g], row) for g, row in zip(groups, r))  # whole groups, in order
        rows = torch.tensor([g * n + i for g in groups for i in range(n)])
        with torch.no_grad():
            logp = token_log_probs(
                model,
                ro.prompt_ids[rows],
                ro.prompt_mask[rows],
                ro.completion_ids[rows],
                ro.completion_mask[rows],
            )
        current = ((logp - ro.logprobs[rows]) * ro.completion_mask[rows]).sum(-1).view(-1, n)
        calls.append((groups, log_ratio))
        torch.testing.assert_close(log_ratio, current, atol=1e-5, rtol=1e-5)
        return base(r, log_ratio=log_ratio)

    a = AlgorithmConfig(k=2, ppo_epochs=2, minibatch_size=2 * n, micro_batch_size=4)
    optimizer, scheduler = build_optimizer(model, OptimConfig(lr=1e-2), 4)
    stats = ppo_update(
        model,
        optimizer,
        scheduler,
        ro,
        rewards,
        base(rewards),
        advantage_fn=spy,
        a=a,
        uses_log_ratio=True,
        minibatch_size=2 * n,
        temperature=1.0,
        max_grad_norm=1.0,
        length_norm=8.0,
        seed=0,
    )
    # 2 passes x 2 minibatches = 4 optimiser steps; the first uses the rollout-time weights (delta = 0)
    assert len(calls) == 3 and all(len(g) == 2 for g, _ in calls)
    assert all(float(lr.abs().max()) > 0 for _, lr in calls)
    seen = sorted(g for gs, _ in calls[1:] for g in gs)  # the second pass covers every group once
    assert seen == [0, 1, 2, 3]
    assert stats["grad_norm"] > 0 and set(stats) >= {"loss", "clip_frac", "approx_kl", "ratio_mean"}


@pytest.mark.parametrize("ratio_level, buckets", [("token", 1), ("token", 4), ("sequence", 4)])
def test_offpolicy_loss_gradient_is_sum_of_rt_prime_grad_log_pi(fresh_model, policy, ratio_level, buckets):
    """At parameters moved away from the behaviour policy (ratios != 1, inside the clip) the gradient of
    the trainer's loss is -(1/B) sum_i A_i grad log pi_theta(y_i), A = N rt' from the current log-ratio;
    also when the micro-batches run as passes over rows of similar length, each cut at its longest row
    (the completions here end after 1 to 6 tokens)."""
    model, tok = fresh_model, policy[1]
    p, n = 3, 4
    ro = generate_rollouts(model, tok, PROMPTS[:p], n=n, max_new_tokens=6, seed=1)
    ragged = (torch.arange(6)[None, :] < 1 + torch.arange(p * n)[:, None] % 6).long()
    ro = dataclasses.replace(ro, completion_mask=ragged, logprobs=ro.logprobs * ragged)
    rewards = torch.tensor([[0.0, 0.5, 1.0, 0.25], [0.2, 0.2, 0.9, 0.0], [1.0, 0.0, 0.0, 0.3]])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for q in model.parameters():
            q.add_(1e-3 * torch.randn(q.shape, generator=g))
    rows = torch.arange(p * n)
    a = AlgorithmConfig(
        k=2, micro_batch_size=5, length_buckets=buckets, ratio_level=ratio_level, aggregation="sequence_sum"
    )
    log_ratio = _sequence_log_ratio(model, ro, rows, 1.0, a).view(p, n)
    assert 1e-4 < float(log_ratio.abs().max()) < 0.1
    adv = ADVANTAGES.get("maxk_offpolicy")(rewards, k=2, log_ratio=log_ratio)
    assert not torch.allclose(adv, ADVANTAGES.get("maxk")(rewards, k=2))  # the deltas matter

    loss_fn = functools.partial(
        clipped_surrogate_loss,
        clip_low=0.2,
        ratio_level=ratio_level,
        aggregation="sequence_sum",
        weights_include_ratio=True,
        length_norm=1.0,
    )
    model.zero_grad()
    stats = _accumulate_gradients(model, ro, rows, adv.reshape(-1), loss_fn, None, a, 1.0)
    assert stats["clip_frac"] == 0 and stats["ratio_mean"] != 1.0
    got = [q.grad.clone() for q in model.parameters()]

    model.zero_grad()
    logp = token_log_probs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
    (-(adv.reshape(-1, 1) * logp).sum() / (p * n)).backward()
    want = [q.grad.clone() for q in model.parameters()]
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-4)


def small_config(model_dir, out_dir, **algorithm) -> Config:
    return Config(
        model=ModelConfig(path=str(model_dir)),
        data=DataConfig(prompts_per_step=2),
        rollout=RolloutConfig(n=4, max_new_tokens=10, batch_size=8),
        algorithm=AlgorithmConfig(
            **{"k": 2, "ppo_epochs": 2, "minibatch_size": 4, "micro_batch_size": 4, **algorithm}
        ),
        run=RunConfig(output_dir=str(out_dir), steps=2, save_every=1, samples_every=1, progress=False),
    )


def test_two_step_smoke_run_changes_parameters(tiny_model_dir, tmp_path):
    from maxk.models import load_model_and_tokenizer

    cfg = small_config(tiny_model_dir, tmp_path / "run", kl_beta=0.05)
    cfg = replace_in(cfg, "optim.lr", 1e-2)
    run_dir = train(cfg, tasks=TASKS, reward_fn=letter_reward)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for key in (
        "reward_mean",
        "max@2",
        "pass@1",
        "adv_mean",
        "adv_std",
        "clip_frac",
        "approx_kl",
        "entropy",
        "grad_norm",
        "kl_ref",
        "time/tokens_per_s",
        "time/step_s",
        "lr",
    ):
        assert key in lines[0], key
    assert any(m["grad_norm"] > 0 for m in lines)
    assert load_config(run_dir / "config.yaml") == cfg
    assert len((run_dir / "completions.jsonl").read_text().splitlines()) == 2 * cfg.run.samples_per_log
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_000002"
    before = load_model_and_tokenizer(str(tiny_model_dir))[0].state_dict()
    after = load_model_and_tokenizer(str(run_dir / "final_model"))[0].state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tasks=TASKS, reward_fn=letter_reward)


def test_binary_only_estimator_rejects_continuous_rewards(tiny_model_dir, tmp_path):
    cfg = load_config(
        None,
        [
            f"model.path={tiny_model_dir}",
            "data.reward=code_tests_binary",
            "algorithm.estimator=passk_chen",
            "algorithm.k=2",
            "rollout.n=4",
            "rollout.max_new_tokens=4",
            "data.prompts_per_step=1",
            "run.steps=1",
            f"run.output_dir={tmp_path / 'r'}",
            "run.progress=false",
        ],
    )
    half = lambda completions, tasks: [0.5] * len(completions)  # continuous whatever is sampled
    with pytest.raises(ValueError, match="needs 0/1 rewards"):
        train(cfg, tasks=TASKS, reward_fn=half)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["model.lora_rank=4", "model.gradient_checkpointing=true", "algorithm.kl_beta=0.1"],
        ["algorithm.ratio_level=sequence", "algorithm.aggregation=sequence_sum", "optim.schedule=linear"],
        ["algorithm.estimator=grpo", "algorithm.clip_eps_high=0.28", "algorithm.aggregation=sequence_mean"],
    ],
)
def test_option_combinations_train_and_resume(tiny_model_dir, tmp_path, extra):
    base = [
        f"model.path={tiny_model_dir}",
        f"run.output_dir={tmp_path / 'r'}",
        "run.steps=2",
        "run.save_every=1",
        "run.progress=false",
        "data.prompts_per_step=2",
        "rollout.n=4",
        "rollout.max_new_tokens=8",
        "algorithm.k=2",
        "algorithm.ppo_epochs=2",
        "algorithm.minibatch_size=4",
        "optim.lr=1e-2",
    ]
    run_dir = train(load_config(None, [*base, *extra]), tasks=TASKS, reward_fn=letter_reward)
    train(
        load_config(run_dir / "config.yaml", ["run.steps=3"]),
        resume=True,
        tasks=TASKS,
        reward_fn=letter_reward,
    )
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and any(r["grad_norm"] > 0 for r in rows)
    assert (run_dir / "final_model" / "config.json").exists()


@pytest.mark.gpu
def test_two_steps_on_cuda_in_bfloat16(tiny_model_dir, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cfg = load_config(
        None,
        [
            f"model.path={tiny_model_dir}",
            f"run.output_dir={tmp_path / 'r'}",
            "run.steps=2",
            "run.progress=false",
            "model.device=cuda",
            "model.dtype=bfloat16",
            "data.prompts_per_step=2",
            "rollout.n=4",
            "rollout.max_new_tokens=8",
            "algorithm.k=2",
            "algorithm.ppo_epochs=2",
            "algorithm.minibatch_size=4",
            "algorithm.kl_beta=0.05",
        ],
    )
    run_dir = train(cfg, tasks=TASKS, reward_fn=letter_reward)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["grad_norm"] == r["grad_norm"] for r in rows)  # not NaN


def test_held_out_evaluation_is_logged_every_m_steps(tiny_model_dir, tmp_path):
    """eval.every=2 over 3 steps: evaluated after steps 2 and 3 (the last) through maxk.evaluation."""
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(
        "".join(
            json.dumps({"id": f"m{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
            for i in range(2)
        )
    )
    cfg = load_config(
        None,
        [
            f"model.path={tiny_model_dir}",
            f"run.output_dir={tmp_path / 'r'}",
            "run.steps=3",
            "run.progress=false",
            "run.save_final_model=false",
            "data.reward=math_answer",
            "data.prompts_per_step=1",
            "rollout.n=2",
            "rollout.max_new_tokens=4",
            "algorithm.k=2",
            f"eval.tasks={held_out}",
            "eval.every=2",
            "eval.n=2",
            "eval.ks=[1, 2]",
        ],
    )
    run_dir = train(cfg, tasks=TASKS, reward_fn=letter_reward)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r["step"] for r in rows if "eval/max@k/2" in r]
    assert evaluated == [2, 3]
    assert all(0.0 <= rows[1][f"eval/{m}/{k}"] <= 1.0 for m in ("max@k", "pass@k") for k in (1, 2))
