"""Config: YAML round trip, overrides, and bad configs that fail with messages naming the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from maxk.config import Config, field_help, load_config, replace_in, save_config, to_dict

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_tiny.yaml"


def test_example_loads_and_round_trips(tmp_path):
    cfg = load_config(EXAMPLE)
    assert cfg.algorithm.estimator == "maxk_offpolicy" and cfg.eval.ks == (1, 4, 8)
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_overrides_parse_as_yaml_and_win_over_the_file():
    cfg = load_config(
        EXAMPLE,
        ["algorithm.k=2", "optim.lr=1e-5", "eval.ks=[1, 2]", "algorithm.clip_eps_high=0.28",
         "data.reward_options={timeout: 3}", "model.lora_target_modules=q_proj", "run.progress=false"],
    )
    assert cfg.algorithm.k == 2 and cfg.optim.lr == 1e-5 and cfg.eval.ks == (1, 2)
    assert cfg.algorithm.clip_eps_high == 0.28 and cfg.data.reward_options == {"timeout": 3}
    assert cfg.model.lora_target_modules == ("q_proj",) and cfg.run.progress is False
    assert load_config(EXAMPLE, ["algorithm.clip_eps_high=null"]).algorithm.clip_eps_high is None


def test_frozen_and_replace_in():
    cfg = load_config(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.algorithm.k = 3
    other = replace_in(cfg, "algorithm.estimator", "grpo")
    assert other.algorithm.estimator == "grpo" and cfg.algorithm.estimator == "maxk_offpolicy"
    assert to_dict(replace_in(other, "algorithm.estimator", "maxk_offpolicy")) == to_dict(cfg)


@pytest.mark.parametrize(
    "override,message",
    [
        ("algorithm.k=9", r"algorithm.k=9 must be between 1 and rollout.n=8; raise rollout.n or lower"),
        ("algorithm.minibatch_size=12", r"multiple of rollout.n=8 so that minibatches hold whole groups"),
        ("algorithm.minibatch_size=24", r"must divide the batch P \* N = 16"),
        ("algorithm.estimator=passk_chen", r"needs 0/1 rewards but reward 'code_tests' is continuous"),
        ("algorithm.estimator=maxk_loo", None),  # k=4 <= N-1 = 7: fine
        ("algorithm.k=8", None),
        ("eval.tasks=null", r"eval.every > 0 needs eval.tasks"),
        ("eval.ks=[1, 16]", r"eval.ks=\[1, 16\] must lie in \[1, eval.n=8\]"),
        ("algorithm.estimator=nope", r"algorithm.estimator='nope' is not one of"),
        ("algorithm.kk=1", r"unknown config key\(s\) \['algorithm.kk'\]; known: \['aggregation'"),
        ("rollout.n=two", r"rollout.n must be an integer, got 'two'"),
        ("rollout.top_p=1.5", r"rollout.top_p must be in \(0, 1\]"),
        ("algorithm.aggregation=mean", r"not one of \['token_mean', 'sequence_mean', 'sequence_sum'\]"),
        ("run.steps=0", r"run.steps must be > 0"),
    ],
)
def test_bad_configs_name_the_fix(override, message):
    base = ["data.reward=code_tests"]
    if message is None:
        load_config(EXAMPLE, [*base, override])
        return
    with pytest.raises(ValueError, match=message):
        load_config(EXAMPLE, [*base, override])


def test_maxk_loo_needs_k_below_n():
    with pytest.raises(ValueError, match="maxk_loo needs algorithm.k <= rollout.n - 1"):
        load_config(EXAMPLE, ["algorithm.estimator=maxk_loo", "algorithm.k=8"])


def test_binary_estimator_with_binary_reward_is_fine():
    cfg = load_config(EXAMPLE, ["algorithm.estimator=passk_chen", "data.reward=code_tests_binary"])
    assert cfg.algorithm.estimator == "passk_chen"


def test_every_field_has_help_and_the_estimators_match_the_registry():
    rows = field_help()
    assert len(rows) > 40 and all(help_text for _, help_text, _ in rows)
    from typing import get_args

    from maxk.advantages import ADVANTAGES
    from maxk.config import Estimator

    assert set(get_args(Estimator)) == set(ADVANTAGES.names())


def test_default_config_is_valid_and_overrides_need_equals():
    assert Config().minibatch_size == Config().batch_size
    with pytest.raises(ValueError, match="section.field=value"):
        load_config(None, ["algorithm.k"])
