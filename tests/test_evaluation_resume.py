"""Resume of the Best-of-N loop: a kill at any byte of samples.jsonl, then a rerun, gives the same file.

The sampler is replaced by a fake that is a function of (seed, prompt index), as the real one is (the
tiny-model SIGKILL test in test_cli_eval.py checks the real one end to end). Here every line boundary and
many byte offsets inside lines are enumerated as crash points.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import maxk.evaluation.sampling as sampling
from maxk.evaluation.sampling import EvalConfig, cut_at_stop, evaluate_best_of_n, prompt_seed
from maxk.evaluation.schema import SamplesFormatError

TASKS = [SimpleNamespace(id=f"task-{i}", prompt=f"prompt {i}") for i in range(5)]
CFG = EvalConfig(n=3, seed=11, reward="fake")


@pytest.fixture
def fake_sampler(monkeypatch):
    calls = []

    def fake(model, tokenizer, task, p, cfg):
        calls.append(p)
        rng = np.random.default_rng(prompt_seed(cfg.seed, p))
        return [
            {
                "task_id": task.id,
                "prompt_index": p,
                "sample_index": i,
                "completion": f"c{rng.integers(3)}",
                "reward": float(rng.integers(0, 5)) / 4,
                "status": "ok",
                "passed": None,
                "total": None,
                "num_tokens": int(rng.integers(1, 9)),
                "entropy": round(float(rng.random()), 6),
            }
            for i in range(cfg.n)
        ]

    monkeypatch.setattr(sampling, "sample_prompt", fake)
    return calls


def run(out_dir):
    return evaluate_best_of_n(
        None, None, TASKS, config=CFG, out_dir=out_dir, n_boot=50, plot=False, progress=False
    )


def test_prompt_seed_is_stable_and_distinct():
    assert prompt_seed(0, 0) == prompt_seed(0, 0)
    seeds = {prompt_seed(s, p) for s in range(3) for p in range(50)}
    assert len(seeds) == 150 and all(0 <= x < 2**31 for x in seeds)


def test_cut_at_stop():
    assert cut_at_stop("    return 1\ndef g():\n", ("\ndef ", "\n#")) == "    return 1"
    assert cut_at_stop("abc", ()) == "abc"
    assert cut_at_stop("a\n#x\ndef ", ("\ndef ", "\n#")) == "a"


def test_command_line_stops_unescape():
    from maxk.evaluation.cli_eval import unescape

    assert unescape(r"\n```") == "\n```" and unescape(r"a\tb") == "a\tb" and unescape("plain") == "plain"


def test_kill_at_any_point_then_resume_is_exact(tmp_path, fake_sampler):
    full = run(tmp_path / "full")
    reference = (tmp_path / "full" / "samples.jsonl").read_bytes()
    assert fake_sampler == list(range(len(TASKS)))
    assert len(full.records) == len(TASKS) * CFG.n
    boundaries = [i + 1 for i, b in enumerate(reference) if b == ord("\n")]
    offsets = sorted(
        {0, len(reference), *boundaries, *(b - 1 for b in boundaries), *(b - 7 for b in boundaries)}
    )
    for cut in offsets:
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "run.json").write_bytes((tmp_path / "full" / "run.json").read_bytes())
        (d / "samples.jsonl").write_bytes(reference[:cut])
        fake_sampler.clear()
        res = run(d)
        assert (d / "samples.jsonl").read_bytes() == reference, f"crash at byte {cut}"
        complete_groups = sum(1 for b in boundaries if b <= cut) // CFG.n
        assert fake_sampler == list(range(complete_groups, len(TASKS))), f"crash at byte {cut}"
        assert res.records == full.records
        assert res.curves.overall["max@k"].mean == full.curves.overall["max@k"].mean


def test_in_memory_run_matches_file_run(tmp_path, fake_sampler):
    on_disk = run(tmp_path / "a")
    in_memory = evaluate_best_of_n(None, None, TASKS, config=CFG, n_boot=50, progress=False)
    assert in_memory.records == on_disk.records and in_memory.samples_path is None
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["ks"] == [1, 2]


def test_other_settings_in_same_directory_are_refused(tmp_path, fake_sampler):
    run(tmp_path / "a")
    other = EvalConfig(n=3, seed=12, reward="fake")
    with pytest.raises(ValueError, match="seed: was 11, now 12"):
        evaluate_best_of_n(None, None, TASKS, config=other, out_dir=tmp_path / "a", progress=False)


def test_foreign_or_corrupt_lines_are_errors(tmp_path, fake_sampler):
    run(tmp_path / "a")
    path = tmp_path / "a" / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    with pytest.raises(SamplesFormatError, match="samples.jsonl:2: not valid JSON"):
        run(tmp_path / "a")
    rec = json.loads(lines[0]) | {"task_id": "elsewhere"}
    path.write_text(json.dumps(rec) + "\n" + "".join(lines[1:]))
    with pytest.raises(SamplesFormatError, match="samples.jsonl:1: .*'elsewhere'.* not in this task list"):
        run(tmp_path / "a")


def test_config_contracts():
    with pytest.raises(ValueError, match="n must be >= 1"):
        EvalConfig(n=0)
    with pytest.raises(ValueError, match="no tasks"):
        evaluate_best_of_n(None, None, [], n=2)
    dup = [SimpleNamespace(id="a", prompt="x")] * 2
    with pytest.raises(ValueError, match="unique"):
        evaluate_best_of_n(None, None, dup, n=2)
