"""TRL's GRPOTrainer with any maxk advantage estimator (trl 1.16.x; plumbing, no maths).

TRL has no estimator hook: `GRPOTrainer._generate_and_score_completions` computes GRPO advantages inline
from the rewards of all processes. `MaxKGRPOTrainer` keeps everything else of TRL (generation, reward
functions, clipped loss, KL, vLLM, accelerate/DeepSpeed) and replaces only those advantages:

  1. `_calculate_rewards` is wrapped to keep the gathered (all processes) reward matrix (B_all, F);
  2. after TRL's step the weighted sum over reward functions (TRL's `reward_weights`, as its own
     `sum_then_normalize` does) is reshaped to (P, N) with N = num_generations (TRL samples each prompt's
     N completions contiguously in the gathered order), the maxk estimator is applied, and this
     process's slice replaces `advantages` in the returned batch;
  3. the logged advantages (`self._logs["advantages"]`, the completions table) are replaced by the same
     numbers, so what is logged is what the loss used. TRL's `scale_rewards` is not used (the estimator
     defines its own scale: `maxk_zscore` is the normalised one).

num_iterations > 1 works as in TRL: advantages are computed once per generation batch and reused by every
PPO pass with TRL's clipped ratio, which is exact for every estimator that does not read log-ratios.

`maxk_offpolicy` (and every name in `maxk.advantages.USES_LOG_RATIO`): accepted only when TRL uses each
generation for a single optimiser step (num_iterations == 1 and steps_per_generation ==
gradient_accumulation_steps); then the policy has not moved when the advantages are used, delta = 0, and
the estimator is exact (it equals `maxk`). Otherwise the constructor refuses (OFFPOLICY_MESSAGE says why).

Rewards must be finite for every completion (a reward function returning None for all of them is an
error here, where TRL would silently zero the advantage): max@k needs every sample of a group.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer

from maxk.advantages import ADVANTAGES, USES_LOG_RATIO

__all__ = ["MaxKGRPOTrainer", "OFFPOLICY_MESSAGE"]

OFFPOLICY_MESSAGE = (
    "{name} needs the current log-ratio log(pi_theta/pi_old) of every sample of a group at each PPO pass, "
    "and a loss whose gradient is sum_i rt'_i grad log pi_theta(y_i). TRL reuses one generation batch for "
    "num_iterations passes over shuffled per-device chunks and multiplies each sample's advantage by its own "
    "ratio, which would count delta_i twice. Use num_iterations=1 with steps_per_generation == "
    "gradient_accumulation_steps (then {name} is exact: delta = 0), another estimator (maxk, maxk_loo1, "
    "maxk_zscore) with num_iterations > 1, or maxk's own trainer for the first-order off-policy update."
)


class MaxKGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` whose advantages come from `maxk.advantages.ADVANTAGES[estimator]`.

    estimator: a maxk estimator name (maxk, maxk_loo, maxk_loo1, maxk_zscore, grpo, rloo, tang, ...).
    k: k of max@k (required by the max@k family; must be <= num_generations).
    estimator_options: keyword options bound to the estimator once (e.g. {"eps": 1e-6}).
    Every other argument is GRPOTrainer's. Shapes: rewards (P, N) -> advantages (P, N), N = num_generations.
    """

    def __init__(self, *args, estimator: str = "maxk", k: int | None = None,
                 estimator_options: dict | None = None, **kwargs):
        options = dict(estimator_options or {})
        if k is not None:
            options["k"] = int(k)
        self.maxk_estimator_name = estimator
        self.maxk_advantages = ADVANTAGES.bind(estimator, **options)  # unknown name: KeyError listing names
        super().__init__(*args, **kwargs)
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"MaxKGRPOTrainer sums the reward functions (weights reward_weights) before the estimator; "
                f"multi_objective_aggregation={self.multi_objective_aggregation!r} is not supported, "
                f"set it to 'sum_then_normalize'"
            )
        args = self.args
        one_step_per_generation = (
            self.num_iterations == 1 and args.steps_per_generation == args.gradient_accumulation_steps
        )
        if estimator in USES_LOG_RATIO and not one_step_per_generation:
            raise ValueError(OFFPOLICY_MESSAGE.format(name=estimator))
        self.maxk_advantages(torch.zeros(1, self.num_generations, dtype=torch.float64))  # k vs N, now
        self._maxk_rewards_per_func = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._maxk_rewards_per_func = rewards_per_func  # (B_all, F), gathered over processes
        return rewards_per_func

    def maxk_group_advantages(self, rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
        """(B_all,) rewards, groups of `num_generations` contiguous -> (B_all,) maxk advantages."""
        if not bool(torch.isfinite(rewards).all()):
            bad = torch.nonzero(~torch.isfinite(rewards)).flatten().tolist()[:8]
            raise ValueError(
                f"{self.maxk_estimator_name} needs a finite reward for every completion; rows {bad} have "
                f"none (every reward function returned None): score failures as 0 instead"
            )
        grouped = rewards.view(-1, num_generations)
        return self.maxk_advantages(grouped.double()).reshape(-1).to(rewards.dtype)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        weights = self.reward_weights.to(self._maxk_rewards_per_func.device)
        rewards = (self._maxk_rewards_per_func * weights.unsqueeze(0)).sum(dim=1)
        all_advantages = self.maxk_group_advantages(rewards, num_generations)

        local = len(output["advantages"])
        start = self.accelerator.process_index * local
        output["advantages"] = all_advantages[start : start + local].to(output["advantages"])

        # Truthful logs: TRL appended its own advantages for these rows last; put ours in their place.
        logged = self._logs["advantages"]
        for _ in range(min(len(all_advantages), len(logged))):
            logged.pop()
        logged.extend(all_advantages.tolist())
        self._metrics[mode]["maxk/advantage_mean"].append(all_advantages.mean().item())
        self._metrics[mode]["maxk/advantage_abs_mean"].append(all_advantages.abs().mean().item())
        return output
