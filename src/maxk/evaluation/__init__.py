"""Best-of-N evaluation: sample N completions per prompt, score them, report pass@k / max@k curves.

Light pieces (schema, metrics, compare, report, plots, diversity) need only numpy/scipy/matplotlib, so
`maxk metrics` and `maxk compare` run without transformers; the sampling loop (`evaluate_best_of_n`) is
imported on first use. Shape letters: P prompts, N samples per prompt, K requested ks.
"""

from __future__ import annotations

from maxk.evaluation.compare import PairedResult, paired_comparison
from maxk.evaluation.diversity import Diversity, diversity
from maxk.evaluation.metrics import Curves, MetricCurve, curves_from_groups, curves_from_samples, default_ks
from maxk.evaluation.report import compare_markdown, metrics_markdown, write_metrics_report
from maxk.evaluation.schema import PromptSamples, SamplesFormatError, read_records, read_samples

_LAZY = {"evaluate_best_of_n": "maxk.evaluation.sampling", "EvalConfig": "maxk.evaluation.sampling"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'maxk.evaluation' has no attribute {name!r}")


def plot_curves(*args, **kwargs):
    """See maxk.evaluation.plots.plot_curves (imported lazily: matplotlib is slow to import)."""
    from maxk.evaluation.plots import plot_curves as _plot

    return _plot(*args, **kwargs)


__all__ = [
    "Curves",
    "Diversity",
    "EvalConfig",
    "MetricCurve",
    "PairedResult",
    "PromptSamples",
    "SamplesFormatError",
    "compare_markdown",
    "curves_from_groups",
    "curves_from_samples",
    "default_ks",
    "diversity",
    "evaluate_best_of_n",
    "metrics_markdown",
    "paired_comparison",
    "plot_curves",
    "read_records",
    "read_samples",
    "write_metrics_report",
]
