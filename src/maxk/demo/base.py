"""The demo's base policy: a tiny causal LM trained from scratch by supervised fine-tuning (plumbing).

No pretrained weights can be downloaded, so the demo makes its own: a byte-level BPE tokenizer trained
on the task text, a randomly initialised small Qwen2 (`maxk.models.build_tiny_model`), then next-token
training on (prompt, sampled solution) pairs from `tasks.sft_solution`: a program drawn uniformly from
those that fit the shown examples (80%) or a random program (20%). The resulting policy is diverse (it
spreads over the plausible programs) and imperfect (it sometimes writes a program that contradicts the
examples) — the starting point on which GRPO and max@k training are compared.

SFT prompts are the whole prompt space (train and test prompts): the solutions depend only on the shown
examples, never on a task's hidden program or tests, so nothing about the test labels leaks; it plays
the role of pre-training on problem statements. The model is cached under `cache_dir/<key>` where the
key hashes the settings, so a second run reuses it.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from maxk.demo.tasks import (
    DEFAULT_SPEC,
    TaskSpec,
    grammar,
    prompt_space,
    prompt_text,
    sft_solution,
)

VERSION = 1  # bump when the recipe changes so old caches are not reused


@dataclass(frozen=True)
class BaseConfig:
    """Model size and SFT recipe of the base policy."""

    seed: int = 0  # weight init and SFT sampling seed
    vocab_size: int = 320  # BPE vocabulary (byte-level; the task text needs few merges)
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    steps: int = 200  # SFT optimiser steps
    batch_size: int = 64  # sequences per step
    lr: float = 3e-3  # AdamW peak learning rate (linear warm-up, cosine decay)
    noise: float = 0.2  # fraction of SFT solutions that are random programs

    def key(self) -> str:
        blob = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def tokenizer_texts(spec: TaskSpec = DEFAULT_SPEC) -> list[str]:
    """Text the tokenizer is trained on: every prompt and every program of the grammar."""
    return [prompt_text(ex) for ex in prompt_space(spec)] + [p.source for p in grammar()] * 5


def _sft_batch(space, prompt_ids, program_ids: dict, rng, config: BaseConfig, eos: int, pad: int):
    """(input_ids, labels, attention_mask), right padded; labels are -100 on prompt and padding.
    Each row: a random prompt of `space` and a solution drawn by `tasks.sft_solution`."""
    rows = []
    for _ in range(config.batch_size):
        i = rng.randrange(len(space))
        rows.append((prompt_ids[i], program_ids[sft_solution(space[i], rng, config.noise)] + [eos]))
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for r, (p, c) in enumerate(rows):
        seq = p + c
        ids[r, : len(seq)] = torch.tensor(seq)
        labels[r, len(p) : len(seq)] = torch.tensor(c)
        mask[r, : len(seq)] = 1
    return ids, labels, mask


def train_base(out_dir: Path, config: BaseConfig, spec: TaskSpec = DEFAULT_SPEC, log=print) -> Path:
    """Build the tokenizer and model in `out_dir`, run SFT, save. Returns `out_dir`."""
    from maxk.models import build_tiny_model, load_model_and_tokenizer

    build_tiny_model(
        out_dir,
        tokenizer_texts(spec),
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=128,
        seed=config.seed,
    )
    model, tok = load_model_and_tokenizer(str(out_dir))
    space = prompt_space(spec)
    prompt_ids = [tok(prompt_text(ex))["input_ids"] for ex in space]
    program_ids = {p.source: tok(p.source)["input_ids"] for p in grammar()}
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + torch.cos(torch.tensor(torch.pi * s / config.steps)).item())
        ),
    )
    model.train()
    t0, pad = time.time(), tok.pad_token_id
    for step in range(config.steps):
        ids, labels, mask = _sft_batch(space, prompt_ids, program_ids, rng, config, tok.eos_token_id, pad)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == config.steps - 1:
            log(f"  sft step {step:4d}/{config.steps}  loss {loss.item():.3f}  ({time.time() - t0:.0f}s)")
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "base_config.json").write_text(json.dumps(asdict(config), indent=2))
    return out_dir


def ensure_base(cache_dir: Path, config: BaseConfig, spec: TaskSpec = DEFAULT_SPEC, log=print) -> Path:
    """The cached base model directory for `config`, training it first when absent."""
    out = Path(cache_dir) / f"base-{config.key()}"
    if (out / "base_config.json").exists():
        log(f"base model: cached at {out}")
        return out
    log(f"base model: training from scratch into {out}")
    tmp = out.with_name(out.name + ".tmp")
    train_base(tmp, config, spec, log=log)
    tmp.rename(out)
    return out
