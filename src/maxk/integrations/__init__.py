"""Adapters that plug maxk's estimators into distributed RL engines (plumbing, no maths).

- `maxk.integrations.verl`: registers maxk's advantage estimators in verl's registry (loaded on
  `import verl` through the `verl.plugins` entry point, or `VERL_USE_EXTERNAL_MODULES`).
- `maxk.integrations.verl_reward`: a `compute_score` for verl's `reward.custom_reward_function`.
- `maxk.integrations.trl`: `MaxKGRPOTrainer`, TRL's GRPOTrainer with any maxk estimator.

Nothing here is imported by `import maxk`; each module imports its engine only when used.
"""
