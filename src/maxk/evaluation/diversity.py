"""Diversity of the samples of each prompt: distinct programs, token entropy, distinct rewards.

RL that sharpens pass@1 tends to collapse the diversity Best-of-N lives on (arXiv:2510.23393), so the
evaluation reports these next to the curves:

- distinct_fraction: (number of distinct completions after whitespace normalisation) / N, in [1/N, 1].
  Normalisation: every run of whitespace (spaces, tabs, newlines) becomes one space, ends are stripped,
  so programs that differ only in layout count once. Samples with no completion text are ignored
  (nan when a prompt has none).
- mean_entropy: mean per-token entropy (nats) of the prompt's samples, token-weighted when token counts
  are known: sum_i H_i * T_i / sum_i T_i with H_i the sample's mean entropy over its T_i tokens
  (nan when no sample carries an entropy).
- distinct_rewards: number of distinct reward values among the N samples (1 = the group gives no signal
  to GRPO-like advantages).
Overall values are means over prompts (ignoring nan).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from maxk.evaluation.schema import PromptSamples

_WS = re.compile(r"\s+")


def normalise_whitespace(text: str) -> str:
    """Collapse each whitespace run to one space and strip the ends: 'a  b\\n' -> 'a b'."""
    return _WS.sub(" ", text).strip()


def distinct_fraction(completions: list[str | None]) -> float:
    """Fraction of distinct completions after whitespace normalisation; nan when none has text."""
    texts = [normalise_whitespace(c) for c in completions if c is not None]
    if not texts:
        return float("nan")
    return len(set(texts)) / len(texts)


def mean_token_entropy(entropies: np.ndarray | None, num_tokens: np.ndarray | None) -> float:
    """Token-weighted mean of per-sample mean entropies (plain mean when counts are missing or all 0)."""
    if entropies is None or entropies.size == 0:
        return float("nan")
    if num_tokens is not None and num_tokens.sum() > 0:
        return float((entropies * num_tokens).sum() / num_tokens.sum())
    return float(entropies.mean())


def distinct_rewards(rewards: np.ndarray, decimals: int = 9) -> int:
    """Number of distinct reward values (rounded to `decimals` so float noise does not count)."""
    return int(np.unique(np.round(rewards, decimals)).size)


@dataclass
class Diversity:
    """Per-prompt diversity, arrays of shape (P,), and their means over prompts."""

    distinct_fraction: np.ndarray
    mean_entropy: np.ndarray
    distinct_rewards: np.ndarray

    def summary(self) -> dict[str, float | None]:
        def mean(a):
            a = a[~np.isnan(a)]
            return float(a.mean()) if a.size else None

        return {
            "distinct_fraction": mean(self.distinct_fraction),
            "mean_entropy": mean(self.mean_entropy),
            "distinct_rewards": mean(self.distinct_rewards.astype(np.float64)),
        }


def diversity(groups: list[PromptSamples]) -> Diversity:
    """Diversity statistics of every prompt's samples."""
    return Diversity(
        distinct_fraction=np.array([distinct_fraction(g.completions) for g in groups], dtype=np.float64),
        mean_entropy=np.array([mean_token_entropy(g.entropies, g.num_tokens) for g in groups]),
        distinct_rewards=np.array([distinct_rewards(g.rewards) for g in groups], dtype=np.int64),
    )
