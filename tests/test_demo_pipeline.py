"""Smoke run of the whole demo pipeline at toy size: SFT base (cached), RL, sampling, sandbox, report."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def toy_settings(base_steps: int, n_test: int):
    """The demo at toy size: a one-layer base, one RL step, grpo and maxk_offpolicy, 4 samples per prompt."""
    from maxk.demo.base import BaseConfig
    from maxk.demo.experiment import RLSettings
    from maxk.demo.run import DemoSettings

    return DemoSettings(
        base=BaseConfig(steps=base_steps, batch_size=8, hidden_size=32, num_layers=1, intermediate_size=64),
        rl=RLSettings(steps=1, prompts_per_step=2, n=4, k=2, minibatch_groups=2),
        methods=("grpo", "maxk_offpolicy"),
        n_eval=4,
        n_test=n_test,
        ks=(1, 2, 4),
    )


def test_pipeline_end_to_end_at_toy_size(tmp_path):
    from maxk.demo.run import print_seed_report, run_seed

    torch.set_num_threads(1)
    s = toy_settings(base_steps=3, n_test=3)
    lines: list[str] = []
    runs = run_seed(0, s, tmp_path / "out", tmp_path / "cache", log=lines.append)
    assert [r.label for r in runs] == ["base", "grpo", "maxk_offpolicy"]
    assert all(len(r.task_ids) == 3 for r in runs)
    assert any("sft step" in line for line in lines) and any("RL grpo" in line for line in lines)
    for r in runs:  # max@k is non-decreasing in k and in [0, 1]
        means = [r.overall["max@k"].at(k)[0] for k in (1, 2, 4)]
        assert 0.0 <= means[0] <= means[1] <= means[2] <= 1.0
    met = print_seed_report(runs, 4, tmp_path / "out", log=lines.append)
    assert isinstance(met, bool)
    for name in ("compare.md", "curves.png", "summary.txt", "curves.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert (tmp_path / "out" / "grpo" / "final_model" / "config.json").exists()
    # the base model is cached: a second call reuses it
    base_dirs = list((tmp_path / "cache").iterdir())
    assert len(base_dirs) == 1
    from maxk.demo.base import ensure_base

    again: list[str] = []
    assert ensure_base(tmp_path / "cache", s.base, log=again.append) == base_dirs[0]
    assert again and "cached" in again[0]


def test_parallel_seeds_print_the_same_numbers_as_one_at_a_time(tmp_path):
    from maxk.demo.__main__ import _run_parallel
    from maxk.demo.run import run_seed

    torch.set_num_threads(1)
    s = toy_settings(base_steps=2, n_test=2)
    parallel = _run_parallel([0, 1], s, tmp_path / "par", tmp_path / "cache", jobs=2, threads=1)
    for seed in (0, 1):
        alone = run_seed(seed, s, tmp_path / "seq" / f"seed{seed}", tmp_path / "cache", log=lambda m: None)
        for a, b in zip(parallel[seed], alone, strict=True):
            assert a.label == b.label
            for k in (1, 2, 4):
                assert a.overall["max@k"].at(k) == b.overall["max@k"].at(k)
