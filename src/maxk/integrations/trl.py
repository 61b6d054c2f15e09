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

`maxk_offpolicy` (every name in `maxk.advantages.USES_LOG_RATIO`) is recomputed at every PPO pass:
  - at the start of pass j >= 2 over a generation batch, one no-grad forward gives each buffered
    sample's current log-probs; its sequence log-ratio log(pi_theta/pi_old)(y_i) = sum_t of the token
    differences is gathered over processes, regrouped to (P, N) by the row ids carried through TRL's
    shuffle (`maxk_row`), and the estimator gives rt'_i (the first pass has delta = 0: rt' = rt);
  - TRL's loss multiplies the advantage by the ratio r it uses (per token, or the sequence's); the
    sample's own (1 + delta_i) is already inside rt'_i, so the adapter hands TRL the (B, T) advantage
    rt'_i / r (r measured in that same forward), and the unclipped gradient is exactly
    rt'_i grad log pi_theta(y_i), as MATH.md section 3 asks (like `maxk.losses` with
    weights_include_ratio=True). The clip still bounds r.
  This is exact only if the policy is fixed during a pass, i.e. one optimiser step per pass:
  steps_per_generation == gradient_accumulation_steps (TRL's default), and a PPO-clip loss_type; the
  constructor refuses other settings (OFFPOLICY_MESSAGE says why). Logged advantages are the first pass's;
  `maxk/delta_abs_mean` logs the mean |delta| of each later pass.

Rewards must be finite for every completion (a reward function returning None for all of them is an
error here, where TRL would silently zero the advantage): max@k needs every sample of a group.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer

from maxk.advantages import ADVANTAGES, USES_LOG_RATIO

__all__ = ["MaxKGRPOTrainer", "OFFPOLICY_MESSAGE"]

OFFPOLICY_MESSAGE = (
    "{name} is recomputed from the current log-ratios once at the start of every PPO pass, so the policy "
    "must not move inside a pass: set steps_per_generation == gradient_accumulation_steps (one optimiser "
    "step per pass; got {spg} and {gas}) and a PPO-clip loss_type in {losses} (got {loss!r}). "
    "Otherwise use an on-policy estimator (maxk, maxk_loo1, maxk_zscore) or maxk's own trainer."
)
CLIP_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")  # TRL loss types of the form -min(r A, clip(r) A)


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
        self.maxk_uses_log_ratio = estimator in USES_LOG_RATIO
        if self.maxk_uses_log_ratio and (
            args.steps_per_generation != args.gradient_accumulation_steps or self.loss_type not in CLIP_LOSSES
        ):
            raise ValueError(OFFPOLICY_MESSAGE.format(
                name=estimator, spg=args.steps_per_generation, gas=args.gradient_accumulation_steps,
                losses=CLIP_LOSSES, loss=self.loss_type))
        self.maxk_advantages(torch.zeros(1, self.num_generations, dtype=torch.float64))  # k vs N, now
        self._maxk_rewards_per_func = None
        self._maxk_rewards = None  # (P, N) rewards of the buffered generation batch (off-policy passes)

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
        per_func = self._maxk_rewards_per_func
        # TRL's sum over reward functions: nansum (a function may skip a row), NaN when all skipped it
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
        all_advantages = self.maxk_group_advantages(rewards, num_generations)

        local = len(output["advantages"])
        start = self.accelerator.process_index * local
        output["advantages"] = all_advantages[start : start + local].to(output["advantages"])
        if self.maxk_uses_log_ratio and mode == "train":
            self._maxk_rewards = rewards.view(-1, num_generations).double()
            # global row ids travel with the rows through TRL's shuffle and split
            output["maxk_row"] = torch.arange(start, start + local, device=rewards.device)

        # Truthful logs: TRL appended its own advantages for these rows last; put ours in their place.
        logged = self._logs["advantages"]
        for _ in range(min(len(all_advantages), len(logged))):
            logged.pop()
        logged.extend(all_advantages.tolist())
        self._metrics[mode]["maxk/advantage_mean"].append(all_advantages.mean().item())
        self._metrics[mode]["maxk/advantage_abs_mean"].append(all_advantages.abs().mean().item())
        return output

    # ------------------------------------------------------------------------------------------------------
    # Off-policy max@k: recompute at the start of every PPO pass (see the module docstring)
    # ------------------------------------------------------------------------------------------------------
    def _prepare_inputs(self, generation_batch):
        spg = self.args.steps_per_generation
        new_pass = self._step % spg == 0 and self._step % (spg * self.num_iterations) != 0
        if self.maxk_uses_log_ratio and self.model.training and new_pass and self._buffered_inputs:
            self._maxk_refresh_offpolicy()
        return super()._prepare_inputs(generation_batch)

    def _maxk_token_log_ratio(self, chunk) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, T) masked log pi_theta - log pi_old under the current parameters, (B, T) mask) of a chunk."""
        input_ids = torch.cat([chunk["prompt_ids"], chunk["completion_ids"]], dim=1)
        attention_mask = torch.cat([chunk["prompt_mask"], chunk["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            self.model, input_ids, attention_mask, chunk["completion_ids"].size(1),
            batch_size=self.args.per_device_train_batch_size,
            **{k: chunk.get(k) for k in _FORWARD_KEYS},
        )
        mask = chunk["completion_mask"]
        if "tool_mask" in chunk:
            mask = mask * chunk["tool_mask"]
        return (logps - chunk["old_per_token_logps"]) * mask, mask

    @torch.no_grad()
    def _maxk_refresh_offpolicy(self) -> None:
        """Recompute rt' for every buffered sample from the current sequence log-ratios; write rt' / r."""
        parts = [self._maxk_token_log_ratio(chunk) for chunk in self._buffered_inputs]
        rows = torch.cat([chunk["maxk_row"] for chunk in self._buffered_inputs])
        seq = torch.cat([token_lr.sum(-1) for token_lr, _ in parts])
        all_rows, all_seq = self.accelerator.gather(rows), self.accelerator.gather(seq)
        log_ratio = torch.empty_like(all_seq)
        log_ratio[all_rows] = all_seq
        p, n = self._maxk_rewards.shape
        adv = self.maxk_advantages(self._maxk_rewards, log_ratio=log_ratio.view(p, n).double()).reshape(-1)
        for chunk, (token_lr, mask) in zip(self._buffered_inputs, parts):
            if self.importance_sampling_level == "sequence":  # TRL's r: exp(masked mean token log-ratio)
                mean = token_lr.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
                token_lr = mean.expand_as(mask)
            chunk["advantages"] = adv[chunk["maxk_row"]].to(token_lr).unsqueeze(-1) / token_lr.exp()
        self._metrics["train"]["maxk/delta_abs_mean"].append(all_seq.exp().sub(1).abs().mean().item())


_FORWARD_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                 "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")
