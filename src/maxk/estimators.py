"""Unbiased Best-of-N metrics: pass@k and max@k from N >= k samples (pure core).

PLACEHOLDER first version (the core issue replaces it with the full, proven implementation).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _log_comb(a, b):
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def pass_at_k(n, c, k):
    """Codex estimator 1 - C(n-c, k)/C(n, k) (Chen et al. 2021), broadcasting over arrays."""
    n, c, k = np.broadcast_arrays(np.asarray(n), np.asarray(c), np.asarray(k))
    out = np.empty(n.shape, dtype=np.float64)
    for idx in np.ndindex(n.shape):
        ni, ci, ki = int(n[idx]), int(c[idx]), int(k[idx])
        out[idx] = 1.0 if ni - ci < ki else 1.0 - float(np.prod(1.0 - ki / np.arange(ni - ci + 1, ni + 1)))
    return out if out.shape else float(out)


def max_at_k(rewards, k: int):
    """Unbiased estimate of E[max of k i.i.d. rewards]: sum_{i>=k} C(i-1,k-1)/C(N,k) r(i), r sorted."""
    is_np = not isinstance(rewards, torch.Tensor)
    r = torch.as_tensor(rewards, dtype=torch.float64) if is_np else rewards
    n = r.shape[-1]
    i = torch.arange(1, n + 1, dtype=torch.float64, device=r.device)
    logw = torch.lgamma(i) - math.lgamma(k) - torch.lgamma((i - k + 1).clamp(min=1)) - _log_comb(n, k)
    w = torch.where(i >= k, logw.exp(), torch.zeros_like(logw)).to(r.dtype)
    out = (r.sort(dim=-1).values * w).sum(-1)
    return out.numpy() if is_np else out


def max_at_k_curve(rewards, ks):
    """max@k for each k in ks: dict k -> (mean over prompts, standard error). rewards (P, N)."""
    r = torch.as_tensor(np.asarray(rewards), dtype=torch.float64)
    out = {}
    for k in ks:
        v = max_at_k(r, k)
        out[k] = (float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else 0.0)
    return out
