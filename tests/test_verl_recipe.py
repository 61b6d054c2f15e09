"""The verl recipe for the paper's setting composes and validates on CPU; its data and reward plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.reward import get_custom_reward_fn
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import omega_conf_to_dataclass, validate_config

import maxk.integrations.verl  # noqa: F401  (registers the estimators, as the plugin does on `import verl`)
from maxk.integrations.verl_reward import compute_score, task_of, verl_row
from maxk.rewards import load_tasks

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "verl"
TASKS = ROOT / "examples" / "tasks.jsonl"


def load_prepare_data():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_data", RECIPE / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recipe_config():
    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        return compose("maxk_codecontests", overrides=["data.train_files=/tmp/t.parquet"])


def test_recipe_composes_with_the_papers_hyperparameters(recipe_config):
    cfg = recipe_config
    # shared/MATH.md section 4: N = 8, T = 1.0, top-p 1.0, 256 new tokens, lr 5e-6, KL 0.01, clip 0.2,
    # 3 PPO iterations
    rollout, actor = cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.actor
    assert (rollout.n, rollout.temperature, rollout.top_p) == (8, 1.0, 1.0)
    assert cfg.data.max_response_length == 256 and cfg.data.max_prompt_length == 512
    assert actor.optim.lr == 5e-6 and actor.clip_ratio == 0.2 and actor.ppo_epochs == 3
    assert actor.use_kl_loss and actor.kl_loss_coef == 0.01 and not cfg.algorithm.use_kl_in_reward
    assert actor.ppo_mini_batch_size == cfg.data.train_batch_size  # one update per PPO iteration
    assert cfg.trainer.total_epochs == 1
    assert cfg.actor_rollout_ref.model.path == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert cfg.data.train_files == "/tmp/t.parquet"  # command-line overrides still win


def test_recipe_validates_with_verls_own_checks(recipe_config):
    cfg = recipe_config
    assert not need_critic(cfg) and need_reference_policy(cfg)  # outcome estimator, KL loss needs the ref
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    rollout = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    assert rollout.n == 8
    fn = core_algos.get_adv_estimator_fn(cfg.algorithm.adv_estimator)
    assert fn.maxk_name == "maxk" and cfg.algorithm.maxk.k < rollout.n


def test_recipe_reward_function_loads_through_verl(recipe_config):
    fn = get_custom_reward_fn(recipe_config)
    task = next(t for t in load_tasks(str(TASKS)) if t.id == "add")
    row = verl_row(task, split="train", index=0)
    gt = row["reward_model"]["ground_truth"]
    good = fn(data_source=row["data_source"], solution_str=f"```python\n{task.reference}\n```",
              ground_truth=gt, extra_info=row["extra_info"])
    bad = fn(data_source=row["data_source"], solution_str="```python\ndef add(a, b):\n    return a - b\n```",
             ground_truth=gt, extra_info=row["extra_info"])
    assert good == {"score": 1.0, "passed": 4.0, "total": 4.0}
    assert bad["total"] == 4.0 and bad["score"] == bad["passed"] / 4 < 1.0  # 0 - 0 == 0 passes, others fail


def test_verl_row_round_trips_the_task():
    for i, task in enumerate(load_tasks(str(TASKS))):
        row = verl_row(task, split="test", index=i)
        assert row["prompt"] == [{"role": "user", "content": task.prompt}]
        assert task_of(row["reward_model"]["ground_truth"]) == task
        assert task_of(json.loads(row["reward_model"]["ground_truth"])) == task  # already-decoded form


def test_compute_score_math_answer():
    task = next(t for t in load_tasks(str(TASKS)) if t.answer is not None)
    gt = verl_row(task, split="train", index=0)["reward_model"]["ground_truth"]
    right = compute_score("maxk", f"So it is \\boxed{{{task.answer}}}.", gt, reward_name="math_answer")
    wrong = compute_score("maxk", "So it is \\boxed{-1}.", gt, reward_name="math_answer")
    assert (right["score"], wrong["score"]) == (1.0, 0.0)


def test_prepare_data_writes_verl_parquet(tmp_path, capsys):
    from datasets import load_dataset

    prepare = load_prepare_data()
    assert prepare.main(["--tasks", str(TASKS), "--out", str(tmp_path), "--test-fraction", "0.34"]) == 0
    assert "wrote 4 train rows" in capsys.readouterr().out  # 6 tasks, round(0.34 * 6) = 2 held out
    train = load_dataset("parquet", data_files=str(tmp_path / "train.parquet"), split="train")
    test = load_dataset("parquet", data_files=str(tmp_path / "test.parquet"), split="train")
    assert (len(train), len(test)) == (4, 2)
    ids = {task_of(r["reward_model"]["ground_truth"]).id for r in list(train) + list(test)}
    assert ids == {t.id for t in load_tasks(str(TASKS))}  # a partition of the task file
    assert set(train.column_names) >= {"data_source", "prompt", "ability", "reward_model", "extra_info"}


def test_prepare_data_split_is_seeded():
    prepare = load_prepare_data()
    tasks = list(range(50))
    a, b = prepare.split_tasks(tasks, 0.2, seed=3), prepare.split_tasks(tasks, 0.2, seed=3)
    assert a == b and len(a[1]) == 10 and sorted(a[0] + a[1]) == tasks
    assert prepare.split_tasks(tasks, 0.2, seed=4) != a


def test_prepared_data_loads_in_verls_dataset_and_scores(recipe_config, tiny_model_dir, tmp_path):
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = (  # the tiny tokenizer has none; verl applies one to count prompt tokens
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    assert load_prepare_data().main(["--tasks", str(TASKS), "--out", str(tmp_path)]) == 0
    with initialize_config_dir(config_dir=str(RECIPE / "config"), version_base=None):
        cfg = compose("maxk_codecontests", overrides=[f"++data.cache_dir={tmp_path / 'cache'}"])
    data = RLHFDataset(data_files=str(tmp_path / "train.parquet"), tokenizer=tokenizer, config=cfg.data)
    assert len(data) == 5  # 6 tasks, round(0.1 * 6) = 1 held out; none longer than 512 tokens
    rows = [data[i] for i in range(len(data))]
    code = [(r, task_of(r["reward_model"]["ground_truth"])) for r in rows]
    code = [(r, t) for r, t in code if t.reference and t.n_tests]
    assert code, "the example task file has code tasks with reference solutions"
    for row, task in code:
        assert row["raw_prompt"] == [{"role": "user", "content": task.prompt}]
        gt = row["reward_model"]["ground_truth"]
        score = compute_score(row["data_source"], f"```python\n{task.reference}\n```", gt, row["extra_info"])
        assert score == {"score": 1.0, "passed": float(task.n_tests), "total": float(task.n_tests)}
