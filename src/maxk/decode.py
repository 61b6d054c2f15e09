"""A KV-cached decoder for Llama-family causal LMs and the sampling loop of `generate_rollouts` (plumbing).

Hugging Face `generate` spends most of a decode step of a small model in Python (mask construction,
cache classes, logits processors). This module runs the same network with a preallocated static KV
cache and one boolean attention mask: one prefill forward over the left-padded prompt, then one forward
per new token. It calls the model's own submodules (projections, norms, MLP, embeddings, output head),
so LoRA-wrapped linear layers (peft) work unchanged; only the wiring between them is re-implemented,
for `SUPPORTED_MODEL_TYPES` with SiLU MLPs, default rotary embeddings and no active sliding window
(`supports_fast_decode` says why a model is not supported; `generate_rollouts` then uses `generate`).

Shapes: B rows, Tp prompt tokens (left padded), T new tokens, S = Tp + max_new_tokens cache slots,
H query heads, Hkv key/value heads (G = H / Hkv queries share one key/value head), D head dim,
E hidden size, V vocabulary.

Positions are those of the update's forward (`maxk.rollout.position_ids_from_mask`): a row's real
tokens are numbered 0, 1, ... from its first non-padding token, so the logits equal those of the HF
model run on the full left-padded sequence with those position ids (tested to ~1e-5 in float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maxk.rollout import log_probs_and_entropy, position_ids_from_mask

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})


def causal_lm(model):
    """The Hugging Face `*ForCausalLM` inside `model` (a peft `PeftModel` is unwrapped; LoRA layers stay)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports_fast_decode(model, max_length: int | None = None) -> str | None:
    """None when the fast engine reproduces `model`'s forward, else the reason why it does not.

    max_length: the longest sequence (prompt + new tokens) that will be decoded, if known; a sliding
    window at least this long never masks anything, so it does not count as active.
    """
    lm = causal_lm(model)
    config = getattr(lm, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {sorted(SUPPORTED_MODEL_TYPES)}"
    if getattr(config, "hidden_act", None) != "silu":
        return f"hidden_act {config.hidden_act!r} is not 'silu'"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        return f"rope type {rope_type!r} (only default rotary embeddings are supported)"
    window = _sliding_window(config)
    if window is not None and (max_length is None or max_length > window):
        return f"sliding-window attention (window {window}) is active"
    inner = getattr(lm, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, name) for name in needed):
        return "the model has no .model.{embed_tokens, layers, norm, rotary_emb} (transformers too old?)"
    if not hasattr(inner.rotary_emb, "inv_freq") or lm.get_output_embeddings() is None:
        return "the model has no rotary inv_freq buffer or no output embedding"
    return None


def _sliding_window(config) -> int | None:
    """The window of the layers that use sliding-window attention, or None if no layer does."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:  # transformers >= 4.53 names each layer's attention
        return window if "sliding_attention" in layer_types else None
    if config.model_type == "qwen2":  # older Qwen2 configs: the flag decides
        return window if getattr(config, "use_sliding_window", False) else None
    return window


@dataclass
class KVCache:
    """Static key/value cache of a batch being decoded.

    keys, values: one (B, Hkv, S, D) tensor per layer; slots [0, length) are filled.
    key_mask: (B, S) bool, True on the slots of real tokens (False on left padding).
    cos, sin: (S, D) rotary tables for positions 0 .. S - 1 in the model dtype.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_mask: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    length: int = 0


def rotary_tables(rotary_emb, num_positions: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the model's rotary embedding at positions 0 .. num_positions - 1: two (S, D).

    As in transformers' default RoPE: angles = position * inv_freq in float32, duplicated to D columns,
    times the embedding's attention_scaling (1 for default RoPE), then cast to the model dtype.
    """
    inv_freq = rotary_emb.inv_freq.float()
    positions = torch.arange(num_positions, device=inv_freq.device, dtype=torch.float32)
    angles = positions[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    scale = getattr(rotary_emb, "attention_scaling", 1.0)
    return (angles.cos() * scale).to(dtype), (angles.sin() * scale).to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE: x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1) for x = (x1, x2) halves of D."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def _attention(attn, h, cos, sin, cache: KVCache, layer: int, mask) -> torch.Tensor:
    """One self-attention block on L new tokens. h: (B, L, E); cos, sin: (B, L, 1, D); mask (B, 1, L, s).

    Writes the new keys/values to cache slots [cache.length, cache.length + L) and attends over the
    s = cache.length + L filled slots. GQA without copying the cache: the G query heads of a key/value
    head are folded into the query length, (B, H, L, D) -> (B, Hkv, G * L, D); query head j uses
    key/value head j // G, as in transformers' repeat_kv.
    """
    b, n, _ = h.shape
    k_cache, v_cache = cache.keys[layer], cache.values[layer]
    hkv, d = k_cache.shape[1], k_cache.shape[3]
    q = _rotate(attn.q_proj(h).view(b, n, -1, d), cos, sin)  # (B, L, H, D)
    k = _rotate(attn.k_proj(h).view(b, n, hkv, d), cos, sin)
    v = attn.v_proj(h).view(b, n, hkv, d)
    start, end = cache.length, cache.length + n
    k_cache[:, :, start:end] = k.transpose(1, 2)
    v_cache[:, :, start:end] = v.transpose(1, 2)
    g = q.shape[2] // hkv
    q = q.transpose(1, 2).reshape(b, hkv, g * n, d)
    if n > 1:  # (B, 1, L, s) -> (B, 1, G * L, s), rows in the order of the folded queries
        mask = mask.unsqueeze(2).expand(b, 1, g, n, end).reshape(b, 1, g * n, end)
    scale = getattr(attn, "scaling", d**-0.5)
    keys, values = k_cache[:, :, :end], v_cache[:, :, :end]
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)  # (B, Hkv, G * L, D)
    return attn.o_proj(out.reshape(b, hkv * g, n, d).transpose(1, 2).reshape(b, n, hkv * g * d))


def _forward(lm, cache: KVCache, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Decoder layers and final norm over L new tokens appended to the cache: (B, L) ids -> (B, L, E).

    positions: (B, L) long rotary positions. Attention: a new token at slot i sees slot j when j <= i and
    slot j holds a real token, and always itself (so a padding slot never has an empty row and no NaN
    reaches the cache; real tokens never see padding).
    """
    inner = lm.model
    n = input_ids.shape[1]
    start, end = cache.length, cache.length + n
    slots = torch.arange(end, device=input_ids.device)
    new = slots[start:, None]
    visible = (slots[None, :] <= new) & (cache.key_mask[:, None, :end] | (slots[None, :] == new))  # (B, L, s)
    mask = visible.unsqueeze(1)
    cos, sin = cache.cos[positions].unsqueeze(2), cache.sin[positions].unsqueeze(2)  # (B, L, 1, D)
    h = inner.embed_tokens(input_ids)
    for i, layer in enumerate(inner.layers):
        h = h + _attention(layer.self_attn, layer.input_layernorm(h), cos, sin, cache, i, mask)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    cache.length = end
    return inner.norm(h)


@torch.no_grad()
def prefill(model, prompt_ids, prompt_mask, max_new_tokens: int, *, logits_to_keep: int = 1):
    """Allocate the cache and run the prompt. Returns ((B, logits_to_keep, V) logits, KVCache).

    prompt_ids, prompt_mask: (B, Tp), left padded. The logits are those of the last `logits_to_keep`
    prompt positions, in the model dtype. The cache holds Tp + max_new_tokens slots.
    """
    lm = causal_lm(model)
    inner = lm.model
    b, tp = prompt_ids.shape
    total = tp + max_new_tokens
    config, dtype, device = lm.config, lm.dtype, prompt_ids.device
    hkv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    heads = config.num_attention_heads
    head_dim = getattr(inner.layers[0].self_attn, "head_dim", None) or config.hidden_size // heads
    shape = (b, hkv, total, head_dim)
    key_mask = torch.ones(b, total, dtype=torch.bool, device=device)
    key_mask[:, :tp] = prompt_mask.bool()
    cos, sin = rotary_tables(inner.rotary_emb, total, dtype)
    cache = KVCache(
        keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in inner.layers],
        values=[torch.zeros(shape, dtype=dtype, device=device) for _ in inner.layers],
        key_mask=key_mask,
        cos=cos.to(device),
        sin=sin.to(device),
    )
    h = _forward(lm, cache, prompt_ids, position_ids_from_mask(prompt_mask))
    return lm.get_output_embeddings()(h[:, -logits_to_keep:]), cache


@torch.no_grad()
def decode_step(model, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Append one token per row and return the next-token logits. tokens, positions: (B,) -> (B, V)."""
    lm = causal_lm(model)
    h = _forward(lm, cache, tokens[:, None], positions[:, None])
    return lm.get_output_embeddings()(h[:, 0])


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


@torch.no_grad()
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

    The same draws as `generate(do_sample=True, top_k=0)`: one `torch.multinomial` over the B rows per
    step from the global RNG, rows that have emitted EOS continue with pad_token_id, and the loop stops
    once every row has emitted EOS. prompt_ids, prompt_mask: (B, Tp) left padded.
    """
    eos = torch.as_tensor(eos_token_id, device=prompt_ids.device).reshape(-1)
    logits, cache = prefill(model, prompt_ids, prompt_mask, max_new_tokens)
    logits = logits[:, -1]
    positions = prompt_mask.long().sum(dim=1)  # position of the first new token
    running = torch.ones(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
    tokens, logps, entropies = [], [], []
    for t in range(max_new_tokens):
        scores = logits.float() / temperature
        if top_p < 1:
            scores = nucleus_filter(scores, top_p)
        nxt = torch.multinomial(scores.softmax(dim=-1), num_samples=1).squeeze(1)
        nxt = torch.where(running, nxt, torch.full_like(nxt, pad_token_id))
        logp, ent = log_probs_and_entropy(logits, nxt, temperature)
        tokens.append(nxt)
        logps.append(logp)
        entropies.append(ent)
        running &= ~torch.isin(nxt, eos)
        if t + 1 == max_new_tokens or not bool(running.any()):
            break
        logits = decode_step(model, cache, nxt, positions + t)
    return Sampled(
        completion_ids=torch.stack(tokens, dim=1),
        logprobs=torch.stack(logps, dim=1),
        entropy=torch.stack(entropies, dim=1),
        finished=~running,
    )
