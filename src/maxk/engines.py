"""The sampling loops of the two rollout engines (plumbing): `sample_completions` runs `maxk.decode`,
`sample_with_generate` runs Hugging Face `generate`; `sampler` picks one for `generate_rollouts`.

Both sample softmax(logits / temperature) truncated to the top-p nucleus, one chunk of B left-padded
prompt rows at a time, and return the completions with the log-probs and entropies of that
temperature-scaled distribution (`Sampled`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from maxk.decode import decode_with_rotary, prefill, select_rows, supports_fast_decode
from maxk.rollout import log_probs_and_entropy

LOGITS_BUFFER_BYTES = 64 * 2**20  # sampling logits kept before their log-probs are taken in one batch
DROP_ENDED_FRACTION = 0.25  # the fast engine drops ended rows once they are this share of its batch


def nucleus_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """scores (..., V) with -inf outside the top-p nucleus (Holtzman et al. 2019, arXiv:1904.09751).

    The nucleus is the smallest set of most likely tokens whose probability reaches top_p, and at least
    the most likely token. Computed from the ascending sort like transformers' TopPLogitsWarper, so the
    same tokens survive up to float rounding: a token is dropped when it and every less likely token
    together have probability <= 1 - top_p.
    """
    ascending, order = scores.sort(dim=-1)
    tail_mass = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = tail_mass <= 1 - top_p
    drop[..., -1] = False
    return scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def draw(scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(scores), by inverting its distribution function.

    scores: (B, V), -inf on excluded tokens; v: (B, 1) float64 in (0, 1]. Returns (B,) long: the first
    token whose cumulative probability reaches v times the total. Token i is drawn when
    cdf[i-1] < v * total <= cdf[i], which has probability p_i / total for uniform v; v > 0 never draws a
    token of probability 0 (its cdf equals its predecessor's), and v <= 1 never runs past the last
    token. The sums are in float64. One uniform per row, where torch.multinomial draws V exponentials:
    softmax + draw is 7.5x faster than softmax + multinomial at 32 x 346, 2.8x at 64 x 151,936 on CPU
    (benchmarks/bench_sampling.py).
    """
    cdf = scores.softmax(dim=-1).cumsum(dim=-1, dtype=torch.float64)
    return torch.searchsorted(cdf, cdf.narrow(-1, -1, 1) * v).squeeze(-1)


@dataclass
class Sampled:
    """One batch of sampled completions. All (B, T) with T <= max_new_tokens, except finished (B,).

    completion_ids: long, pad_token_id after a row's first EOS.
    logprobs, entropy: float32, log softmax(logits / temperature) at the sampled token and the entropy of
    that distribution (also at the padding after EOS; the caller masks them).
    finished: bool, True where the row emitted EOS.
    """

    completion_ids: torch.Tensor
    logprobs: torch.Tensor
    entropy: torch.Tensor
    finished: torch.Tensor


def sample_completions(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_token_id: int | list[int],
    pad_token_id: int,
) -> Sampled:
    """Sample up to max_new_tokens tokens per row from softmax(logits / temperature), top-p truncated.

    Each step draws one token per row with `draw`, from uniforms drawn up front (one per row and step,
    from the global RNG), so a row's tokens do not depend on which other rows are still running. A row
    that has emitted EOS is padded with pad_token_id from then on and leaves the batch once a quarter
    of the rows being decoded have ended (`DROP_ENDED_FRACTION`: the cost of copying the cache is then
    repaid by the smaller steps); the loop stops once every row has ended. prompt_ids, prompt_mask:
    (B, Tp) left padded. The log-probs and entropies are taken from the kept logits in batches of steps
    (up to LOGITS_BUFFER_BYTES of logits), the same row-wise arithmetic as one step at a time. The loop
    runs in inference mode (no autograd bookkeeping on its ~150 small ops per step: 3-10% of a decode step
    of the benchmark model); the results are ordinary tensors.
    """
    with torch.inference_mode():
        options = (max_new_tokens, temperature, top_p, eos_token_id, pad_token_id)
        s = _sample(model, prompt_ids, prompt_mask, *options)
    return Sampled(*(getattr(s, f.name).clone() for f in dataclasses.fields(Sampled)))


def _sample(model, prompt_ids, prompt_mask, max_new_tokens, temperature, top_p, eos_token_id, pad_token_id):
    """`sample_completions` without the copy out of inference mode."""
    b, device = prompt_ids.shape[0], prompt_ids.device
    eos = torch.as_tensor(eos_token_id, device=device).reshape(-1)
    logits, cache = prefill(model, prompt_ids, prompt_mask, max_new_tokens)
    logits = logits[:, -1]
    steps = torch.arange(max_new_tokens, device=device)
    positions = prompt_mask.long().sum(dim=1)[None, :] + steps[:, None]  # (T, B): the new tokens' positions
    cos, sin = cache.cos[positions, None], cache.sin[positions, None]  # (T, B, 1, D)
    uniforms = 1 - torch.rand(max_new_tokens, b, 1, dtype=torch.float64, device=device)
    completion_ids = torch.full((b, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    logprobs = torch.zeros(b, max_new_tokens, device=device)
    entropy = torch.zeros(b, max_new_tokens, device=device)
    ended = torch.zeros(b, dtype=torch.bool, device=device)
    rows = torch.arange(b, device=device)  # the row of prompt_ids that each row of the cache decodes
    finished = ended.clone()  # per row of the cache
    tokens, kept = [], []  # per step since the last flush: the cache rows' tokens and logits

    def flush(end: int):  # write steps [end - len(kept), end) of the cache rows into the outputs
        chosen = torch.stack(tokens, dim=1)
        logp, ent = log_probs_and_entropy(torch.stack(kept, dim=1), chosen, temperature)
        span = slice(end - len(kept), end)
        completion_ids[rows, span], logprobs[rows, span], entropy[rows, span] = chosen, logp, ent
        ended[rows] = finished
        tokens.clear()
        kept.clear()

    for t in range(max_new_tokens):
        scores = logits.float()
        if temperature != 1:  # dividing by 1 is exact; generate skips it too
            scores = scores / temperature
        if top_p < 1:
            scores = nucleus_filter(scores, top_p)
        nxt = draw(scores, uniforms[t])
        nxt.masked_fill_(finished, pad_token_id)
        tokens.append(nxt)
        kept.append(logits)
        finished |= torch.isin(nxt, eos)
        done = int(finished.sum())
        if t + 1 == max_new_tokens or done == len(finished):
            break
        drop = done >= DROP_ENDED_FRACTION * len(rows)
        if drop or len(kept) * logits.numel() * 4 >= LOGITS_BUFFER_BYTES:
            flush(t + 1)
        if drop:  # the ended rows leave the batch
            keep = (~finished).nonzero().squeeze(1)
            cache, rows, nxt, finished = select_rows(cache, keep), rows[keep], nxt[keep], finished[keep]
            cos, sin, uniforms = cos[:, keep], sin[:, keep], uniforms[:, keep]
        logits = decode_with_rotary(cache, nxt, cos[t], sin[t])
    flush(t + 1)
    return Sampled(
        completion_ids=completion_ids[:, : t + 1],
        logprobs=logprobs[:, : t + 1],
        entropy=entropy[:, : t + 1],
        finished=ended,
    )


def sampler(model, engine: str, max_length: int):
    """The chunk sampler of `engine` ("auto", "hf" or "fast"; see `generate_rollouts`) for sequences of up
    to max_length tokens: `sample_completions` or `sample_with_generate`."""
    if engine == "hf":
        return sample_with_generate
    reason = supports_fast_decode(model, max_length)
    if reason is None:
        return sample_completions
    if engine == "fast":
        raise ValueError(f"engine='fast' does not support this model: {reason}; use engine='auto' or 'hf'")
    return sample_with_generate


def sample_with_generate(
    model, prompt_ids, prompt_mask, *, max_new_tokens, temperature, top_p, eos_token_id, pad_token_id
):
    """`sample_completions` through Hugging Face `model.generate`; returns a `Sampled`."""
    from transformers import GenerationConfig

    # Only these settings: a checkpoint's generation_config may carry a repetition penalty, n-gram bans
    # or a minimum length, which would move the sampling distribution away from the softmax(logits /
    # temperature) whose log-probs are stored (and which the update recomputes). generate() fills every
    # setting left unset from the model's generation_config, so that is blanked for the call.
    config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    owner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel's base
    saved, owner.generation_config = owner.generation_config, GenerationConfig()
    try:
        out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
    finally:
        owner.generation_config = saved
    completion = out.sequences[:, prompt_ids.shape[1] :]
    logits = torch.stack(out.logits, dim=1)  # (b, T, V) raw, before temperature/top-p
    logp, ent = log_probs_and_entropy(logits, completion, temperature)
    eos = torch.as_tensor(eos_token_id, device=completion.device).reshape(-1)
    return Sampled(completion, logp, ent, finished=torch.isin(completion, eos).any(dim=1))
