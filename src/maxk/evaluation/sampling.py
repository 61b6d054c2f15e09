"""The Best-of-N evaluation loop: sample N completions per task, score them, append to samples.jsonl.

For prompt index p (position in the task list) the N samples are drawn by one call of
`maxk.rollout.generate_rollouts` seeded with prompt_seed(seed, p), so each prompt's samples are a function
of (model, task, options, seed, p) alone: a run killed at any point and restarted with the same
arguments re-samples only the prompts it had not finished and ends with the same file, byte for byte,
as an uninterrupted run (see maxk.evaluation.resume). Scoring goes through
`maxk.rewards.score_completions` (one task per completion); the per-sample mean token entropy comes
from the rollout. Records follow the schema of maxk.evaluation.schema.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from maxk.evaluation.metrics import Curves, curves_from_groups
from maxk.evaluation.resume import append_group, check_or_write_settings, load_completed
from maxk.evaluation.schema import group_records

CODEX_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")  # raw-prompt continuation
# chat answers: end of the fenced block, then the top-level usage examples small models append
CHAT_STOP = ("\n```", "\nprint(", "\nassert ", "\n# Example", "\n# Test", "\nif __name__")


@dataclass(frozen=True)
class EvalConfig:
    """Sampling and scoring settings of one evaluation (all of them are part of run.json)."""

    n: int = 16  # samples per prompt (N)
    reward: str = "code_tests"  # name in maxk.rewards.REWARDS
    reward_options: dict = field(default_factory=dict)  # keyword options of the reward
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus truncation
    max_new_tokens: int = 256  # completion length limit
    batch_size: int = 64  # rows per generate call
    engine: str = "auto"  # sampler of maxk.rollout.generate_rollouts: "auto", "fast" or "hf"
    seed: int = 0  # base seed; prompt p uses prompt_seed(seed, p)
    stop: tuple[str, ...] = ()  # completion text is cut at the first of these strings before scoring
    chat: bool = False  # wrap the prompt in the tokenizer's chat template

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1 samples per prompt, got {self.n}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if self.engine not in ("auto", "fast", "hf"):
            raise ValueError(f"engine must be 'auto', 'fast' or 'hf', got {self.engine!r}")


@dataclass
class EvalResult:
    """What an evaluation produced: curves, every record (prompt order) and, with out_dir, the files."""

    curves: Curves
    records: list[dict]
    samples_path: Path | None = None
    files: dict[str, str] = field(default_factory=dict)


def prompt_seed(seed: int, prompt_index: int) -> int:
    """A 31-bit seed derived from (seed, prompt_index) with numpy's SeedSequence (stable across runs)."""
    return int(np.random.SeedSequence([seed, prompt_index]).generate_state(1, dtype=np.uint32)[0] >> 1)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Text up to the first occurrence of any stop string ('' stop list: unchanged)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def tasks_fingerprint(tasks) -> str:
    h = hashlib.sha256()
    for t in tasks:
        h.update(f"{t.id}\0{t.prompt}\0".encode())
    return h.hexdigest()[:16]


def prompt_text(tokenizer, prompt: str, chat: bool) -> str:
    if not chat:
        return prompt
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sample_prompt(model, tokenizer, task, p: int, cfg: EvalConfig) -> list[dict]:
    """Sample and score the N completions of task `task` at prompt index p; returns N records."""
    from maxk.rewards import score_completions
    from maxk.rollout import generate_rollouts

    ro = generate_rollouts(
        model,
        tokenizer,
        [prompt_text(tokenizer, task.prompt, cfg.chat)],
        n=cfg.n,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        seed=prompt_seed(cfg.seed, p),
        engine=cfg.engine,
    )
    completions = [cut_at_stop(t, cfg.stop) for t in ro.texts[0]]
    scores = score_completions(cfg.reward, completions, [task] * cfg.n, **cfg.reward_options)
    mask = ro.completion_mask.float()
    ntok = mask.sum(1)  # (N,)
    ent = (ro.entropy.float() * mask).sum(1) / ntok.clamp(min=1)
    return [
        {
            "task_id": str(task.id),
            "prompt_index": p,
            "sample_index": i,
            "completion": completions[i],
            "reward": float(s.reward),
            "status": s.status,
            "passed": s.passed,
            "total": s.total,
            "num_tokens": int(ntok[i]),
            "entropy": round(float(ent[i]), 6),
        }
        for i, s in enumerate(scores)
    ]


def evaluate_best_of_n(
    model,
    tokenizer,
    tasks,
    *,
    config: EvalConfig | None = None,
    ks=None,
    out_dir=None,
    run_info: dict | None = None,
    n_boot: int = 2000,
    label: str | None = None,
    plot: bool = True,
    progress: bool = True,
    **options,
) -> EvalResult:
    """Best-of-N evaluation of `model` on `tasks`: N samples per task, scored, curves with intervals.

    config: an EvalConfig, or pass its fields as keywords (n=..., reward=..., seed=...).
    ks: the ks to report (default 1, 2, 4, ... <= n). With out_dir, samples stream to
    out_dir/samples.jsonl (resumable: rerun with the same settings to continue) and metrics.json,
    metrics.md and curves.png are written at the end; run_info (e.g. model path) is stored in run.json
    and must match on resume. Without out_dir everything stays in memory.
    """
    cfg = config if config is not None else EvalConfig(**options)
    if config is not None and options:
        raise ValueError(f"pass either config or keyword settings, not both (got {sorted(options)})")
    if not tasks:
        raise ValueError("no tasks to evaluate")
    task_ids = [str(t.id) for t in tasks]
    if len(set(task_ids)) != len(task_ids):
        raise ValueError("task ids must be unique (they key the samples)")
    done: dict[int, list[dict]] = {}
    path = None
    if out_dir is not None:
        out = Path(out_dir)
        settings = {
            **asdict(cfg),
            "tasks": tasks_fingerprint(tasks),
            "n_tasks": len(tasks),
            **(run_info or {}),
        }
        check_or_write_settings(out, settings)
        path = out / "samples.jsonl"
        done = load_completed(path, task_ids, cfg.n)
    if progress and done:
        print(f"resuming: {len(done)} of {len(tasks)} prompts already sampled", file=sys.stderr)
    for p, task in enumerate(tasks):
        if p in done:
            continue
        t0 = time.perf_counter()
        recs = sample_prompt(model, tokenizer, task, p, cfg)
        if path is not None:
            append_group(path, recs)
        done[p] = recs
        if progress:
            r = [x["reward"] for x in recs]
            print(
                f"[{len(done)}/{len(tasks)}] {task.id}: mean reward {np.mean(r):.3f}, best {max(r):.3f} "
                f"({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    records = [r for p in sorted(done) for r in done[p]]
    if label is None and out_dir is not None:
        label = Path(out_dir).resolve().name
    curves = curves_from_groups(group_records(records), ks, n_boot=n_boot, label=label or "")
    result = EvalResult(curves=curves, records=records, samples_path=path)
    if out_dir is not None:
        from maxk.evaluation.report import write_metrics_report

        result.files = write_metrics_report(curves, out_dir, plot=plot)
    return result
