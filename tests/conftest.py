"""Shared fixtures: offline Hugging Face, a tiny local causal LM built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

TINY_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "def square(x):\n    return x * x\n",
    "print(sum(int(t) for t in input().split()))\n",
    "Write a function f(x) that returns the answer.\n",
    "The answer is 42. assert f(1) == 2\n",
] * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random tiny Qwen2 model + BPE tokenizer saved to a temporary directory (built once)."""
    from maxk.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), TINY_TEXTS, vocab_size=300)
