"""maxk: reinforcement learning of language models that optimises max@k (Best-of-N).

Shape letters used throughout: P prompts, N samples per prompt, T tokens, k as in max@k,
n and c as in Chen et al. (n samples, c correct).
"""

from maxk.estimators import MaxAtKCurve, max_at_k, max_at_k_curve, pass_at_k

__all__ = ["MaxAtKCurve", "max_at_k", "max_at_k_curve", "pass_at_k"]
__version__ = "0.1.0"
