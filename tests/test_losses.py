"""Clipped surrogate, k3 KL and aggregation: gradients checked directly with autograd."""

from __future__ import annotations

import itertools

import pytest
import torch

from maxk.losses import AGGREGATIONS, RATIOS, clipped_surrogate_loss, kl_k3, kl_penalty


@pytest.fixture(autouse=True)
def _float64_default():
    """Gradient checks in float64; restored afterwards so other test modules see torch's default."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def toy_policy(b=3, t=4, v=5, seed=0):
    """A table policy: logits (B, T, V) as the parameter; returns (theta, tokens, mask)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(b, t, v, generator=g, requires_grad=True)
    tokens = torch.randint(0, v, (b, t), generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.float64)[:b, :t]
    return theta, tokens, mask


def logp_of(theta, tokens):
    return torch.log_softmax(theta, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def grad(f, theta):
    (g,) = torch.autograd.grad(f, theta, retain_graph=True)
    return g


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
def test_gradient_at_ratio_one_is_minus_a_grad_log_p(ratio_level):
    theta, tokens, mask = toy_policy()
    adv = torch.tensor([1.5, -0.7, 0.3])
    logp = logp_of(theta, tokens)
    loss, stats = clipped_surrogate_loss(
        logp, logp.detach(), adv, mask, ratio_level=ratio_level, aggregation="sequence_sum"
    )
    # (1/B) sum_i -A_i sum_t grad log p_it
    expected = grad(-(adv[:, None] * logp * mask).sum() / 3, theta)
    torch.testing.assert_close(grad(loss, theta), expected)
    assert stats["clip_frac"] == 0 and abs(stats["approx_kl"]) < 1e-12 and stats["ratio_mean"] == 1


@pytest.mark.parametrize("sign,shift", [(1.0, 0.5), (-1.0, -0.5)])
def test_zero_gradient_on_the_clipped_side(sign, shift):
    """rho = e^0.5 > 1.2 with A > 0, and rho = e^-0.5 < 0.8 with A < 0: the clipped branch, no gradient."""
    theta, tokens, mask = toy_policy()
    logp = logp_of(theta, tokens)
    old = logp.detach() - shift
    adv = torch.full((3,), sign)
    loss, stats = clipped_surrogate_loss(logp, old, adv, mask, clip_low=0.2)
    assert torch.count_nonzero(grad(loss, theta)) == 0
    assert stats["clip_frac"] == pytest.approx(1.0)
    # the other side is not clipped: same ratio, opposite advantage -> gradient -A rho grad log p
    loss2, stats2 = clipped_surrogate_loss(logp, old, -adv, mask, clip_low=0.2)
    assert torch.count_nonzero(grad(loss2, theta)) > 0 and stats2["clip_frac"] == 0


def test_asymmetric_clip_high():
    """rho = e^0.25 = 1.284: clipped with eps_high = 0.2, free with eps_high = 0.28 (DAPO clip-higher)."""
    theta, tokens, mask = toy_policy()
    logp = logp_of(theta, tokens)
    old = logp.detach() - 0.25
    adv = torch.ones(3)
    loss, _ = clipped_surrogate_loss(logp, old, adv, mask, clip_low=0.2)
    assert torch.count_nonzero(grad(loss, theta)) == 0
    loss, _ = clipped_surrogate_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.3)
    assert torch.count_nonzero(grad(loss, theta)) > 0


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
def test_weights_including_ratio_give_exactly_sum_a_grad_log_pi(ratio_level):
    """Off-policy max@k: with rho != 1 (inside the clip) the gradient is -(1/B) sum_i A_i grad log pi(y_i),
    not -(1/B) sum_i A_i rho_i grad log pi(y_i)."""
    theta, tokens, mask = toy_policy()
    logp = logp_of(theta, tokens)
    g = torch.Generator().manual_seed(3)
    old = logp.detach() + 0.02 * torch.randn(logp.shape, generator=g)  # |log rho_seq| < 0.1
    adv = torch.tensor([0.9, -0.4, 0.2])
    loss, stats = clipped_surrogate_loss(
        logp, old, adv, mask, ratio_level=ratio_level, aggregation="sequence_sum",
        weights_include_ratio=True, clip_low=0.5,
    )
    assert stats["clip_frac"] == 0 and stats["ratio_mean"] != 1
    expected = grad(-(adv[:, None] * logp * mask).sum() / 3, theta)
    torch.testing.assert_close(grad(loss, theta), expected)
    plain, _ = clipped_surrogate_loss(
        logp, old, adv, mask, ratio_level=ratio_level, aggregation="sequence_sum"
    )
    assert not torch.allclose(grad(plain, theta), expected)


def test_aggregations_golden_values():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # token mean: (1+2+3+4)/4 = 2.5; sequence mean: (2 + 4)/2 = 3; sequence sum, norm 5: 10/(2*5) = 1
    assert AGGREGATIONS.get("token_mean")(values, mask) == 2.5
    assert AGGREGATIONS.get("sequence_mean")(values, mask) == 3.0
    assert AGGREGATIONS.get("sequence_sum")(values, mask, length_norm=5.0) == 1.0


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "sequence_sum"])
def test_microbatch_losses_sum_to_the_minibatch_loss(aggregation):
    """Gradient accumulation: losses of row chunks with the whole minibatch's normalisers add up."""
    theta, tokens, mask = toy_policy()
    logp = logp_of(theta, tokens)
    old = logp.detach() + 0.1
    adv = torch.tensor([1.0, -2.0, 0.5])
    full, _ = clipped_surrogate_loss(logp, old, adv, mask, aggregation=aggregation)
    totals = {"num_tokens": mask.sum(), "num_sequences": 3}
    parts = [
        clipped_surrogate_loss(logp[s], old[s], adv[s], mask[s], aggregation=aggregation, **totals)[0]
        for s in (slice(0, 2), slice(2, 3))
    ]
    torch.testing.assert_close(sum(parts), full)


def test_sequence_ratio_gradient_is_rho_grad_log_pi():
    """Sequence level, rho_i != 1 inside the clip: grad = -(1/B) sum_i A_i rho_i grad log pi(y_i)."""
    theta, tokens, mask = toy_policy()
    logp = logp_of(theta, tokens)
    old = logp.detach() + torch.tensor([[0.05], [-0.03], [0.02]])
    adv = torch.tensor([0.9, -0.4, 0.2])
    loss, _ = clipped_surrogate_loss(logp, old, adv, mask, ratio_level="sequence", aggregation="sequence_sum")
    rho = torch.exp(((logp - old) * mask).sum(-1)).detach()
    expected = grad(-(adv[:, None] * rho[:, None] * logp * mask).sum() / 3, theta)
    torch.testing.assert_close(grad(loss, theta), expected)


def test_ratio_levels():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    old = torch.tensor([[-1.5, -2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    torch.testing.assert_close(RATIOS.get("token")(logp, old, mask), torch.tensor([[0.5, 0.0, 0.0]]))
    torch.testing.assert_close(RATIOS.get("sequence")(logp, old, mask), torch.tensor([[0.5, 0.5, 0.0]]))
    with pytest.raises(KeyError, match="token"):
        RATIOS.get("tokens")


def test_k3_is_unbiased_for_kl_by_enumeration():
    """E_{y ~ pi}[k3] = KL(pi || ref) exactly, enumerating a 4-way categorical; k3 >= 0 pointwise."""
    pi = torch.tensor([0.1, 0.2, 0.3, 0.4])
    ref = torch.tensor([0.25, 0.25, 0.4, 0.1])
    k3 = kl_k3(pi.log(), ref.log())
    assert (k3 >= 0).all()
    torch.testing.assert_close((pi * k3).sum(), (pi * (pi / ref).log()).sum())
    assert kl_k3(pi.log(), pi.log()).abs().max() == 0


def test_kl_penalty_gradient_is_zero_at_the_reference():
    theta, tokens, mask = toy_policy()
    logp = logp_of(theta, tokens)
    assert grad(kl_penalty(logp, logp.detach(), mask), theta).abs().max() < 1e-12
    assert grad(kl_penalty(logp, logp.detach() - 0.3, mask), theta).abs().max() > 1e-3


def test_shape_errors_name_the_shapes():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        clipped_surrogate_loss(z, torch.zeros(2, 4), torch.zeros(2), z)
    with pytest.raises(ValueError, match=r"advantages must be \(B,\)"):
        clipped_surrogate_loss(z, z, torch.zeros(3), z)
    with pytest.raises(KeyError, match="sequence_mean"):
        clipped_surrogate_loss(z, z, torch.zeros(2), z, aggregation="mean")


def test_all_option_combinations_run():
    theta, tokens, mask = toy_policy()
    logp = logp_of(theta, tokens)
    for ratio_level, agg, wir in itertools.product(RATIOS.names(), AGGREGATIONS.names(), [False, True]):
        loss, _ = clipped_surrogate_loss(
            logp, logp.detach(), torch.ones(3), mask, ratio_level=ratio_level, aggregation=agg,
            weights_include_ratio=wir,
        )
        assert torch.isfinite(loss)
