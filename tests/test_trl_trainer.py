"""MaxKGRPOTrainer: TRL's GRPO loop with maxk advantages, two real optimiser steps on a tiny local model."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig

from maxk.advantages import ADVANTAGES
from maxk.integrations.trl import MaxKGRPOTrainer
from maxk.models import load_model_and_tokenizer

N, K = 4, 2  # completions per prompt, k of max@k


def length_reward(completions, **kwargs):
    """A deterministic continuous reward in [0, 1]: completion length in characters, mod 7, over 6."""
    return [(len(c) % 7) / 6 for c in completions]


class RecordingTrainer(MaxKGRPOTrainer):
    """Records per generation the rewards the reward function gave, and the advantages each loss used."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generations, self.used = [], []

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        ids = [tuple(c) for c in completion_ids_list]
        self.generations.append({"rewards": rewards[:, 0].clone(), "ids": ids, "prompts": list(prompts)})
        return rewards

    def _compute_loss(self, model, inputs):
        mask = inputs["completion_mask"].bool()
        for ids, m, a in zip(inputs["completion_ids"], mask, inputs["advantages"]):
            self.used.append((tuple(ids[m].tolist()), float(a)))
        return super()._compute_loss(model, inputs)


def make_trainer(model_dir, tmp_path, cls=RecordingTrainer, **overrides):
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    data = Dataset.from_dict({"prompt": ["def add(a, b):", "print(sum(", "def square(x):", "The answer is"]})
    args = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=N, num_generations=N,
        gradient_accumulation_steps=2, num_iterations=2, max_completion_length=8, max_steps=2,
        learning_rate=1e-3, beta=0.0, temperature=1.0,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
        dataloader_num_workers=0, log_completions=False,
    )
    args.update(overrides.pop("args", {}))
    return cls(model=model, reward_funcs=length_reward, args=GRPOConfig(**args), train_dataset=data,
               processing_class=tokenizer, **overrides)


def test_two_steps_use_maxk_advantages_and_change_parameters(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    trainer = make_trainer(tiny_model_dir, tmp_path, estimator="maxk_loo1", k=K)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    # 2 optimiser steps x 2 micro-steps, num_iterations = 2: one generation of 2 prompts x N, used twice
    assert len(trainer.generations) == 1 and len(trainer.used) == 2 * 2 * N
    gen = trainer.generations[0]
    expected = ADVANTAGES.get("maxk_loo1")(gen["rewards"].double().view(-1, N), k=K).reshape(-1).float()
    trl_own = ADVANTAGES.get("grpo")(gen["rewards"].double().view(-1, N)).reshape(-1).float()
    assert not torch.allclose(expected, trl_own, atol=1e-3)  # the replacement is visible: the test can fail

    # every loss call used, for each completion, the maxk advantage of that completion
    by_ids = {}
    for ids, a in zip(gen["ids"], expected.tolist()):
        by_ids.setdefault(ids, set()).add(round(a, 5))
    for ids, a in trainer.used:
        assert round(a, 5) in by_ids[ids]
    # both PPO passes saw every completion
    assert sorted(round(a, 5) for _, a in trainer.used) == sorted(round(a, 5) for a in expected.tolist() * 2)

    # the logged advantages are the ones used
    torch.testing.assert_close(torch.tensor(list(trainer._logs["advantages"])), expected)

    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "no parameter changed after two optimiser steps"
    assert any("maxk/advantage_abs_mean" in h for h in trainer.state.log_history)


class OffPolicyRecorder(RecordingTrainer):
    """Records, per loss call, each row's id, its (B, T) or () advantage and the ratios TRL will use."""

    def _compute_loss(self, model, inputs):
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        with torch.no_grad():
            width = inputs["completion_ids"].size(1)
            logp, _, _ = self._get_per_token_logps_and_entropies(model, ids, att, width)
        mask = inputs["completion_mask"].bool()
        token_lr = (logp - inputs["old_per_token_logps"]) * mask
        for i in range(len(ids)):
            self.rows.append({"row": int(inputs["maxk_row"][i]), "adv": inputs["advantages"][i].clone(),
                              "ratio": token_lr[i].exp(), "mask": mask[i], "seq_lr": float(token_lr[i].sum()),
                              "ids": tuple(inputs["completion_ids"][i][mask[i]].tolist())})
        return MaxKGRPOTrainer._compute_loss(self, model, inputs)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows = []


def test_offpolicy_is_recomputed_every_pass_and_weights_grad_log_pi_by_rt_prime(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    trainer = make_trainer(tiny_model_dir, tmp_path, cls=OffPolicyRecorder, estimator="maxk_offpolicy", k=K,
                           args={"learning_rate": 1e-4})
    trainer.train()
    gen = trainer.generations[0]
    rewards = gen["rewards"].double().view(-1, N)
    first, second = trainer.rows[: 2 * N], trainer.rows[2 * N :]
    assert len(second) == 2 * N
    for r in trainer.rows:
        assert gen["ids"][r["row"]] == r["ids"]  # the row ids survived TRL's shuffle and split

    # pass 1: the policy has not moved (delta = 0), so rt' = rt: plain maxk advantages, one per sequence
    rt = ADVANTAGES.get("maxk")(rewards, k=K).reshape(-1)
    for r in first:
        assert r["adv"].dim() == 0 and abs(float(r["adv"]) - float(rt[r["row"]])) < 1e-5
        assert abs(r["seq_lr"]) < 1e-4

    # pass 2: rt' from the sequence log-ratios after one optimiser step, as TRL's loss sees them
    log_ratio = torch.zeros(rewards.numel(), dtype=torch.float64)
    for r in second:
        log_ratio[r["row"]] = r["seq_lr"]
    assert log_ratio.abs().max() > 1e-3  # the policy moved, so the check below can fail
    rt_prime = ADVANTAGES.get("maxk_offpolicy")(rewards, k=K, log_ratio=log_ratio.view(-1, N)).reshape(-1)
    assert not torch.allclose(rt_prime, rt, atol=1e-4)
    for r in second:
        # TRL multiplies the advantage by its ratio; the product must be rt'_i on every completion token
        weight = (r["adv"] * r["ratio"])[r["mask"]].double()
        torch.testing.assert_close(weight, torch.full_like(weight, float(rt_prime[r["row"]])),
                                   atol=1e-4, rtol=1e-4)
    assert any("maxk/delta_abs_mean" in h for h in trainer.state.log_history)


def test_offpolicy_is_refused_when_the_policy_moves_inside_a_pass(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="steps_per_generation == gradient_accumulation_steps"):
        make_trainer(tiny_model_dir, tmp_path, cls=MaxKGRPOTrainer, estimator="maxk_offpolicy", k=K,
                     args={"steps_per_generation": 4})
    with pytest.raises(ValueError, match="loss_type"):
        make_trainer(tiny_model_dir, tmp_path, cls=MaxKGRPOTrainer, estimator="maxk_offpolicy", k=K,
                     args={"loss_type": "cispo"})


def test_bad_estimator_settings_fail_at_construction(tiny_model_dir, tmp_path):
    with pytest.raises(KeyError, match="maxk_loo1"):
        make_trainer(tiny_model_dir, tmp_path, cls=MaxKGRPOTrainer, estimator="max_k")
    with pytest.raises(ValueError):
        make_trainer(tiny_model_dir, tmp_path, cls=MaxKGRPOTrainer, estimator="maxk", k=N + 1)


def test_missing_rewards_are_an_error_not_a_zero(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path, cls=MaxKGRPOTrainer, estimator="maxk", k=K)
    with pytest.raises(ValueError, match="finite reward"):
        trainer.maxk_group_advantages(torch.tensor([0.0, float("nan"), 1.0, 0.5]), N)
