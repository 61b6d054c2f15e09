"""Policy-gradient losses for the update (pure core): clipped surrogate, k3 KL, loss aggregation.

Shapes: B sequences (rows), T completion tokens. Every function takes per-token log-probs (B, T) and a
0/1 mask (B, T) and returns tensors; nothing here logs, moves devices, or reads a config.

Two registries keep the options out of `if` chains:
- `RATIOS`: how the importance ratio pi_theta / pi_old is formed (per token, or one per sequence).
- `AGGREGATIONS`: how a (B, T) per-token loss becomes a scalar (token mean, sequence mean, sequence sum).
"""

from __future__ import annotations

import torch

from maxk.registry import Registry

RATIOS: Registry = Registry("ratio level")
AGGREGATIONS: Registry = Registry("loss aggregation")


def _check(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> None:
    if logp.dim() != 2 or logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp, old_logp and mask must all be (B, T), got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )


@RATIOS.register("token")
def token_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log rho_t = log pi_theta(y_t) - log pi_old(y_t) per token (PPO, GRPO). (B, T) -> (B, T), 0 on pads."""
    return (logp - old_logp) * mask


@RATIOS.register("sequence")
def sequence_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log rho = sum_t [log pi_theta - log pi_old](y_t): the whole sequence's importance ratio (the ratio of
    MATH.md section 3, delta = rho - 1), broadcast to its tokens. (B, T) -> (B, T), 0 on padding.

    Token-factorised (as GSPO-token): the value is log rho at every token, but the gradient at token t is
    grad log pi(y_t) only, so sum_t grad rho_t = rho grad log pi(y) = grad rho, and every aggregation
    gives the same gradient as the token level at rho = 1. Clipping acts on the sequence's rho.
    """
    token = (logp - old_logp) * mask
    return (token.sum(-1, keepdim=True).detach() + token - token.detach()) * mask


@AGGREGATIONS.register("token_mean")
def token_mean(values, mask, *, num_tokens=None, num_sequences=None, length_norm=1.0):
    """sum_{i,t} v_it / num_tokens (DAPO). Each token weighs the same: long completions dominate the
    gradient, but the per-token step size does not shrink with length. num_tokens defaults to mask.sum().
    """
    denom = mask.sum() if num_tokens is None else num_tokens
    return (values * mask).sum() / denom


@AGGREGATIONS.register("sequence_mean")
def sequence_mean(values, mask, *, num_tokens=None, num_sequences=None, length_norm=1.0):
    """(1/B) sum_i (1/L_i) sum_t v_it (original GRPO). Each sequence weighs the same, so a token of a short
    completion gets a larger step than one of a long completion (length bias: negative advantages push
    towards longer answers). num_sequences defaults to B.
    """
    denom = values.shape[0] if num_sequences is None else num_sequences
    per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.sum() / denom


@AGGREGATIONS.register("sequence_sum")
def sequence_sum(values, mask, *, num_tokens=None, num_sequences=None, length_norm=1.0):
    """(1/(B * length_norm)) sum_i sum_t v_it (Dr. GRPO, length_norm = max new tokens). With the surrogate
    below its gradient is (1/(B * length_norm)) sum_i A_i grad log pi(y_i): the unbiased score-function
    estimator, with no length bias; its scale grows with completion length.
    """
    denom = values.shape[0] if num_sequences is None else num_sequences
    return (values * mask).sum() / (denom * length_norm)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref) (Schulman 2020): with u = log pi_ref - log pi_theta,
    k3 = exp(u) - u - 1 >= 0. Unbiased for the KL when y ~ pi_theta; 0 where the two agree. (B, T) -> (B, T).
    """
    u = ref_logp - logp
    return torch.exp(u) - u - 1.0


def clipped_surrogate_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    ratio_level: str = "token",
    aggregation: str = "token_mean",
    weights_include_ratio: bool = False,
    num_tokens=None,
    num_sequences=None,
    length_norm: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate, loss = aggregate( -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) ).

    logp: (B, T) current log-probs with grad; old_logp: (B, T) behaviour log-probs; advantages: (B,) one
    scalar per sequence, broadcast over its tokens; mask: (B, T) 0/1.
    Before clipping engages, grad = -A grad log pi summed per `aggregation` (at rho = 1: -A grad log p).
    On the clipped side (rho > 1 + eps_high with A > 0, rho < 1 - eps_low with A < 0) the gradient is 0.

    weights_include_ratio: the advantages already carry the importance weight (the off-policy max@k
    weights rt'_i of MATH.md section 3 contain (1 + delta_i) for the sample's own ratio). The surrogate
    then uses A / stopgrad(rho), so its gradient is exactly A_i grad log pi_theta(y_i) (not A_i rho_i ...),
    while the clip still bounds how far rho can move.
    num_tokens / num_sequences: normalisers for gradient accumulation (the whole minibatch's totals), so
    the micro-batch losses sum to the minibatch loss. Returns (loss, stats) with stats of 0-dim tensors:
    clip_frac (fraction of tokens whose gradient is clipped away), approx_kl (k3 of pi_old vs pi_theta,
    token mean), ratio_mean.
    """
    _check(logp, old_logp, mask)
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be (B,) = {tuple(logp.shape[:1])}, got {tuple(advantages.shape)}")
    clip_high = clip_low if clip_high is None else clip_high
    mask = mask.to(logp.dtype)
    log_ratio = RATIOS.get(ratio_level)(logp, old_logp, mask)
    ratio = torch.exp(log_ratio)
    adv = advantages.to(logp.dtype).unsqueeze(-1).expand_as(logp)
    if weights_include_ratio:
        adv = adv / ratio.detach()
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    loss = AGGREGATIONS.get(aggregation)(
        per_token, mask, num_tokens=num_tokens, num_sequences=num_sequences, length_norm=length_norm
    )
    n_tok = mask.sum().clamp(min=1)
    with torch.no_grad():
        clipped_away = (clipped < unclipped).to(mask.dtype)  # min picks the constant clipped branch
        stats = {
            "clip_frac": (clipped_away * mask).sum() / n_tok,
            "approx_kl": (kl_k3(old_logp, logp.detach()) * mask).sum() / n_tok,
            "ratio_mean": (ratio.detach() * mask).sum() / n_tok,
        }
    return loss, stats


def kl_penalty(logp, ref_logp, mask, *, aggregation="token_mean", num_tokens=None, num_sequences=None,
               length_norm: float = 1.0) -> torch.Tensor:
    """aggregate(k3(pi_theta, pi_ref)) with the same aggregation as the surrogate; multiply by beta."""
    _check(logp, ref_logp, mask)
    mask = mask.to(logp.dtype)
    return AGGREGATIONS.get(aggregation)(
        kl_k3(logp, ref_logp), mask, num_tokens=num_tokens, num_sequences=num_sequences,
        length_norm=length_norm,
    )
