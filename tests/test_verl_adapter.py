"""maxk estimators inside verl: regrouping by uid, verl's own compute_advantage, plugin loading."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

# verl is installed by `make setup` (extra [verl]); no skip: a missing install must fail here.
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import compute_advantage

from maxk.advantages import ADVANTAGES
from maxk.integrations import verl as maxk_verl

T = 6  # response length


def verl_batch(rewards: list[float], uids: list[str], lengths: list[int]) -> DataProto:
    """A DataProto as verl's trainer builds it: outcome reward on the last valid response token."""
    b = len(rewards)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()
    tlr = torch.zeros(b, T)
    tlr[torch.arange(b), torch.tensor(lengths) - 1] = torch.tensor(rewards)
    return DataProto.from_dict(
        tensors={"token_level_rewards": tlr, "response_mask": mask},
        non_tensors={"uid": np.array(uids, dtype=object)},
    )


def core_oracle(name: str, rewards: list[float], uids: list[str], **kwargs) -> torch.Tensor:
    """maxk's core called on each group separately (a plain Python loop over groups), scattered back."""
    rows = defaultdict(list)
    for i, u in enumerate(uids):
        rows[u].append(i)
    out = torch.zeros(len(rewards))
    for idx in rows.values():
        group = torch.tensor([rewards[i] for i in idx])[None, :]
        out[idx] = ADVANTAGES.get(name)(group, **kwargs)[0].float()
    return out


# Four groups of sizes 3, 4, 4, 5, interleaved in the batch as verl's balancing may leave them.
UIDS = list("abcdbcadcbadcddbc")
REWARDS = [0.1, 0.9, 0.0, 0.5, 0.3, 1.0, 0.2, 0.7, 0.0, 0.4, 0.6, 0.25, 1.0, 0.8, 0.55, 0.05, 0.35]
LENGTHS = [1 + (3 * i) % T for i in range(len(UIDS))]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=40))
def test_group_rows_is_a_partition_bucketed_by_size(ids):
    uids = np.array([f"u{i}" for i in ids], dtype=object)
    buckets = maxk_verl.group_rows(uids)
    seen = np.concatenate([rows.reshape(-1) for rows in buckets.values()])
    assert sorted(seen.tolist()) == list(range(len(ids)))  # every row exactly once
    for n, rows in buckets.items():
        assert rows.shape[1] == n
        for group in rows:
            assert len(set(uids[group])) == 1  # one uid per group
            assert (uids == uids[group[0]]).sum() == n  # the whole group
            assert list(group) == sorted(group)  # batch order kept inside a group


@pytest.mark.parametrize(
    "name,k",
    [("maxk", 2), ("maxk", 3), ("maxk_loo", 2), ("maxk_loo1", 3), ("maxk_zscore", 2), ("grpo", None),
     ("dr_grpo", None), ("rloo", None), ("tang", None), ("bon_max_mean", None), ("bon_max_second", None)],
)
def test_verl_compute_advantage_equals_maxk_core(name, k):
    node = {"adv_estimator": maxk_verl.verl_name(name)}
    if k is not None:
        node["maxk"] = {"k": k}
    data = compute_advantage(verl_batch(REWARDS, UIDS, LENGTHS), adv_estimator=maxk_verl.verl_name(name),
                             config=OmegaConf.create(node))
    kwargs = {} if k is None else {"k": k}
    expected = core_oracle(name, REWARDS, UIDS, **kwargs)
    mask = data.batch["response_mask"]
    torch.testing.assert_close(data.batch["advantages"], expected[:, None] * mask)
    torch.testing.assert_close(data.batch["returns"], data.batch["advantages"])
    assert bool(((data.batch["advantages"] != 0).float() <= mask).all())  # nothing on padding


def test_binary_only_estimator_through_verl():
    binary = [float(r >= 0.5) for r in REWARDS]
    data = compute_advantage(verl_batch(binary, UIDS, LENGTHS), adv_estimator="maxk.passk_chen",
                             config=OmegaConf.create({"maxk": {"k": 2}}))
    expected = core_oracle("passk_chen", binary, UIDS, k=2)
    torch.testing.assert_close(data.batch["advantages"][:, 0], expected * data.batch["response_mask"][:, 0])


def test_options_node_reaches_the_estimator():
    cfg = OmegaConf.create({"maxk": {"k": 2, "options": {"eps": 0.5}}})
    data = compute_advantage(verl_batch(REWARDS, UIDS, LENGTHS), adv_estimator="maxk_zscore", config=cfg)
    expected = core_oracle("maxk_zscore", REWARDS, UIDS, k=2, eps=0.5)
    default = core_oracle("maxk_zscore", REWARDS, UIDS, k=2)
    assert not torch.allclose(expected, default)  # the option matters, so the check below can fail
    torch.testing.assert_close(data.batch["advantages"][:, 0], expected * data.batch["response_mask"][:, 0])


def test_missing_k_says_how_to_set_it():
    with pytest.raises(ValueError, match=r"algorithm\.maxk\.k"):
        compute_advantage(verl_batch(REWARDS, UIDS, LENGTHS), adv_estimator="maxk",
                          config=OmegaConf.create({}))


def test_group_smaller_than_k_is_an_error_not_a_silent_change():
    with pytest.raises(ValueError):
        compute_advantage(verl_batch(REWARDS, UIDS, LENGTHS), adv_estimator="maxk",
                          config=OmegaConf.create({"maxk": {"k": 4}}))  # group "a" has 3 samples


def test_offpolicy_refuses_with_the_reason():
    with pytest.raises(NotImplementedError, match="docs/scale-out.md"):
        compute_advantage(verl_batch(REWARDS, UIDS, LENGTHS), adv_estimator="maxk_offpolicy",
                          config=OmegaConf.create({"maxk": {"k": 2}}))


def test_every_maxk_estimator_is_registered_in_verl():
    for name in ADVANTAGES.names():
        assert maxk_verl.verl_name(name) in core_algos.ADV_ESTIMATOR_REGISTRY
    assert "grpo" in core_algos.ADV_ESTIMATOR_REGISTRY and core_algos.get_adv_estimator_fn("grpo") is not (
        core_algos.get_adv_estimator_fn("maxk.grpo"))  # verl's own entries are untouched
    assert maxk_verl.register_all() == maxk_verl.REGISTERED  # idempotent


PROBE = (
    "import sys, verl\n"
    "from verl.trainer.ppo import core_algos\n"
    "print('maxk_loo1' in core_algos.ADV_ESTIMATOR_REGISTRY, 'maxk.integrations.verl' in sys.modules)\n"
)


def run_probe(**env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    full.update(env, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", PROBE], env=full, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_installed_maxk_declares_the_verl_plugin_entry_point():
    eps = {ep.name: ep.value for ep in entry_points(group="verl.plugins")}
    assert eps.get("maxk") == "maxk.integrations.verl", (
        'pyproject.toml needs [project.entry-points."verl.plugins"] maxk = "maxk.integrations.verl" '
        "and a reinstall (pip install -e . --no-deps)"
    )


def test_bare_import_verl_registers_maxk():
    assert run_probe() == "True True"


@pytest.mark.slow  # a second fresh `import verl` (~20 s); the fallback where entry points are not scanned
def test_external_modules_variable_registers_maxk_without_entry_points():
    env = {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": "maxk.integrations.verl"}
    assert run_probe(**env) == "True True"
