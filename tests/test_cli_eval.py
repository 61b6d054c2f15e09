"""`maxk eval / metrics / compare` end to end on the tiny model, including a SIGKILL and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from maxk.cli import main

N, PROMPTS = 4, 6


def write_tasks(path, count=PROMPTS):
    rows = [
        {
            "id": f"add-{i}",
            "prompt": f"def add(a, b):\n    # task {i}\n",
            "tests": ["assert candidate(1, 2) == 3"],
            "entry_point": "add",
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_args(model_dir, tasks, out, *extra):
    return [
        "eval",
        "--model",
        str(model_dir),
        "--tasks",
        str(tasks),
        "--n",
        str(N),
        "--out",
        str(out),
        "--max-new-tokens",
        "12",
        "--batch-size",
        "8",
        "--seed",
        "3",
        "--threads",
        "1",
        "--n-boot",
        "100",
        "--quiet",
        *extra,
    ]


def test_eval_writes_samples_report_and_resumes_as_noop(tmp_path, tiny_model_dir, capsys):
    tasks = write_tasks(tmp_path / "tasks.jsonl", count=3)
    out = tmp_path / "run"
    assert main(eval_args(tiny_model_dir, tasks, out)) == 0
    printed = capsys.readouterr().out
    assert "| k | max@k |" in printed and "| 4 |" in printed
    lines = (out / "samples.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert len(recs) == 3 * N
    assert [(r["prompt_index"], r["sample_index"]) for r in recs] == [
        (p, i) for p in range(3) for i in range(N)
    ]
    assert {"completion", "reward", "status", "passed", "total", "num_tokens", "entropy"} <= set(recs[0])
    assert all(r["total"] == 1 and 0.0 <= r["reward"] <= 1.0 for r in recs)
    assert all(r["num_tokens"] >= 1 and r["entropy"] > 0 for r in recs)  # a random model is uncertain
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ks"] == [1, 2, 4] and metrics["n_prompts"] == 3
    assert (out / "curves.png").stat().st_size > 10_000
    before = (out / "samples.jsonl").read_bytes()
    assert main(eval_args(tiny_model_dir, tasks, out)) == 0  # everything done: nothing re-sampled
    assert (out / "samples.jsonl").read_bytes() == before
    # other settings in the same directory: refused, exit 2, the difference named
    assert main(eval_args(tiny_model_dir, tasks, out, "--temperature", "0.7")) == 2
    assert "temperature: was 1.0, now 0.7" in capsys.readouterr().err


def test_eval_bad_inputs_exit_2(tmp_path, tiny_model_dir, capsys):
    tasks = write_tasks(tmp_path / "tasks.jsonl", count=1)
    assert main(eval_args(tmp_path / "no-such-model", tasks, tmp_path / "a")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(eval_args(tiny_model_dir, tmp_path / "missing.jsonl", tmp_path / "b")) == 2
    capsys.readouterr()
    assert main(eval_args(tiny_model_dir, tasks, tmp_path / "c", "--reward", "nope")) == 2
    assert "unknown" in capsys.readouterr().err


def test_sigkill_then_rerun_gives_identical_samples(tmp_path, tiny_model_dir):
    tasks = write_tasks(tmp_path / "tasks.jsonl")
    # reference: uninterrupted, in this process
    assert main(eval_args(tiny_model_dir, tasks, tmp_path / "ref")) == 0
    reference = (tmp_path / "ref" / "samples.jsonl").read_bytes()
    assert reference.count(b"\n") == PROMPTS * N
    # the same command as a subprocess, SIGKILLed once the first prompt is on disk
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "maxk.cli", *eval_args(tiny_model_dir, tasks, out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    samples, deadline = out / "samples.jsonl", time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_bytes().count(b"\n") >= N:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"finished or failed before the kill: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = samples.read_bytes().count(b"\n")
    assert N <= done_at_kill < PROMPTS * N  # killed mid-run
    # rerun with the same arguments: continues, same bytes, same numbers
    assert main(eval_args(tiny_model_dir, tasks, out)) == 0
    assert samples.read_bytes() == reference
    m_ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    m_new = json.loads((out / "metrics.json").read_text())
    assert m_ref["overall"] == m_new["overall"] and m_ref["per_prompt"] == m_new["per_prompt"]


def write_samples(path, shift):
    rows = []
    for p in range(6):
        for i in range(8 if p else 2):  # prompt 0 has N = 2 only: excluded at k >= 4
            r = min(1.0, ((p * 8 + i) * 37 % 11) / 10 + shift)
            rows.append({"task_id": f"t{p}", "sample_index": i, "reward": r, "completion": f"x{i % 3}"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_metrics_and_compare_on_saved_samples(tmp_path, capsys):
    a = write_samples(tmp_path / "base" / "samples.jsonl", 0.0)
    write_samples(tmp_path / "better" / "samples.jsonl", 0.2)
    assert main(["metrics", str(a), "--k", "1", "4", "8"]) == 0
    out = capsys.readouterr().out
    assert "## Best-of-N: base" in out and "(1 with N<k excluded)" in out
    assert (tmp_path / "base" / "metrics.md").exists() and (tmp_path / "base" / "curves.png").exists()
    assert (
        main(["compare", str(tmp_path / "base"), str(tmp_path / "better"), "--out", str(tmp_path / "cmp")])
        == 0
    )
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| k | base | better | Δ better | p | W/T/L |" in md
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    k1 = next(r for r in data["paired"]["better"] if r["metric"] == "max@k" and r["k"] == 1)
    assert k1["mean_diff"] > 0 and k1["n_prompts"] == 6
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000


def test_metrics_malformed_file_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "a", "reward": 1}\n{"task_id": "a"}\n')
    assert main(["metrics", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "reward" in err
    assert main(["compare", str(bad)]) == 2


def test_eval_engine_option_is_recorded_and_part_of_the_settings(tmp_path, tiny_model_dir, capsys):
    """`--engine hf` samples with generate; the engine is a setting of the run (the two engines draw
    different random numbers), so resuming the directory with the other engine is refused."""
    tasks = write_tasks(tmp_path / "tasks.jsonl", count=2)
    out = tmp_path / "run"
    assert main(eval_args(tiny_model_dir, tasks, out, "--engine", "hf")) == 0
    assert '"engine": "hf"' in (out / "run.json").read_text()
    capsys.readouterr()
    assert main(eval_args(tiny_model_dir, tasks, out, "--engine", "fast")) == 2
    assert "engine: was 'hf', now 'fast'" in capsys.readouterr().err
