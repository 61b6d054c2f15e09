"""maxk.decode: logits equal to the Hugging Face forward, sampling semantics, and the engine switch."""

from __future__ import annotations

import pytest
import torch

from maxk.decode import decode_step, prefill, supports_fast_decode
from maxk.engines import draw, nucleus_filter, sample_completions
from maxk.rollout import completion_mask_from_ids, generate_rollouts, position_ids_from_mask, token_log_probs

PROMPTS = ["def add(a, b):", "The answer is", "print(sum(int(t) for t in"]


def tiny_lm(arch: str, vocab_size: int = 61, **overrides):
    """A random 2-layer causal LM with GQA (4 query heads, 2 key/value heads), weights large enough that
    the logits spread over several units (std of the logits > 0.5)."""
    import transformers

    configs = {
        "qwen2": transformers.Qwen2Config,  # biases on q, k, v
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
    }
    options = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.2,
    )
    if arch == "llama":
        options["head_dim"] = 16  # != hidden_size / heads: the cache must follow the attention's head_dim
    if arch == "mistral":
        options["sliding_window"] = None
    config = configs[arch](**{**options, **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    return model


def left_padded_batch(vocab_size: int, prompt_len: int = 7, new: int = 6):
    """(B=3, Tp + new) ids and (B, Tp) prompt mask: row 0 unpadded, rows 1 and 2 with 2 and 5 pad slots."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab_size, (3, prompt_len + new), generator=gen)
    prompt_mask = torch.ones(3, prompt_len, dtype=torch.long)
    prompt_mask[1, :2] = 0
    prompt_mask[2, :5] = 0
    return ids, prompt_mask


def teacher_forced_logits(model, ids, prompt_mask, new: int, position_shift: int = 0, fuse: bool = True):
    """Fast-engine logits at every prompt position (prefill) and after each forced token: (B, Tp + new, V).

    position_shift moves the positions of the new tokens (a wrong value must change the logits); fuse as in
    `prefill` (False: every layer through its modules)."""
    tp = prompt_mask.shape[1]
    with torch.no_grad():
        logits, cache = prefill(
            model, ids[:, :tp], prompt_mask, new + position_shift, logits_to_keep=tp, fuse=fuse
        )
        steps = [logits]
        first = prompt_mask.sum(1) + position_shift
        for t in range(new):
            steps.append(decode_step(cache, ids[:, tp + t], first + t)[:, None])
    return torch.cat(steps, dim=1)


def hf_logits(model, ids, prompt_mask):
    """The Hugging Face forward on the whole left-padded sequence with the update's position ids."""
    mask = torch.cat([prompt_mask, torch.ones_like(ids[:, prompt_mask.shape[1] :])], dim=1)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits


def assert_logits_equal_on_real_tokens(fast, ref, prompt_mask):
    real = torch.cat([prompt_mask, torch.ones(prompt_mask.shape[0], fast.shape[1] - prompt_mask.shape[1])], 1)
    real = real.bool()[:, :, None].expand_as(fast)
    assert ref[real].std() > 0.5  # logits that differ between tokens, so a small error is a real agreement
    torch.testing.assert_close(fast[real], ref[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral"])
def test_prefill_and_every_decode_step_equal_the_hf_forward(arch):
    model = tiny_lm(arch)
    assert supports_fast_decode(model) is None
    ids, prompt_mask = left_padded_batch(61)
    fast = teacher_forced_logits(model, ids, prompt_mask, new=6)
    assert_logits_equal_on_real_tokens(fast, hf_logits(model, ids, prompt_mask), prompt_mask)
    # RoPE sees only relative positions: new tokens one position too far give other logits
    shifted = teacher_forced_logits(model, ids, prompt_mask, new=6, position_shift=1)
    assert (shifted[:, 7:] - fast[:, 7:]).abs().max() > 1e-2


def test_repeated_prompt_rows_are_run_once_and_decode_like_the_rest(monkeypatch):
    """The N samples of a prompt share its prompt: prefill runs each distinct (ids, mask) row once and
    copies its cache, so the prefill's forward sees 3 rows for a batch of 7, and the logits of the
    prompt and of every decode step still equal the HF forward on all 7 rows."""
    import maxk.decode

    model = tiny_lm("qwen2")
    ids, prompt_mask = left_padded_batch(61)
    order = torch.tensor([2, 0, 0, 1, 2, 0, 1])
    ids, prompt_mask = ids[order], prompt_mask[order]
    ids[:, 7:] = torch.randint(0, 61, (7, 6), generator=torch.Generator().manual_seed(3))  # rows diverge
    rows_seen = []
    forward = maxk.decode._forward
    monkeypatch.setattr(
        maxk.decode, "_forward", lambda cache, ids, *a: rows_seen.append(len(ids)) or forward(cache, ids, *a)
    )
    fast = teacher_forced_logits(model, ids, prompt_mask, new=6)
    assert rows_seen == [3] + [7] * 6  # prefill on distinct rows, decode on all
    assert_logits_equal_on_real_tokens(fast, hf_logits(model, ids, prompt_mask), prompt_mask)


def test_lora_model_equals_its_hf_forward_and_adapters_matter():
    from peft import LoraConfig, get_peft_model

    base = tiny_lm("llama")
    ids, prompt_mask = left_padded_batch(61)
    base_logits = hf_logits(base, ids, prompt_mask)
    lora = LoraConfig(
        r=4, target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"], init_lora_weights=False
    )
    torch.manual_seed(2)
    model = get_peft_model(base, lora).eval()
    assert supports_fast_decode(model) is None
    fast = teacher_forced_logits(model, ids, prompt_mask, new=6)
    ref = hf_logits(model, ids, prompt_mask)
    assert_logits_equal_on_real_tokens(fast, ref, prompt_mask)
    assert (ref - base_logits).abs().max() > 1e-2  # the adapters change the model
    with model.disable_adapter():  # the reference-policy context of the trainer
        assert_logits_equal_on_real_tokens(
            teacher_forced_logits(model, ids, prompt_mask, 6), base_logits, prompt_mask
        )


def layers_fused(model, fuse: bool = True) -> tuple[bool, ...]:
    ids, prompt_mask = left_padded_batch(61)
    return prefill(model, ids[:, :7], prompt_mask, 1, fuse=fuse)[1].net.fused


@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral"])
def test_fused_path_equals_module_path_and_hf_forward(arch):
    """Plain nn.Linear layers run on concatenated raw weights (q/k/v, gate/up, norm weights folded in);
    fuse=False runs the same weights through the modules. Biases everywhere (random, HF inits them to 0)
    exercise every bias branch; Qwen2 has q/k/v biases only, the others none."""
    extra = dict(attention_bias=True, mlp_bias=True) if arch == "llama" else {}
    model = tiny_lm(arch, **extra)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    assert layers_fused(model) == (True, True) and layers_fused(model, fuse=False) == (False, False)
    ids, prompt_mask = left_padded_batch(61)
    fused = teacher_forced_logits(model, ids, prompt_mask, new=6)
    modules = teacher_forced_logits(model, ids, prompt_mask, new=6, fuse=False)
    assert_logits_equal_on_real_tokens(fused, modules, prompt_mask)
    assert_logits_equal_on_real_tokens(modules, hf_logits(model, ids, prompt_mask), prompt_mask)


def test_lora_layers_keep_their_modules_and_plain_layers_fuse():
    """LoRA on layer 0 only: layer 0 runs through its peft modules, layer 1 on raw weights, in one forward
    that equals the HF forward of the adapted model."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=4, target_modules=["q_proj", "up_proj"], layers_to_transform=[0], init_lora_weights=False
    )
    torch.manual_seed(2)
    model = get_peft_model(tiny_lm("qwen2"), lora).eval()
    assert layers_fused(model) == (False, True)
    ids, prompt_mask = left_padded_batch(61)
    fast = teacher_forced_logits(model, ids, prompt_mask, new=6)
    assert_logits_equal_on_real_tokens(fast, hf_logits(model, ids, prompt_mask), prompt_mask)


def test_layers_over_the_copy_budget_keep_their_modules(monkeypatch):
    import maxk.decode

    model = tiny_lm("llama")
    monkeypatch.setattr(maxk.decode, "FUSE_MAX_LAYER_BYTES", 0)
    assert layers_fused(model) == (False, False)


def test_nucleus_filter_keeps_the_smallest_set_reaching_top_p():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p = 0.75 needs {0, 1} (0.8); 0.4 needs {0}; 1e-6 keeps {0}
    scores = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: torch.isfinite(nucleus_filter(scores, p))[0].tolist()
    assert kept(0.75) == [True, True, False, False]
    assert kept(0.4) == [True, False, False, False]
    assert kept(1e-6) == [True, False, False, False]
    assert kept(0.97) == [True, True, True, True]


@pytest.mark.parametrize("top_p", [0.3, 0.7, 0.9, 0.99])
def test_nucleus_filter_equals_transformers_top_p_warper(top_p):
    from transformers.generation.logits_process import TopPLogitsWarper

    scores = torch.randn(16, 200, generator=torch.Generator().manual_seed(3)) * 3
    expected = TopPLogitsWarper(top_p)(None, scores.clone())
    assert torch.equal(nucleus_filter(scores, top_p), expected)


def draw_shares(scores: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The share of the grid v = 1/m, 2/m, ..., 1 for which `draw` picks each token of the (V,) scores,
    and the probabilities it samples from: the float32 softmax, normalised in float64."""
    v = torch.arange(1, m + 1, dtype=torch.float64)[:, None] / m
    picks = draw(scores.expand(m, -1), v)
    probs = scores.softmax(-1).double()
    return torch.bincount(picks, minlength=len(scores)).double() / m, probs / probs.sum()


def test_draw_inverts_the_distribution_function_exactly():
    """Over a grid of m uniforms each token is drawn for a share of the grid within 1/m of its
    probability, tokens of probability 0 (first, inner, last) never, and the extreme uniforms land on
    the first and last possible tokens."""
    probs = torch.tensor([0.0, 0.1, 0.0, 0.25, 0.4, 0.25, 0.0])
    m = 10_000
    shares, expected = draw_shares(probs.log(), m)
    assert (shares[probs == 0] == 0).all()
    assert ((shares - expected).abs() <= 1 / m + 1e-12).all()
    scores = probs.log().expand(2, -1)
    extremes = torch.tensor([[2.0**-53], [1.0]], dtype=torch.float64)
    assert draw(scores, extremes).tolist() == [1, 5]


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_draw_samples_softmax_of_the_nucleus(top_p):
    """Random scores (two rows of 50 tokens), top-p filtered as in sampling: the share of a fine grid
    drawing each token equals its softmax probability to the grid's resolution, and no token outside
    the nucleus is drawn."""
    scores = torch.randn(2, 50, generator=torch.Generator().manual_seed(0)) * 2
    m = 2**16
    for row in nucleus_filter(scores, top_p):
        shares, expected = draw_shares(row, m)
        assert ((shares - expected).abs() <= 1 / m + 1e-12).all()
        assert (shares[~torch.isfinite(row)] == 0).all()
    if top_p < 1:
        assert (~torch.isfinite(nucleus_filter(scores, top_p))).any()  # the nucleus excluded something


# ----------------------------------------------------------------------------------------------------------
# generate_rollouts(engine=...) on a tiny Qwen2 with a trained tokenizer
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def peaked(tiny_model_dir):
    """The session's tiny Qwen2 with its weights scaled x8, so next-token distributions are far from uniform
    (top-p then excludes tokens, and temperature matters)."""
    from maxk.models import load_model_and_tokenizer

    torch.set_num_threads(1)
    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)
    return model, tok


def with_eos(model, eos):
    model.generation_config.eos_token_id = eos
    return model


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.3])
def test_fast_log_probs_equal_the_updates_forward(peaked, temperature):
    model, tok = peaked
    ro = generate_rollouts(
        model, tok, PROMPTS, n=4, max_new_tokens=16, seed=5, temperature=temperature, engine="fast"
    )
    with torch.no_grad():
        logp, ent = token_log_probs(
            model,
            ro.prompt_ids,
            ro.prompt_mask,
            ro.completion_ids,
            ro.completion_mask,
            temperature=temperature,
            with_entropy=True,
        )
    torch.testing.assert_close(ro.logprobs, logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ro.entropy, ent, atol=1e-5, rtol=1e-5)
    assert ro.logprobs[ro.completion_mask.bool()].std() > 0.3  # peaked: log-probs are not all -log(V)


def test_sampled_tokens_lie_in_the_nucleus(peaked):
    """Recompute each step's distribution with the HF forward: every sampled token is inside its nucleus,
    and at top_p = 1 some sampled tokens fall outside the 0.5-nucleus (so the check can fail)."""
    model, tok = peaked

    def outside_nucleus(top_p_sampling: float, top_p_check: float) -> int:
        ro = generate_rollouts(
            model, tok, PROMPTS, n=8, max_new_tokens=12, seed=0, top_p=top_p_sampling, engine="fast"
        )
        ids = ro.input_ids
        t = ro.completion_ids.shape[1]
        with torch.no_grad():
            logits = model(
                input_ids=ids,
                attention_mask=ro.attention_mask,
                position_ids=position_ids_from_mask(ro.attention_mask),
            ).logits
        scores = logits[:, -t - 1 : -1].float()  # predicts each completion token
        kept = torch.isfinite(nucleus_filter(scores, top_p_check))
        hit = kept.gather(-1, ro.completion_ids[..., None])[..., 0]
        return int((~hit & ro.completion_mask.bool()).sum())

    assert outside_nucleus(0.5, 0.5) == 0
    assert outside_nucleus(1.0, 0.5) > 0


def test_eos_list_early_stop_and_padding_after_eos(peaked):
    model, tok = peaked
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"].repeat_interleave(8, 0), enc["attention_mask"].repeat_interleave(8, 0)
    eos = list(range(1, len(tok), 3))  # a third of the vocabulary ends a completion: all rows stop early
    torch.manual_seed(0)
    s = sample_completions(
        model,
        ids,
        mask,
        max_new_tokens=40,
        temperature=1.0,
        top_p=1.0,
        eos_token_id=eos,
        pad_token_id=tok.pad_token_id,
    )
    is_eos = torch.isin(s.completion_ids, torch.tensor(eos))
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), s.completion_ids.shape[1])
    assert s.finished.all() and s.completion_ids.shape[1] < 40
    assert s.completion_ids.shape[1] == int(first.max()) + 1  # stopped right after the last row's EOS
    assert len(set(first.tolist())) > 3  # rows end at different steps
    after = torch.arange(s.completion_ids.shape[1])[None, :] > first[:, None]
    assert after.any() and (s.completion_ids[after] == tok.pad_token_id).all()
    # without EOS in sight every row runs to max_new_tokens
    s = sample_completions(
        model,
        ids,
        mask,
        max_new_tokens=7,
        temperature=1.0,
        top_p=1.0,
        eos_token_id=[-1],
        pad_token_id=tok.pad_token_id,
    )
    assert s.completion_ids.shape == (24, 7) and not s.finished.any()


def test_log_probs_taken_in_batches_of_steps_equal_those_taken_per_step(peaked, monkeypatch):
    """The sampling logits are kept and turned into log-probs LOGITS_BUFFER_BYTES at a time: a buffer of
    one step (the per-step computation) and one of 3 steps (batches of 3, then a last partial one) give
    the same tokens, log-probs and entropies as one batch for all 10 steps."""
    import maxk.engines

    model, tok = peaked
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    kw = dict(max_new_tokens=10, temperature=0.8, top_p=1.0, eos_token_id=[-1], pad_token_id=tok.pad_token_id)

    def sample(buffer_steps: int):
        monkeypatch.setattr(maxk.engines, "LOGITS_BUFFER_BYTES", buffer_steps * len(PROMPTS) * len(tok) * 4)
        torch.manual_seed(4)
        return sample_completions(model, enc["input_ids"], enc["attention_mask"], **kw)

    whole = sample(10)
    assert whole.completion_ids.shape == (3, 10)
    for steps in (1, 3):
        part = sample(steps)
        assert torch.equal(part.completion_ids, whole.completion_ids)
        torch.testing.assert_close(part.logprobs, whole.logprobs, atol=1e-6, rtol=0)
        torch.testing.assert_close(part.entropy, whole.entropy, atol=1e-6, rtol=0)


def test_ended_rows_leave_the_batch_without_changing_any_row(peaked, monkeypatch):
    """Rows that have emitted EOS are dropped from the decoded batch (their cache rows copied away) once
    they are DROP_ENDED_FRACTION of it; each row's uniforms are its own, so every row samples the same
    tokens, log-probs and entropies as when no row is ever dropped: with drops at every ended row, at the
    default share, and with the log-probs taken 3 steps at a time in between."""
    import maxk.decode
    import maxk.engines

    model, tok = peaked
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"].repeat_interleave(8, 0), enc["attention_mask"].repeat_interleave(8, 0)
    eos = list(range(1, len(tok), 40))
    kw = dict(max_new_tokens=40, temperature=1.0, top_p=0.9, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    batches = []
    select_rows = maxk.decode.select_rows

    def spy(cache, rows):
        batches.append(len(rows))
        return select_rows(cache, rows)

    monkeypatch.setattr(maxk.engines, "select_rows", spy)

    def sample(fraction: float, buffer_steps: int = 40):
        monkeypatch.setattr(maxk.engines, "DROP_ENDED_FRACTION", fraction)
        monkeypatch.setattr(maxk.engines, "LOGITS_BUFFER_BYTES", buffer_steps * len(ids) * len(tok) * 4)
        batches.clear()
        torch.manual_seed(2)
        return sample_completions(model, ids, mask, **kw), list(batches)

    whole, kept = sample(2.0)  # never drops
    assert kept == [] and 0 < int(whole.finished.sum()) < len(ids)  # some rows end, some run to the limit
    for fraction, buffer_steps in [(1e-9, 40), (0.25, 40), (1e-9, 3)]:
        got, drops = sample(fraction, buffer_steps)
        assert len(drops) >= 2 and drops == sorted(drops, reverse=True) and drops[-1] < len(ids)
        assert torch.equal(got.completion_ids, whole.completion_ids)
        assert torch.equal(got.finished, whole.finished)
        live = completion_mask_from_ids(whole.completion_ids, eos)  # after EOS the values are unused
        torch.testing.assert_close(got.logprobs * live, whole.logprobs * live, atol=1e-6, rtol=0)
        torch.testing.assert_close(got.entropy * live, whole.entropy * live, atol=1e-6, rtol=0)


NEAR_CERTAIN = 1e-4  # temperature at which the peaked model's every step is a near-certain choice


def assert_near_certain(ro):
    """Every sampled token had probability > 1 - 1e-4: the draws of any correct sampler agree."""
    assert (ro.logprobs[ro.completion_mask.bool()] > -1e-4).all()


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_fast_and_hf_engines_agree_where_sampling_is_near_certain(peaked, top_p):
    """The engines draw from the same distributions with different random numbers (`draw` against
    generate's multinomial). Where every step is a near-certain choice any two correct samplers agree,
    so the whole pipelines must give identical rollouts: completions, masks, EOS flags (from an EOS
    list), texts, over chunks of 5 rows."""
    model, tok = peaked
    kw = dict(n=6, max_new_tokens=12, batch_size=5, seed=11, temperature=NEAR_CERTAIN, top_p=top_p)
    with_eos(model, [-1])  # no EOS: each prompt's near-certain completion, to pick an EOS from
    free = generate_rollouts(model, tok, PROMPTS, engine="fast", **kw).completion_ids
    eos = next(int(t) for t in free[0, 3:] if t not in free[-1])  # ends the first prompt, not the last
    with_eos(model, [eos, tok.eos_token_id])
    try:
        fast = generate_rollouts(model, tok, PROMPTS, engine="fast", **kw)
        hf = generate_rollouts(model, tok, PROMPTS, engine="hf", **kw)
    finally:
        with_eos(model, tok.eos_token_id)
    assert_near_certain(fast)
    assert 0 < int(fast.finished.sum()) < len(fast.finished)  # some rows end with EOS, some are cut
    for name in ("completion_ids", "completion_mask", "finished", "prompt_ids", "prompt_mask"):
        assert torch.equal(getattr(fast, name), getattr(hf, name)), name
    assert fast.texts == hf.texts and fast.num_tokens == hf.num_tokens
    assert fast.logprobs.dtype == hf.logprobs.dtype == torch.float32
    torch.testing.assert_close(fast.logprobs, hf.logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.entropy, hf.entropy, atol=1e-5, rtol=1e-5)


def test_the_hf_engine_ignores_the_checkpoints_own_sampling_extras(peaked):
    """A generation_config with a repetition penalty and n-gram bans would change generate's sampling
    distribution but not the stored log-probs; the hf engine samples from exactly the distribution it
    records, like the fast one (identical where sampling is near-certain), while generate left to the
    checkpoint's config samples something else."""
    model, tok = peaked
    gc = model.generation_config
    saved = (gc.repetition_penalty, gc.no_repeat_ngram_size)
    gc.repetition_penalty, gc.no_repeat_ngram_size = 2.0, 2
    try:
        kw = dict(n=2, max_new_tokens=12, seed=5, temperature=NEAR_CERTAIN, top_p=1.0)
        fast = generate_rollouts(model, tok, PROMPTS, engine="fast", **kw)
        hf = generate_rollouts(model, tok, PROMPTS, engine="hf", **kw)
        torch.manual_seed(5)
        extras = model.generate(
            input_ids=hf.prompt_ids, attention_mask=hf.prompt_mask, do_sample=True, top_k=0,
            temperature=NEAR_CERTAIN, max_new_tokens=12, pad_token_id=tok.pad_token_id,
        )[:, hf.prompt_ids.shape[1] :]
    finally:
        gc.repetition_penalty, gc.no_repeat_ngram_size = saved
    assert_near_certain(fast)
    assert torch.equal(fast.completion_ids, hf.completion_ids)
    torch.testing.assert_close(fast.logprobs, hf.logprobs, atol=1e-5, rtol=1e-5)
    width = min(extras.shape[1], hf.completion_ids.shape[1])
    assert not torch.equal(extras[:, :width], hf.completion_ids[:, :width])  # the extras do change draws


def test_seed_reproduces_and_leaves_global_rng_alone(peaked):
    model, tok = peaked
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = generate_rollouts(model, tok, PROMPTS, n=3, max_new_tokens=10, seed=7, engine="fast")
    assert torch.equal(torch.get_rng_state(), before)
    b = generate_rollouts(model, tok, PROMPTS, n=3, max_new_tokens=10, seed=7, engine="fast")
    c = generate_rollouts(model, tok, PROMPTS, n=3, max_new_tokens=10, seed=8, engine="fast")
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.completion_ids, c.completion_ids)


# ----------------------------------------------------------------------------------------------------------
# Unsupported models and the engine option
# ----------------------------------------------------------------------------------------------------------
def test_unsupported_configs_name_the_reason():
    import transformers

    assert "rope" in supports_fast_decode(
        tiny_lm("llama", rope_scaling={"rope_type": "linear", "factor": 2.0})
    )
    assert "hidden_act" in supports_fast_decode(tiny_lm("llama", hidden_act="gelu"))
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=61)
    )
    assert "gpt2" in supports_fast_decode(gpt2)
    # a sliding window is active only for sequences longer than the window
    mistral = tiny_lm("mistral", sliding_window=16)
    assert "sliding" in supports_fast_decode(mistral)
    assert "sliding" in supports_fast_decode(mistral, max_length=17)
    assert supports_fast_decode(mistral, max_length=16) is None


def test_unsupported_model_falls_back_under_auto_and_raises_under_fast(tiny_model_dir):
    import transformers

    from maxk.models import load_model_and_tokenizer

    _, tok = load_model_and_tokenizer(str(tiny_model_dir))
    config = transformers.GPT2Config(
        n_layer=1,
        n_embd=32,
        n_head=2,
        vocab_size=len(tok),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(config).eval()
    with pytest.raises(ValueError, match=r"engine='fast' does not support this model: model type 'gpt2'"):
        generate_rollouts(gpt2, tok, PROMPTS, n=2, max_new_tokens=4, engine="fast")
    auto = generate_rollouts(gpt2, tok, PROMPTS, n=2, max_new_tokens=4, seed=0, engine="auto")
    hf = generate_rollouts(gpt2, tok, PROMPTS, n=2, max_new_tokens=4, seed=0, engine="hf")
    assert torch.equal(auto.completion_ids, hf.completion_ids) and torch.equal(auto.logprobs, hf.logprobs)
    with pytest.raises(ValueError, match=r"engine must be one of \['auto', 'hf', 'fast'\]"):
        generate_rollouts(gpt2, tok, PROMPTS, n=2, engine="vllm")


def test_engine_option_is_validated_in_both_configs():
    from maxk.config import load_config
    from maxk.evaluation.sampling import EvalConfig

    assert load_config(None, ["model.path=x", "rollout.engine=hf"]).rollout.engine == "hf"
    with pytest.raises(ValueError, match=r"rollout.engine='vllm' is not one of \['auto', 'hf', 'fast'\]"):
        load_config(None, ["model.path=x", "rollout.engine=vllm"])
    with pytest.raises(ValueError, match="engine must be"):
        EvalConfig(engine="vllm")


@pytest.mark.gpu
def test_bfloat16_on_cuda_is_close_to_the_hf_forward():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = tiny_lm("qwen2").to("cuda", torch.bfloat16)
    ids, prompt_mask = left_padded_batch(61)
    ids, prompt_mask = ids.cuda(), prompt_mask.cuda()
    fast = teacher_forced_logits(model, ids, prompt_mask, new=6).float()
    ref = hf_logits(model, ids, prompt_mask).float()
    assert fast.dtype == torch.float32 and fast.device.type == "cuda"
    real = torch.cat([prompt_mask, torch.ones_like(ids[:, 7:])], 1).bool()
    err = (fast - ref).abs()[real].max()
    assert err < 0.05 * ref[real].abs().max()  # bf16 rounding of a 2-layer net: well under 5% of the scale
    s = sample_completions(
        model,
        ids[:, :7],
        prompt_mask,
        max_new_tokens=5,
        temperature=1.0,
        top_p=0.9,
        eos_token_id=0,
        pad_token_id=1,
    )
    assert s.logprobs.dtype == torch.float32 and s.completion_ids.shape[0] == 3
    assert torch.isfinite(s.logprobs).all() and (s.logprobs <= 0).all()
