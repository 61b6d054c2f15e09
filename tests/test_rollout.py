"""Rollouts: shapes, seeding, EOS masks, and behaviour log-probs equal to the update's recomputation."""

from __future__ import annotations

import functools

import pytest
import torch

from maxk.rollout import completion_mask_from_ids, generate_rollouts, token_log_probs

PROMPTS = ["def add(a, b):", "The answer is", "print(sum("]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from maxk.models import load_model_and_tokenizer

    torch.set_num_threads(1)
    return load_model_and_tokenizer(str(tiny_model_dir))


def test_completion_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 2, 3, 3]])
    # row 0: EOS (2) at t=1 -> tokens 0..1 kept; row 1: no EOS -> all kept; row 2: EOS at t=0 -> only it.
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert torch.equal(completion_mask_from_ids(ids, 2), expected)
    assert torch.equal(completion_mask_from_ids(ids, [9, 2]), expected)


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_shapes_row_order_and_masks(model_and_tokenizer, engine):
    model, tok = model_and_tokenizer
    ro = generate_rollouts(model, tok, PROMPTS, n=4, max_new_tokens=12, batch_size=5, seed=0, engine=engine)
    b = len(PROMPTS) * 4
    assert ro.shape == (3, 4)
    assert ro.completion_ids.shape[0] == b and ro.logprobs.shape == ro.completion_ids.shape
    assert ro.entropy.shape == ro.completion_ids.shape and ro.prompt_ids.shape[0] == b
    assert ro.completion_ids.shape[1] <= 12
    # row p*N + i carries prompt p
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)["input_ids"]
    for row in range(b):
        assert torch.equal(ro.prompt_ids[row], enc[row // 4])
    # masked positions carry zero log-prob/entropy; real positions have log-prob <= 0 and entropy > 0
    m = ro.completion_mask.bool()
    assert (ro.logprobs[~m] == 0).all() and (ro.entropy[~m] == 0).all()
    assert (ro.logprobs[m] <= 0).all() and (ro.entropy[m] > 0).all()
    assert ro.num_tokens == int(m.sum())
    has_eos = (ro.completion_ids == tok.eos_token_id).any(1)
    assert torch.equal(ro.finished, has_eos)
    assert (ro.completion_mask[~ro.finished].sum(1) == ro.completion_ids.shape[1]).all()
    # the mask is a prefix that ends at the first EOS
    assert torch.equal(ro.completion_mask, completion_mask_from_ids(ro.completion_ids, tok.eos_token_id))
    # texts are the decoded masked completions
    flat = tok.batch_decode(ro.completion_ids, skip_special_tokens=True)
    assert [t for row in ro.texts for t in row] == flat


def test_seed_reproduces_and_leaves_global_rng_alone(model_and_tokenizer):
    model, tok = model_and_tokenizer
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = generate_rollouts(model, tok, PROMPTS, n=3, max_new_tokens=10, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = generate_rollouts(model, tok, PROMPTS, n=3, max_new_tokens=10, seed=7)
    c = generate_rollouts(model, tok, PROMPTS, n=3, max_new_tokens=10, seed=8)
    assert a.texts == b.texts and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.completion_ids, c.completion_ids)


@pytest.mark.parametrize("engine", ["fast", "hf"])
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (1.5, 1.0)])
def test_recomputed_log_probs_equal_stored_ones(model_and_tokenizer, temperature, top_p, engine):
    """At the behaviour parameters the update's forward pass reproduces the stored log-probs."""
    model, tok = model_and_tokenizer
    ro = generate_rollouts(
        model, tok, PROMPTS, n=4, max_new_tokens=16, batch_size=6, seed=1,
        temperature=temperature, top_p=top_p, engine=engine,
    )
    with torch.no_grad():
        logp, ent = token_log_probs(
            model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask,
            temperature=temperature, with_entropy=True,
        )
    torch.testing.assert_close(logp, ro.logprobs, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ent, ro.entropy, atol=2e-5, rtol=1e-4)
    # the wrong temperature gives different numbers, so the check above can fail
    with torch.no_grad():
        other = token_log_probs(
            model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask,
            temperature=temperature * 2,
        )
    assert (other - ro.logprobs).abs().max() > 1e-3


def test_the_packed_forward_equals_the_padded_forward_with_a_padding_mask(model_and_tokenizer):
    """token_log_probs packs each row left and runs the model with its causal mask alone; the log-probs and
    their gradients equal those of the left-padded batch run with a padding mask and the same positions
    (prompts of different lengths, completions that end at different steps)."""
    from maxk.rollout import pack_left, position_ids_from_mask

    model, tok = model_and_tokenizer
    ro = generate_rollouts(model, tok, PROMPTS, n=3, max_new_tokens=12, seed=3)
    ragged = (torch.arange(12)[None, :] < 2 + torch.arange(len(ro.completion_ids))[:, None] % 11).long()
    assert len(set(ro.prompt_mask.sum(1).tolist())) > 1  # the rows are packed differently
    args = (ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ragged)

    def padded(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
        mask = torch.cat([prompt_mask, completion_mask], dim=1)
        ids = torch.cat([prompt_ids, completion_ids], dim=1)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        logp = torch.log_softmax(logits[:, -completion_ids.shape[1] - 1 : -1].float() / 0.8, dim=-1)
        return logp.gather(-1, completion_ids[..., None])[..., 0] * completion_mask

    grads = []
    for fn in (functools.partial(token_log_probs, temperature=0.8), padded):
        model.zero_grad()
        logp = fn(model, *args)
        (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
        grads.append((logp.detach(), [q.grad.clone() for q in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    for x, y in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    ids, first, index = pack_left(*args[:3])
    assert first == int(ro.prompt_mask.sum(1).min()) - 1 and ids.shape == (len(ragged), ro.input_ids.shape[1])
    longest = int(ro.prompt_mask.sum(1).argmax())
    assert torch.equal(ids[longest], ro.input_ids[longest])  # no shift
    with pytest.raises(ValueError, match="at least one prompt token"):
        pack_left(ro.prompt_ids, torch.zeros_like(ro.prompt_mask), ro.completion_ids)


def test_bad_arguments_raise(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with pytest.raises(ValueError, match="temperature"):
        generate_rollouts(model, tok, PROMPTS, n=2, temperature=0.0)
    with pytest.raises(ValueError, match="n >= 1"):
        generate_rollouts(model, tok, PROMPTS, n=0)
