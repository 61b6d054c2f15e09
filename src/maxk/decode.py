"""A KV-cached decoder for Llama-family causal LMs: the network of the fast rollout engine (plumbing).

Hugging Face `generate` spends most of a decode step of a small model in Python (mask construction,
cache classes, logits processors). This module runs the same network with a preallocated static KV
cache: one prefill forward over the left-padded prompt (each distinct prompt row once), then one
forward per new token (`maxk.engines.sample_completions` samples them), with few PyTorch ops per step
(at small sizes each op costs more in dispatch than in arithmetic). Per call, a
layer whose projections are all plain nn.Linear runs on raw weights: q/k/v as one matrix product and
gate/up as another, the RMSNorm weights folded into them, the residual adds done by the products; a
layer with LoRA-wrapped (peft) or other projections calls the model's own submodules. Only the wiring
is re-implemented, for `SUPPORTED_MODEL_TYPES` with SiLU MLPs, default rotary embeddings and no
active sliding window (`supports_fast_decode` says why a model is not supported; `generate_rollouts`
then uses `generate`).

Shapes: B rows, Tp prompt tokens (left padded), T new tokens, S = Tp + max_new_tokens cache slots,
H query heads, Hkv key/value heads (G = H / Hkv queries share one key/value head), D head dim,
E hidden size, V vocabulary.

Positions are those of the update's forward (`maxk.rollout.position_ids_from_mask`): a row's real
tokens are numbered 0, 1, ... from its first non-padding token, so the logits equal those of the HF
model run on the full left-padded sequence with those position ids (tested to ~1e-5 in float32).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maxk.rollout import position_ids_from_mask

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


FUSE_MAX_LAYER_BYTES = 32 * 2**20  # most bytes one layer's fused weights may copy per call
_RMS_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"})  # weight * x / rms(x)


@dataclass(frozen=True)
class _Net:
    """The model's decoder prepared for one call (`_prepare`): callables over (M, E) rows, M = B * L.

    layers: per decoder layer (norm1, qkv, attn_residual, norm2, mlp_residual), where
    qkv(norm1(x)) -> (M, (H + 2 Hkv) D) is q, k, v side by side, attn_residual(h, a) = h + o_proj(a)
    and mlp_residual(h, norm2(h)) = h + mlp(post_attention_layernorm(h)); likewise head(norm(h)) is
    the output head after the final norm. A fused layer (`fused`) runs on raw weights with the norm
    weights folded into the next matrix product; the others call the model's modules.
    """

    embed: Callable
    layers: tuple[tuple[Callable, ...], ...]
    norm: Callable
    head: Callable
    heads: int
    kv_heads: int
    head_dim: int
    scale: float
    fused: tuple[bool, ...]


def _rms(x: torch.Tensor, *, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over E, in float32 and cast back as transformers' RMSNorm does (one
    fused op; bit for bit the same in float32); the norm's weight w is folded into the next product:
    (w * y) @ W^T = y @ (W * w)^T."""
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _matmul(x, *, weight_t, bias):
    """x @ weight_t (+ bias): a Linear layer on raw weights, weight_t the (in, out) transposed view."""
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def _matmul_residual(h, x, *, weight_t, bias):
    """h + x @ weight_t (+ bias), the residual add done by the matrix product."""
    out = torch.addmm(h, x, weight_t)
    return out if bias is None else out.add_(bias)


def _swiglu_residual(h, x, *, gate_up, down):
    """h + down(silu(gate(x)) * up(x)), gate and up one matrix product; gate_up, down: `_fused_weights`."""
    gate, up_x = _matmul(x, **gate_up).chunk(2, dim=-1)
    return _matmul_residual(h, F.silu(gate).mul_(up_x), **down)


def _module_qkv(attn, x):
    return torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], dim=-1)


def _module_residual(module, h, x):
    return h + module(x)


def _fused_weights(linears, norm=None) -> dict:
    """weight_t: the weights of `linears` stacked along their outputs, times the weight of the RMSNorm
    before them if any, transposed to (in, out); bias: their biases (zeros for a layer without one;
    None when none has one)."""
    weight = torch.cat([lin.weight for lin in linears]) if len(linears) > 1 else linears[0].weight
    if norm is not None:
        weight = weight * norm.weight
    if all(lin.bias is None for lin in linears):
        return {"weight_t": weight.t(), "bias": None}
    biases = [lin.weight.new_zeros(lin.out_features) if lin.bias is None else lin.bias for lin in linears]
    return {"weight_t": weight.t(), "bias": torch.cat(biases)}


def _fusable(linears, norms) -> bool:
    """Plain nn.Linear layers (peft wraps LoRA layers, which then keep their modules), transformers'
    RMSNorms, and per-call copies of at most FUSE_MAX_LAYER_BYTES."""
    if not all(type(lin) is torch.nn.Linear for lin in linears):
        return False
    if not all(type(norm).__name__ in _RMS_NORMS for norm in norms):
        return False
    return sum(lin.weight.numel() * lin.weight.element_size() for lin in linears) <= FUSE_MAX_LAYER_BYTES


def _prepare_layer(layer, fuse: bool) -> tuple[tuple[Callable, ...], bool]:
    """A decoder layer's (norm1, qkv, attn_residual, norm2, mlp_residual) and whether it is fused."""
    attn, mlp = layer.self_attn, layer.mlp
    norm1, norm2 = layer.input_layernorm, layer.post_attention_layernorm
    q, k, v, o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    if not (fuse and _fusable((q, k, v, o, gate, up, down), (norm1, norm2))):
        attn_residual, mlp_residual = (functools.partial(_module_residual, m) for m in (o, mlp))
        return (norm1, functools.partial(_module_qkv, attn), attn_residual, norm2, mlp_residual), False
    mlp_weights = {"gate_up": _fused_weights([gate, up], norm2), "down": _fused_weights([down])}
    return (
        functools.partial(_rms, eps=norm1.variance_epsilon),
        functools.partial(_matmul, **_fused_weights([q, k, v], norm1)),
        functools.partial(_matmul_residual, **_fused_weights([o])),
        functools.partial(_rms, eps=norm2.variance_epsilon),
        functools.partial(_swiglu_residual, **mlp_weights),
    ), True


def _prepare(lm, fuse: bool = True) -> _Net:
    """The decoder of `lm` for one call. The fused weights are copied per call: the parameters change
    between training steps, so nothing may outlive the call."""
    inner, config = lm.model, lm.config
    attn = inner.layers[0].self_attn
    heads = config.num_attention_heads
    head_dim = getattr(attn, "head_dim", None) or config.hidden_size // heads
    layers, fused = zip(*(_prepare_layer(layer, fuse) for layer in inner.layers))
    norm, head = inner.norm, lm.get_output_embeddings()
    if fuse and _fusable([head], [norm]):
        norm = functools.partial(_rms, eps=norm.variance_epsilon)
        head = functools.partial(_matmul, **_fused_weights([head], inner.norm))
    return _Net(
        embed=inner.embed_tokens,
        layers=layers,
        norm=norm,
        head=head,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        scale=getattr(attn, "scaling", head_dim**-0.5),
        fused=fused,
    )


@dataclass
class KVCache:
    """Static key/value cache of a batch being decoded, with the decoder prepared for it.

    kv: per layer a (2, B, Hkv, S, D) tensor, keys then values, slots [0, length) filled;
    keys, values: per layer its two halves viewed as (B * Hkv, S, D), the batched matrices of a decode
    step's attention.
    mask: (B * Hkv, 1, S) float additive attention mask of a new token (row b * Hkv + j is row b): 0 on
    the slots of real tokens, -inf on left padding.
    cos, sin: (S, D) rotary tables for positions 0 .. S - 1 in the model dtype, sin with its first half
    negated (see `_rotate_`).
    """

    net: _Net
    kv: list[torch.Tensor]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
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


def _rotate_(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> None:
    """RoPE in place: x <- x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1) for x = (x1, x2)
    halves of D. Computed as x * cos + roll(x, D/2) * signed_sin with signed_sin = (-sin1, sin2): the
    same products (negation is exact), three ops instead of six."""
    torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin, out=x)


def _attention(net: _Net, qkv, cos, sin, cache: KVCache, layer: int, b: int, n: int, mask):
    """Self-attention of L = n new tokens per row. qkv: (M, (H + 2 Hkv) D) projections, M = B * L,
    rotated in place; cos, sin: (M, 1, D); mask: additive, (B * Hkv, 1, s) for one token (L = 1),
    else (B, 1, G * L, s), s = cache.length + L. Returns (M, H * D).

    q and k are rotated together (adjacent in qkv), k and v (adjacent too) are written to cache slots
    [length, length + L) in one copy, and the queries attend over the s filled slots. GQA without
    copying the cache: the G query heads of a key/value head are folded into the query length,
    (B, L, H, D) -> (B, Hkv, G * L, D); query head j uses key/value head j // G, as in transformers'
    repeat_kv. One token: softmax(scale * q k^T + mask) v as two batched products over the B * Hkv
    heads (faster than SDPA's kernel at this size); a prompt: SDPA (no (L, s) scores in memory).
    """
    h, hkv, d = net.heads, net.kv_heads, net.head_dim
    g, end = h // hkv, cache.length + n
    _rotate_(qkv.narrow(1, 0, (h + hkv) * d).view(b * n, h + hkv, d), cos, sin)  # narrow: one op
    new = qkv.narrow(1, h * d, 2 * hkv * d).view(b, n, 2, hkv, d).permute(2, 0, 3, 1, 4)
    cache.kv[layer].narrow(3, cache.length, n).copy_(new)
    q = qkv.narrow(1, 0, h * d)
    if n == 1:  # q (B, H * D) is (B * Hkv, G, D) in memory order; so is the output
        keys, values = cache.keys[layer].narrow(1, 0, end), cache.values[layer].narrow(1, 0, end)
        scores = torch.baddbmm(mask, q.reshape(b * hkv, g, d), keys.transpose(1, 2), alpha=net.scale)
        return torch.bmm(scores.softmax(dim=-1), values).view(b, h * d)
    q = q.view(b, n, hkv, g, d).permute(0, 2, 3, 1, 4).reshape(b, hkv, g * n, d)
    kv = cache.kv[layer].narrow(3, 0, end)
    out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, scale=net.scale)
    return out.view(b, hkv, g, n, d).permute(0, 3, 1, 2, 4).reshape(b * n, h * d)


def _forward(cache: KVCache, input_ids: torch.Tensor, cos, sin, mask) -> torch.Tensor:
    """Decoder layers and final norm over L new tokens appended to the cache: (B, L) ids -> (B * L, E).

    cos, sin: (B * L, 1, D) rotary rows of the new tokens; mask as in `_attention`.
    """
    net = cache.net
    b, n = input_ids.shape
    h = net.embed(input_ids).view(b * n, -1)
    for i, (norm1, qkv, attn_residual, norm2, mlp_residual) in enumerate(net.layers):
        h = attn_residual(h, _attention(net, qkv(norm1(h)), cos, sin, cache, i, b, n, mask))
        h = mlp_residual(h, norm2(h))
    cache.length += n
    return net.norm(h)


@torch.no_grad()
def prefill(model, prompt_ids, prompt_mask, max_new_tokens: int, *, logits_to_keep: int = 1, fuse=True):
    """Prepare the decoder, allocate the cache and run the prompt. Returns ((B, logits_to_keep, V)
    logits, KVCache).

    prompt_ids, prompt_mask: (B, Tp), left padded. The logits are those of the last `logits_to_keep`
    prompt positions, in the model dtype. The cache holds Tp + max_new_tokens slots. Rows that repeat
    (the N samples of a prompt) are run once and copied. fuse=False keeps every layer on its modules
    (the path of LoRA layers; for tests).
    Attention: a token at slot i sees slot j when j <= i and slot j holds a real token, and always
    itself (so a padding slot never has an empty row and no NaN reaches the cache; real tokens never
    see padding).
    """
    lm = causal_lm(model)
    net = _prepare(lm, fuse)
    rows, inverse = torch.unique(torch.cat([prompt_ids, prompt_mask], dim=1), dim=0, return_inverse=True)
    repeats = len(rows) < len(prompt_ids)
    if repeats:  # run each distinct row once; its cache is copied to its repeats below
        prompt_ids, prompt_mask = rows.split(prompt_ids.shape[1], dim=1)
    b, tp = prompt_ids.shape
    hkv, d, total = net.kv_heads, net.head_dim, tp + max_new_tokens
    dtype, device = lm.dtype, prompt_ids.device
    cos, sin = rotary_tables(lm.model.rotary_emb, total, dtype)
    sin = torch.cat([-sin[:, : d // 2], sin[:, d // 2 :]], dim=-1)
    kv = [torch.zeros(2, b, hkv, total, d, dtype=dtype, device=device) for _ in net.layers]
    key_mask = torch.ones(b, total, dtype=torch.bool, device=device)
    key_mask[:, :tp] = prompt_mask.bool()
    new_token_mask = _additive(key_mask.repeat_interleave(hkv, dim=0)[:, None, :], dtype)
    cache = _cache(net, kv, new_token_mask, cos.to(device), sin.to(device))
    slots = torch.arange(tp, device=device)
    itself = torch.eye(tp, dtype=torch.bool, device=device)
    visible = (slots[None, :] <= slots[:, None]) & (prompt_mask.bool()[:, None, :] | itself)  # (B, L, s)
    g = net.heads // hkv  # (B, L, s) -> (B, 1, G * L, s), rows in the order of the folded queries
    mask = _additive(visible[:, None, None].expand(b, 1, g, tp, tp).reshape(b, 1, g * tp, tp), dtype)
    positions = position_ids_from_mask(prompt_mask).reshape(-1)
    h = _forward(cache, prompt_ids, cache.cos[positions, None], cache.sin[positions, None], mask)
    h = h.view(b, tp, -1)[:, -logits_to_keep:]
    logits = net.head(h.reshape(b * logits_to_keep, -1)).view(b, logits_to_keep, -1)
    return (logits[inverse], select_rows(cache, inverse)) if repeats else (logits, cache)


def select_rows(cache: KVCache, rows: torch.Tensor) -> KVCache:
    """A cache holding the rows `rows` (1-D long; repeats allowed) of `cache`, copied: the prefill
    copies a prompt's cache to its samples, the sampler drops the rows that have ended."""
    _, _, hkv, total, _ = cache.kv[0].shape
    mask = cache.mask.view(-1, hkv, 1, total).index_select(0, rows).view(-1, 1, total)
    kv = [x.index_select(1, rows) for x in cache.kv]
    return _cache(cache.net, kv, mask, cache.cos, cache.sin, cache.length)


def _cache(net: _Net, kv: list[torch.Tensor], mask: torch.Tensor, cos, sin, length: int = 0) -> KVCache:
    """A KVCache over the (2, B, Hkv, S, D) tensors `kv` with the new-token mask `mask` (`KVCache.mask`)."""
    _, b, hkv, total, d = kv[0].shape
    return KVCache(
        net=net,
        kv=kv,
        keys=[x[0].view(b * hkv, total, d) for x in kv],
        values=[x[1].view(b * hkv, total, d) for x in kv],
        mask=mask,
        cos=cos,
        sin=sin,
        length=length,
    )


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask as an additive one: 0 where visible, -inf elsewhere."""
    zeros = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return zeros.masked_fill_(~visible, float("-inf"))


def decode_with_rotary(cache: KVCache, tokens: torch.Tensor, cos, sin) -> torch.Tensor:
    """`decode_step` with the new tokens' rotary rows (B, 1, D) given (rows of `KVCache.cos`, `.sin`)."""
    h = _forward(cache, tokens[:, None], cos, sin, cache.mask.narrow(2, 0, cache.length + 1))
    return cache.net.head(h)


@torch.no_grad()
def decode_step(cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Append one token per row and return the next-token logits. tokens, positions: (B,) -> (B, V)."""
    return decode_with_rotary(cache, tokens, cache.cos[positions, None], cache.sin[positions, None])
