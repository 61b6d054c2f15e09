"""The end-to-end demo: GRPO against max@k training on a procedurally generated code task, on a CPU.

`python -m maxk.demo` (or `make demo`) builds a tiny base policy, RL-trains it with `grpo`,
`maxk_zscore`, `maxk_loo1` and `maxk_offpolicy` under one budget, and reports Best-of-N curves on
held-out prompts. Modules: `tasks` (the task family), `base` (the SFT base model, cached),
`experiment` (training and sampling through maxk's trainer, rollout and sandbox), `report` (tables,
paired tests, summary), `run` (the pipeline for one seed). See docs/demo.md.
"""
