"""maxk's advantage estimators inside verl (>= 0.9): registration and the flat <-> (P, N) translation.

Importing this module registers every entry of `maxk.advantages.ADVANTAGES` in verl's estimator
registry (`verl.trainer.ppo.core_algos.register_adv_est`). Names: the max@k family keeps its own name
(`maxk`, `maxk_loo`, `maxk_loo1`, `maxk_zscore`); the peers get a `maxk.` prefix so they never collide
with verl's built-ins (`maxk.grpo`, `maxk.rloo`, `maxk.tang`, `maxk.bon_max_mean`, ...). It is loaded:
  - on every `import verl` (driver and Ray workers) through the `verl.plugins` entry point that maxk's
    pyproject declares (`maxk = "maxk.integrations.verl"`);
  - or by `VERL_USE_EXTERNAL_MODULES=maxk.integrations.verl`, or by importing it yourself.

Options come from the `algorithm` config node:

    algorithm.adv_estimator=maxk_loo1  +algorithm.maxk.k=4  +algorithm.maxk.options.eps=1e-6

What verl hands an estimator: `token_level_rewards` (B, T), `response_mask` (B, T), `index` (B,) the
group id (`uid`) of each row; rows of one group need not be adjacent and groups may differ in size.
The adapter sums rewards over T (verl's outcome-reward convention, as its GRPO does), regroups rows by
uid into one dense (G, n) tensor per group size n (no padding: one estimator call per size), calls the
maxk estimator, scatters back and broadcasts over the response tokens: advantages = A[:, None] * mask.
Returns (advantages, returns) with returns = advantages, like verl's outcome estimators.

`maxk_offpolicy` is registered but refuses with an explanation: verl computes advantages once per batch
on the driver, and its policy loss sees one shuffled micro-batch of (old_log_prob, log_prob, advantages,
mask) without group ids or rewards, so the other samples' current ratios that rt' needs are not there.
See docs/scale-out.md for what to use instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch

from maxk.advantages import ADVANTAGES, USES_LOG_RATIO

__all__ = ["group_rows", "grouped_advantages", "verl_estimator", "verl_name", "register_all"]

CONFIG_NODE = "maxk"  # algorithm.maxk.k, algorithm.maxk.options


def verl_name(name: str) -> str:
    """The name a maxk estimator has in verl's registry: `maxk*` as is, the rest as `maxk.<name>`."""
    return name if name.startswith("maxk") else f"maxk.{name}"


def group_rows(index) -> dict[int, np.ndarray]:
    """Rows of each group, bucketed by group size.

    index: (B,) group ids of any hashable kind (verl's `uid` strings). Returns {n: (G_n, n) int64 array}:
    row r of bucket n lists the batch rows of one group with n members, in their batch order;
    groups ordered by id. Every batch row appears exactly once over all buckets.
    """
    index = np.asarray(index)
    if index.ndim != 1 or index.size == 0:
        raise ValueError(f"index must be a non-empty (B,) array of group ids, got shape {index.shape}")
    _, inverse, counts = np.unique(index, return_inverse=True, return_counts=True)
    order = np.argsort(inverse.reshape(-1), kind="stable")  # rows grouped by group id, batch order inside
    starts = np.cumsum(counts) - counts
    return {
        int(n): order[starts[counts == n][:, None] + np.arange(n)]
        for n in np.unique(counts)
    }


def grouped_advantages(scores: torch.Tensor, index, estimator: Callable[[torch.Tensor], torch.Tensor]):
    """Apply a (G, n) -> (G, n) estimator to flat per-row scores grouped by `index`; returns (B,).

    scores: (B,) one scalar reward per row. Groups of equal size n are stacked into one (G_n, n) call.
    """
    if scores.dim() != 1 or scores.shape[0] != len(index):
        raise ValueError(f"scores must be (B,) with B = len(index) = {len(index)}, got {tuple(scores.shape)}")
    out = torch.empty_like(scores)
    for rows in group_rows(index).values():
        rows_t = torch.as_tensor(rows, device=scores.device)
        out[rows_t] = estimator(scores[rows_t]).to(out.dtype)
    return out


def _options(config) -> tuple[int | None, dict]:
    """(k, options) from the `algorithm` config node (DictConfig, dict or verl's AlgoConfig)."""
    node = config.get(CONFIG_NODE, None)
    if node is None:
        return None, {}
    k = node.get("k", None)
    options = node.get("options", None) or {}
    return (None if k is None else int(k)), dict(options)


def verl_estimator(name: str) -> Callable:
    """A verl advantage-estimator function for the maxk estimator `name`.

    Signature as verl calls it: fn(token_level_rewards (B, T), response_mask (B, T), index (B,),
    config=algorithm node, **ignored) -> (advantages (B, T), returns (B, T)).
    """
    estimator = ADVANTAGES.get(name)
    needs_k = inspect.signature(estimator).parameters["k"].default is inspect.Parameter.empty

    def compute_maxk_advantage(token_level_rewards, response_mask, index=None, config=None, **_ignored):
        if index is None:
            raise ValueError(f"{name} needs group ids: verl passes them as `uid` (non_tensor_batch['uid'])")
        k, options = _options(config if config is not None else {})
        if needs_k and k is None:
            raise ValueError(f"{name} needs k of max@k: set it with +algorithm.{CONFIG_NODE}.k=K")
        kwargs = {} if k is None else {"k": k}
        with torch.no_grad():
            scores = token_level_rewards.sum(dim=-1)
            scalars = grouped_advantages(scores, index, lambda r: estimator(r, **kwargs, **options))
            advantages = scalars.unsqueeze(-1) * response_mask
        return advantages, advantages

    compute_maxk_advantage.__name__ = f"compute_{name}_advantage"
    compute_maxk_advantage.__qualname__ = compute_maxk_advantage.__name__
    compute_maxk_advantage.__doc__ = f"maxk estimator {name!r} through maxk.integrations.verl.\n\n" + (
        estimator.__doc__ or ""
    )
    compute_maxk_advantage.maxk_name = name
    return compute_maxk_advantage


OFFPOLICY_MESSAGE = (
    "{name} cannot run inside verl: it needs, at every PPO mini-batch step, the current sequence "
    "log-ratio of every sample of a group together with the group's rewards, but verl computes advantages "
    "once per batch on the driver and its policy loss sees only (old_log_prob, log_prob, advantages, mask) "
    "of one shuffled, length-balanced micro-batch. Use algorithm.adv_estimator=maxk (or maxk_loo1 / "
    "maxk_zscore): with actor.ppo_epochs=1 and ppo_mini_batch_size=train_batch_size it equals "
    "maxk_offpolicy exactly (the policy has not moved, delta = 0); with several updates per batch verl's "
    "clipped ratio corrects each sample's own term only (zeroth order). For the first-order correction use "
    "maxk's own trainer or maxk.integrations.trl.MaxKGRPOTrainer. See docs/scale-out.md."
)


def _refusal(name: str) -> Callable:
    """The verl entry for an estimator that needs per-pass log-ratios: always raises, saying why."""

    def refuse_in_verl(*_args, **_kwargs):
        raise NotImplementedError(OFFPOLICY_MESSAGE.format(name=name))

    refuse_in_verl.maxk_name = name
    return refuse_in_verl


def _register(registry: dict, register_adv_est, name: str, fn) -> None:
    existing = registry.get(name)
    if existing is not None and getattr(existing, "maxk_name", None) == fn.maxk_name:
        return  # already registered by maxk (module imported twice, e.g. entry point + env variable)
    register_adv_est(name)(fn)


def register_all() -> list[str]:
    """Register every maxk estimator in verl's registry (idempotent); returns the verl names."""
    from verl.trainer.ppo import core_algos

    names = []
    for name in ADVANTAGES.names():
        fn = _refusal(name) if name in USES_LOG_RATIO else verl_estimator(name)
        _register(core_algos.ADV_ESTIMATOR_REGISTRY, core_algos.register_adv_est, verl_name(name), fn)
        names.append(verl_name(name))
    return names


REGISTERED = register_all()
