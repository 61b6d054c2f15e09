"""Checkpoints that survive SIGKILL: written to a temporary directory, then renamed into place (plumbing).

Layout inside a run directory:

    checkpoints/step_000010/state.pt   model, optimiser, scheduler, RNG states, trainer state
    checkpoints/latest                 the name of the newest complete checkpoint (replaced atomically)

A kill at any moment leaves either the previous checkpoint or the new one, never a half-written one:
the directory is complete (files fsynced) before `rename`, and `latest` is swapped with `os.replace`.
Leftover `.tmp-*` directories from a killed write are ignored and cleaned on the next save.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
LATEST = "latest"


def rng_states() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when present) CUDA generator states."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and `os.replace` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write `state` (anything `torch.save` takes) as checkpoint `step`; point `latest` at it; keep the newest
    `keep` checkpoints. Returns the checkpoint directory.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step_{step:06d}"
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / LATEST, name)
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[: max(len(done) - max(keep, 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "state.pt").exists() else None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """The state dict saved by `save_checkpoint` (trusted files only: it unpickles RNG states)."""
    return torch.load(Path(path) / "state.pt", map_location=map_location, weights_only=False)


def training_state(step: int, model, optimizer, scheduler, *, lora: bool = False) -> dict[str, Any]:
    """Everything a resume needs after `step` steps. The data position and the sampling seeds are functions
    of the step (maxk.trainer.tasks_for_step, step_seed), so the step is the data position.
    With LoRA only the trainable (adapter) weights are stored; the frozen base comes from model.path."""
    weights = model.state_dict()
    if lora:
        trainable = {name for name, q in model.named_parameters() if q.requires_grad}
        weights = {name: v for name, v in weights.items() if name in trainable}
    return {
        "step": step,
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_states(),
    }


def restore(state: dict[str, Any], model, optimizer, scheduler) -> int:
    """Load a `training_state` into the live objects; returns the step to continue from."""
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected:
        raise ValueError(f"checkpoint has weights the model lacks: {unexpected[:5]}; wrong model.path?")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng_states(state["rng"])
    return int(state["step"])


def save_final_model(model, tokenizer, path: Path) -> None:
    """The trained model as a Hugging Face directory (LoRA adapters merged into the base)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


# ----------------------------------------------------------------------------------------------------------
# The run's logs: metrics.jsonl, completions.jsonl, TensorBoard events, progress bar
# ----------------------------------------------------------------------------------------------------------
def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep the records with step <= last_step (and drop a half-written last line) after a resume."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class RunOutputs:
    """Appends one JSON line per step to metrics.jsonl (and some completions to completions.jsonl),
    mirrors the numbers to TensorBoard when it is installed, and shows a tqdm bar. On resume the records
    after the checkpoint's step are dropped first, so the files end as those of an uninterrupted run.
    Logging only: nothing here feeds back into training.
    """

    def __init__(self, run_dir: str | os.PathLike, config, *, start_step: int = 0):
        from tqdm.auto import tqdm

        self.dir = Path(run_dir)
        self.run = config.run
        self.key = f"max@{config.algorithm.k}"
        for name in ("metrics.jsonl", "completions.jsonl"):
            _truncate_jsonl(self.dir / name, start_step)
        self.metrics = open(self.dir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        self.samples = open(self.dir / "completions.jsonl", "a")  # noqa: SIM115
        self.tb = None
        if self.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(log_dir=str(self.dir / "tensorboard"), purge_step=start_step + 1)
        self.bar = tqdm(
            total=self.run.steps,
            initial=start_step,
            disable=not self.run.progress,
            desc="train",
            dynamic_ncols=True,
        )

    def log(self, step: int, metrics: dict[str, float], rollouts, rewards, tasks) -> None:
        self.metrics.write(json.dumps({"step": step, **metrics}) + "\n")
        self.metrics.flush()
        if self.tb is not None:
            for name, value in metrics.items():
                self.tb.add_scalar(name, value, step)
        if self.run.samples_every > 0 and step % self.run.samples_every == 0:
            self._write_samples(step, rollouts, rewards, tasks)
        self.bar.set_postfix(
            reward=f"{metrics['reward_mean']:.3f}",
            **{self.key: f"{metrics[self.key]:.3f}"},
            kl=f"{metrics.get('approx_kl', 0.0):.4f}",
            refresh=False,
        )
        self.bar.update(1)

    def _write_samples(self, step: int, rollouts, rewards, tasks) -> None:
        p, n = rewards.shape
        stride = max(1, (p * n) // max(self.run.samples_per_log, 1))
        for row in list(range(0, p * n, stride))[: self.run.samples_per_log]:
            task = tasks[row // n]
            record = {
                "step": step,
                "task_id": str(getattr(task, "id", row // n)),
                "sample": row % n,
                "prompt": task.prompt,
                "completion": rollouts.texts[row // n][row % n],
                "reward": float(rewards[row // n, row % n]),
            }
            self.samples.write(json.dumps(record) + "\n")
        self.samples.flush()

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()
        self.samples.close()
        if self.tb is not None:
            self.tb.close()
