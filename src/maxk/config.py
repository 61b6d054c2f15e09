"""Training configuration: frozen dataclasses nested by concern, loaded from YAML, overridden from the CLI.

    cfg = load_config("examples/train_tiny.yaml", ["algorithm.k=2", "optim.lr=1e-5"])
    cfg = Config(model=ModelConfig(path="..."), data=DataConfig(tasks="..."))   # programmatic
    cfg = replace_in(cfg, "algorithm.estimator", "grpo")                     # one field changed

Every field carries a help text (`field(metadata={"help": ...})`), shown by `maxk train --help`.
Cross-field checks run in `Config.__post_init__` and name the fix. The resolved config is written to the
run directory as `config.yaml` and reloads into an equal `Config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Estimator = Literal[
    "maxk",
    "maxk_loo",
    "maxk_loo1",
    "maxk_zscore",
    "maxk_offpolicy",
    "maxk_offpolicy_exact",
    "grpo",
    "dr_grpo",
    "rloo",
    "bon_max_mean",
    "bon_max_second",
    "tang",
    "passk_chen",
]
# Rewards whose values are 0/1 (needed by BINARY_ONLY estimators); the others are continuous in [0, 1].
BINARY_REWARDS = frozenset({"code_tests_binary", "math_answer"})


def _f(default: Any, help: str, **kw):
    """A dataclass field with a help text; list/dict/tuple defaults are fine (frozen, copied)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass(frozen=True)
class ModelConfig:
    path: str = _f("", "local Hugging Face model directory (or hub name 'org/model' when online)")
    dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "parameter dtype; bfloat16 on GPU")
    device: str = _f("auto", "'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:1'")
    gradient_checkpointing: bool = _f(False, "activation checkpointing in the update (saves memory)")
    lora_rank: int = _f(0, "LoRA rank through peft; 0 trains all parameters")
    lora_alpha: float = _f(16.0, "LoRA alpha (scale alpha / rank)")
    lora_target_modules: tuple[str, ...] = _f(
        ("q_proj", "k_proj", "v_proj", "o_proj"), "module names LoRA adapts"
    )


@dataclass(frozen=True)
class DataConfig:
    tasks: str = _f("", "training tasks: a JSONL file (maxk.rewards.load_tasks) or a hub dataset name")
    split: str | None = _f(None, "dataset split for hub datasets")
    max_tasks: int | None = _f(None, "use only the first this-many tasks")
    reward: str = _f("code_tests", "reward name in maxk.rewards.REWARDS (fraction of tests passed, ...)")
    reward_options: dict = _f(
        {}, "keyword options for the reward, e.g. test_timeout_s, bwrap=require (docs/rewards.md)"
    )
    prompts_per_step: int = _f(4, "P: prompts per training step (each sampled N times)")
    shuffle: bool = _f(True, "reshuffle the tasks every epoch (seeded by run.seed and the epoch)")
    chat: bool = _f(False, "wrap each prompt in the tokenizer's chat template (instruct models)")


@dataclass(frozen=True)
class RolloutConfig:
    n: int = _f(8, "N: samples per prompt")
    temperature: float = _f(1.0, "sampling temperature; the behaviour log-probs use the same scaling")
    top_p: float = _f(1.0, "nucleus sampling threshold (1 = off)")
    max_new_tokens: int = _f(256, "maximum completion length in tokens")
    batch_size: int = _f(64, "rows (prompt samples) per generate call")
    engine: Literal["auto", "hf", "fast"] = _f(
        "auto", "sampler: fast (maxk.decode; Llama, Mistral, Qwen2), hf (generate), auto (fast if supported)"
    )


@dataclass(frozen=True)
class AlgorithmConfig:
    estimator: Estimator = _f("maxk_offpolicy", "advantage estimator from maxk.advantages.ADVANTAGES")
    k: int = _f(4, "k of max@k that the estimator optimises (1 <= k <= N)")
    estimator_options: dict = _f({}, "keyword options for the estimator (e.g. delta_clip: 0.2)")
    ppo_epochs: int = _f(1, "mu: passes over each batch (PPO iterations); 3 in the paper")
    minibatch_size: int = _f(0, "samples per optimiser step, a multiple of N (whole groups); 0 = P * N")
    micro_batch_size: int = _f(16, "rows per forward/backward (gradient accumulation inside a minibatch)")
    length_buckets: int = _f(
        4, "passes per micro-batch, rows of similar length together, each cut at its longest row (1 = off)"
    )
    pass_cost_tokens: int = _f(
        128, "one more pass costs this many padded token positions: a micro-batch is cut only to skip more"
    )
    clip_eps: float = _f(0.2, "PPO clip epsilon (low side; and high side unless clip_eps_high is set)")
    clip_eps_high: float | None = _f(None, "separate upper clip epsilon (DAPO clip-higher, e.g. 0.28)")
    ratio_level: Literal["token", "sequence"] = _f("token", "importance ratio per token or per sequence")
    aggregation: Literal["token_mean", "sequence_mean", "sequence_sum"] = _f(
        "token_mean", "loss aggregation over tokens (see docs/training.md for the length-bias trade-off)"
    )
    kl_beta: float = _f(0.0, "weight of the k3 KL to the frozen initial model (0 = no reference model)")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = _f(1e-5, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    betas: tuple[float, float] = _f((0.9, 0.999), "AdamW betas")
    eps: float = _f(1e-8, "AdamW epsilon")
    max_grad_norm: float = _f(1.0, "gradient norm clipping threshold (<= 0 disables clipping)")
    schedule: Literal["constant", "linear", "cosine"] = _f("constant", "learning-rate schedule after warm-up")
    warmup_steps: int = _f(0, "optimiser steps of linear warm-up from 0")


@dataclass(frozen=True)
class EvalConfig:
    tasks: str | None = _f(None, "held-out tasks (JSONL); None disables evaluation")
    every: int = _f(0, "evaluate every this-many steps (0 = never; also after the last step when > 0)")
    n: int = _f(16, "samples per held-out prompt")
    ks: tuple[int, ...] = _f((1, 4, 16), "ks for max@k and pass@k")
    max_tasks: int | None = _f(None, "use only the first this-many held-out tasks")
    max_new_tokens: int | None = _f(None, "completion length at evaluation (None = rollout.max_new_tokens)")


@dataclass(frozen=True)
class RunConfig:
    output_dir: str = _f("runs/maxk", "run directory: config.yaml, metrics.jsonl, samples, checkpoints")
    steps: int = _f(100, "training steps (one rollout batch each)")
    seed: int = _f(0, "one seed for data order, sampling and initialisation of the trainer")
    save_every: int = _f(50, "checkpoint every this-many steps (and at the end); 0 = only at the end")
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep")
    samples_every: int = _f(10, "write completions to completions.jsonl every this-many steps (0 = never)")
    samples_per_log: int = _f(4, "how many completions to write each time")
    tensorboard: bool = _f(True, "write TensorBoard events when tensorboard is installed")
    progress: bool = _f(True, "show a tqdm progress bar")
    save_final_model: bool = _f(True, "save the trained model as a Hugging Face directory in final_model/")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = _f(ModelConfig(), "the policy")
    data: DataConfig = _f(DataConfig(), "training tasks and reward")
    rollout: RolloutConfig = _f(RolloutConfig(), "sampling")
    algorithm: AlgorithmConfig = _f(AlgorithmConfig(), "advantage estimator and the clipped update")
    optim: OptimConfig = _f(OptimConfig(), "optimiser and schedule")
    eval: EvalConfig = _f(EvalConfig(), "held-out evaluation during training")
    run: RunConfig = _f(RunConfig(), "outputs, steps, seed, checkpoints")

    def __post_init__(self):
        for problem in config_problems(self):
            raise ValueError(problem)

    @property
    def batch_size(self) -> int:
        """Samples per step, P * N."""
        return self.data.prompts_per_step * self.rollout.n

    @property
    def minibatch_size(self) -> int:
        return self.algorithm.minibatch_size or self.batch_size


def config_problems(c: Config) -> list[str]:
    """Cross-field problems, each naming the fix; empty when the config is consistent."""
    a, r, n = c.algorithm, c.rollout, c.rollout.n
    out = []
    positive = {
        "rollout.n": n,
        "rollout.max_new_tokens": r.max_new_tokens,
        "rollout.batch_size": r.batch_size,
        "data.prompts_per_step": c.data.prompts_per_step,
        "algorithm.ppo_epochs": a.ppo_epochs,
        "algorithm.micro_batch_size": a.micro_batch_size,
        "algorithm.length_buckets": a.length_buckets,
        "run.steps": c.run.steps,
        "rollout.temperature": r.temperature,
        "optim.lr": c.optim.lr,
    }
    out += [f"{name} must be > 0, got {v}" for name, v in positive.items() if not v > 0]
    if not 0 < r.top_p <= 1:
        out.append(f"rollout.top_p must be in (0, 1], got {r.top_p}")
    needs_k = a.estimator.startswith("maxk") or a.estimator == "passk_chen"
    if needs_k and not 1 <= a.k <= n:
        out.append(
            f"algorithm.k={a.k} must be between 1 and rollout.n={n}; raise rollout.n or lower algorithm.k"
        )
    if a.estimator == "maxk_loo" and a.k > n - 1:
        out.append(
            f"maxk_loo needs algorithm.k <= rollout.n - 1 (got k={a.k}, N={n}); use maxk_loo1 or raise N"
        )
    if a.estimator == "maxk_loo1" and a.k < 2:
        out.append("maxk_loo1 needs algorithm.k >= 2; use estimator 'maxk' for k = 1")
    if a.estimator in ("rloo", "tang") and n < 2:
        out.append(f"{a.estimator} needs rollout.n >= 2")
    if a.minibatch_size < 0 or a.minibatch_size % n:
        out.append(
            f"algorithm.minibatch_size={a.minibatch_size} must be a multiple of rollout.n={n} so that "
            f"minibatches hold whole groups; use e.g. {max(1, a.minibatch_size // n) * n}"
        )
    elif a.minibatch_size and c.batch_size % a.minibatch_size:
        out.append(
            f"algorithm.minibatch_size={a.minibatch_size} must divide the batch P * N = {c.batch_size}; "
            f"change data.prompts_per_step or algorithm.minibatch_size"
        )
    if a.estimator in _binary_only() and c.data.reward not in BINARY_REWARDS:
        out.append(
            f"estimator {a.estimator!r} needs 0/1 rewards but reward {c.data.reward!r} is continuous; use "
            f"one of {sorted(BINARY_REWARDS)} or a max@k estimator such as 'maxk_loo1'"
        )
    if a.clip_eps <= 0 or (a.clip_eps_high is not None and a.clip_eps_high <= 0):
        out.append("algorithm.clip_eps and clip_eps_high must be > 0")
    if a.pass_cost_tokens < 0:
        out.append(f"algorithm.pass_cost_tokens must be >= 0, got {a.pass_cost_tokens}")
    if a.kl_beta < 0:
        out.append(f"algorithm.kl_beta must be >= 0, got {a.kl_beta}")
    if c.eval.every > 0 and not c.eval.tasks:
        out.append("eval.every > 0 needs eval.tasks (a JSONL of held-out tasks); or set eval.every=0")
    if c.eval.every > 0 and any(k > c.eval.n or k < 1 for k in c.eval.ks):
        out.append(f"eval.ks={list(c.eval.ks)} must lie in [1, eval.n={c.eval.n}]")
    if c.model.lora_rank < 0:
        out.append("model.lora_rank must be >= 0 (0 = full fine-tuning)")
    return out


def _binary_only() -> frozenset:
    try:
        from maxk.advantages import BINARY_ONLY
    except ImportError:  # the core is always there in a release; keep config importable on its own
        return frozenset({"passk_chen"})
    return BINARY_ONLY


# ---------------------------------------------------------------------------------------------------------
# dicts, YAML and overrides
# ---------------------------------------------------------------------------------------------------------
def _coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` (from YAML) checked and converted to the annotated type `tp`; errors name the field."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [t for t in args if t is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}={value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = args[0] if args else Any
        return tuple(_coerce(v, item, where) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e-5' (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    return value


def from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass `cls` from a nested dict; unknown keys are an error that lists the known ones."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'{where}{u}' for u in unknown]}; known: {sorted(known)}")
    kwargs = {
        k: _coerce(v, hints[k], f"{where}{k}.")
        if dataclasses.is_dataclass(hints[k])
        else _coerce(v, hints[k], f"{where}{k}")
        for k, v in data.items()
    }
    return cls(**kwargs)


def to_dict(config) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON."""

    def plain(x):
        if dataclasses.is_dataclass(x):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    return plain(config)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'algorithm.k=4' -> (['algorithm', 'k'], 4); the value is parsed as YAML ('1e-5', 'true', '[1, 2]')."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.field=value, e.g. algorithm.k=4")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and value.lower() in ("none", "null"):
        value = None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Nested dict with each 'section.field=value' set (the dict is copied, not changed)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[path[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Config from a YAML file (or defaults when None) with 'section.field=value' overrides applied."""
    data = {}
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
    return from_dict(Config, apply_overrides(data, list(overrides)))


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def replace_in(config: Config, dotted: str, value: Any) -> Config:
    """A copy of `config` with one dotted field replaced (checked like a CLI override)."""
    data = to_dict(config)
    *sections, name = dotted.split(".")
    node = data
    for part in sections:
        node = node[part]
    if name not in node:
        raise ValueError(f"unknown config key {dotted!r}; known: {sorted(node)}")
    node[name] = to_dict(value)
    return from_dict(Config, data)


def field_help() -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) for every leaf field: the source of `maxk train --help`."""
    rows = []
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default):
            default = getattr(section.default, f.name)
            rows.append((f"{section.name}.{f.name}", f.metadata.get("help", ""), default))
    return rows
