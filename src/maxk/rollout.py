"""Sampling N completions per prompt from a Hugging Face causal LM, with behaviour log-probs (plumbing).

Shapes: P prompts, N samples per prompt, B = P * N rows, Tp prompt tokens (left padded), T completion
tokens (right padded). Sample i of prompt p is row p * N + i.

The behaviour policy is the temperature-scaled model, pi(y_t | y_<t) = softmax(logits / temperature).
Top-p only truncates *sampling*; the stored log-probs are those of the temperature-scaled distribution,
exactly what `token_log_probs` recomputes in the update (same scaling, same position ids), so the
PPO ratio is 1 at the first pass up to float rounding (tested).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ENGINES = ("auto", "hf", "fast")  # generate_rollouts(engine=...): maxk.decode where supported, or HF generate


@dataclass
class Rollouts:
    """Completions of P prompts, N each, with everything the update needs.

    texts: (P, N) nested list of completion strings (special tokens removed).
    prompt_ids, prompt_mask: (B, Tp) long, left padded.
    completion_ids, completion_mask: (B, T) long; mask is 1 up to and including the first EOS.
    logprobs: (B, T) float32, log pi_behaviour(token) under the temperature-scaled model; 0 where masked.
    entropy: (B, T) float32, entropy of the temperature-scaled next-token distribution; 0 where masked.
    num_tokens: total completion tokens generated (completion_mask.sum()).
    finished: (B,) bool, True where the completion ended with EOS (False: cut at max_new_tokens).
    """

    texts: list[list[str]]
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    logprobs: torch.Tensor
    entropy: torch.Tensor
    num_tokens: int
    finished: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        """(B, Tp + T) prompt then completion."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, Tp + T) 1 on real prompt tokens and on completion tokens up to EOS."""
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @property
    def shape(self) -> tuple[int, int]:
        """(P, N)."""
        return len(self.texts), len(self.texts[0]) if self.texts else 0


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_token_id: int | list[int]) -> torch.Tensor:
    """1 on tokens up to and including the first EOS of each row, 0 after; all 1 if there is no EOS.

    completion_ids: (B, T) long; returns (B, T) long.
    """
    eos = torch.as_tensor(eos_token_id, device=completion_ids.device).reshape(-1)
    is_eos = torch.isin(completion_ids, eos).long()
    eos_before = is_eos.cumsum(dim=1) - is_eos  # number of EOS strictly before t
    return (eos_before == 0).long()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: cumsum(mask) - 1, clamped at 0 on the padding. (B, L) -> (B, L)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def log_probs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, entropy=True):
    """log softmax(logits / temperature) at `tokens`, and the entropy of that distribution (None when
    entropy=False, which saves three passes over the logits).

    logits: (..., V); tokens: (...) long; returns two (...) float32 tensors.
    """
    logp_all = F.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return logp, -(logp_all.exp() * logp_all).sum(-1) if entropy else None


def token_log_probs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
):
    """Per-token log-probs of the completion under `model` (with grad if enabled), one forward pass.

    Uses the same temperature scaling and position ids as generation, so at the behaviour parameters
    it reproduces `Rollouts.logprobs`. Returns (B, T) log-probs (0 where masked), and the (B, T)
    entropy too when `with_entropy`. The rows are packed left (`pack_left`): no row has padding before
    a real token, so the model runs with its causal mask alone and no padding mask (SDPA's causal
    kernel: the update's passes took 0.85 against 0.97 s at 256 new tokens, 0.25 against 0.27 s at 64,
    min of interleaved runs), with the same logits at every real token up to float rounding (tested).
    """
    input_ids, first, index = pack_left(prompt_ids, prompt_mask, completion_ids)
    b, length = input_ids.shape
    out = model(
        input_ids=input_ids,
        position_ids=torch.arange(length, device=input_ids.device).expand(b, length),
        use_cache=False,
        logits_to_keep=length - first,
    )
    logits = out.logits.gather(1, index[..., None].expand(-1, -1, out.logits.shape[-1]))
    logp, entropy = log_probs_and_entropy(logits, completion_ids, temperature, entropy=with_entropy)
    mask = completion_mask.to(logp.dtype)
    logp = logp * mask
    return (logp, entropy * mask) if with_entropy else logp


def pack_left(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor):
    """Each row's real prompt tokens then its completion, moved to start at position 0.

    prompt_ids, prompt_mask: (B, Tp) left padded; completion_ids: (B, T). Returns (input_ids (B, L),
    first, index (B, T)) with L = Tp + T: row b's prompt of p_b tokens is at positions 0 .. p_b - 1 and
    its completion from p_b on, so its real tokens are at the positions `position_ids_from_mask` gives
    them; its last Tp - p_b positions repeat its last token: after every real token, where a causal
    model's real tokens never look. Completion token t of row b is predicted at position
    p_b - 1 + t, which is `index[b, t]` positions after `first` = min_b p_b - 1 (the first position
    whose logits are needed).
    """
    lengths = prompt_mask.long().sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError("every row needs at least one prompt token (a completion is predicted from it)")
    tp, t = prompt_ids.shape[1], completion_ids.shape[1]
    positions = torch.arange(tp + t, device=prompt_ids.device)
    source = (positions[None, :] + (tp - lengths)[:, None]).clamp(max=tp + t - 1)
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1).gather(1, source)
    first = int(lengths.min()) - 1
    index = (lengths - 1 - first)[:, None] + positions[None, :t]
    return input_ids, first, index


def _seeded(seed: int | None, device: torch.device):
    """A context where torch's RNG (CPU and the model's CUDA device) starts from `seed`; a no-op if None."""
    if seed is None:
        return contextlib.nullcontext()
    devices = [device] if device.type == "cuda" else []
    ctx = torch.random.fork_rng(devices=devices)

    @contextlib.contextmanager
    def inner():
        with ctx:
            torch.manual_seed(seed)
            yield

    return inner()


def _pad_right(x: torch.Tensor, width: int, value: float | int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[1]), value=value) if x.shape[1] < width else x


@torch.no_grad()
def generate_rollouts(
    model,
    tokenizer,
    prompts: list[str],
    *,
    n: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 64,
    seed: int | None = None,
    engine: str = "auto",
) -> Rollouts:
    """Sample `n` completions for each prompt with a KV-cached decoder, in row batches.

    prompts: P strings; returns Rollouts with B = P * n rows (row p * n + i is sample i of prompt p).
    Sampling uses softmax(logits / temperature) truncated to top_p (top-k off). With `seed` set the
    samples are a function of (model, prompts, options, seed, engine) and the global RNG is left
    untouched; with `seed=None` the global torch RNG is used and advanced.
    engine: "fast" is `maxk.decode` (Llama-family models; a ValueError says why another model is not
    supported), "hf" is Hugging Face `model.generate`, "auto" is "fast" where supported, else "hf".
    Both sample the same distributions (the fast engine's logits equal the model's forward to float
    rounding) with different random numbers: `maxk.engines.draw` against generate's multinomial.
    """
    if n < 1 or not prompts:
        raise ValueError(f"need n >= 1 and at least one prompt, got n={n}, {len(prompts)} prompts")
    if temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if tokenizer.pad_token_id is None or tokenizer.padding_side != "left":
        raise ValueError(
            "tokenizer needs a pad token and padding_side='left' (load_model_and_tokenizer sets both)"
        )
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    device = next(model.parameters()).device
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_ids = enc["input_ids"].repeat_interleave(n, dim=0).to(device)
    prompt_mask = enc["attention_mask"].repeat_interleave(n, dim=0).to(device)

    from maxk.engines import sampler  # maxk.engines imports this module

    sample = functools.partial(
        sampler(model, engine, prompt_ids.shape[1] + max_new_tokens),
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    was_training = model.training
    model.eval()
    chunks = []
    with _seeded(seed, device):
        for start in range(0, prompt_ids.shape[0], batch_size):
            ids, mask = prompt_ids[start : start + batch_size], prompt_mask[start : start + batch_size]
            s = sample(model, ids, mask)
            cmask = completion_mask_from_ids(s.completion_ids, eos)
            chunks.append((s.completion_ids, cmask, s.logprobs * cmask, s.entropy * cmask, s.finished))
    model.train(was_training)

    width = max(c[0].shape[1] for c in chunks)
    completion_ids = torch.cat([_pad_right(c[0], width, tokenizer.pad_token_id) for c in chunks])
    completion_mask = torch.cat([_pad_right(c[1], width, 0) for c in chunks])
    logprobs = torch.cat([_pad_right(c[2], width, 0.0) for c in chunks])
    entropy = torch.cat([_pad_right(c[3], width, 0.0) for c in chunks])
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    flat = tokenizer.batch_decode(completion_ids.cpu(), skip_special_tokens=True)
    texts = [flat[p * n : (p + 1) * n] for p in range(len(prompts))]
    return Rollouts(
        texts=texts,
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logprobs=logprobs,
        entropy=entropy,
        num_tokens=int(completion_mask.sum()),
        finished=torch.cat([c[4] for c in chunks]),
    )


def rollout_log_probs(
    model, ro: Rollouts, rows: torch.Tensor, *, temperature: float = 1.0, width: int | None = None
) -> torch.Tensor:
    """`token_log_probs` of the rows `rows` (1-D long) of `ro` under `model`: (len(rows), width), the
    first `width` completion tokens (all T when None; a row's tokens past its EOS do not change those
    before, so a width of at least the rows' lengths gives the same log-probs)."""
    r = rows.to(ro.completion_ids.device)
    cut = slice(None, width)
    return token_log_probs(
        model,
        ro.prompt_ids[r],
        ro.prompt_mask[r],
        ro.completion_ids[r, cut],
        ro.completion_mask[r, cut],
        temperature=temperature,
    )
