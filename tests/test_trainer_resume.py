"""Resume after SIGKILL gives the metrics of an uninterrupted run; `maxk train` as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = ["def add(a, b):", "The answer is", "print(sum(", "def square(x):", "assert f(1) == 2"]
CONFIG = [
    "run.steps=6",
    "run.save_every=2",
    "run.samples_every=1",
    "run.progress=false",
    "run.save_final_model=false",
    "data.prompts_per_step=2",
    "rollout.n=4",
    "rollout.max_new_tokens=8",
    "algorithm.k=2",
    "algorithm.ppo_epochs=2",
    "algorithm.minibatch_size=4",
    "algorithm.kl_beta=0.02",
    "optim.lr=3e-3",
    "optim.schedule=cosine",
    "optim.warmup_steps=1",
]


def reward(completions, tasks):
    """A continuous toy reward in [0, 1]."""
    return [min(1.0, c.count("a") / 4 + c.count(" ") / 40) for c in completions]


SCRIPT = f"""
import sys
from maxk.config import load_config
from maxk.rewards import Task
from maxk.trainer import train

model_dir, out_dir, mode = sys.argv[1:4]
tasks = [Task(id=f"t{{i}}", prompt=p) for i, p in enumerate({PROMPTS!r})]

def reward(completions, tasks):
    return [min(1.0, c.count("a") / 4 + c.count(" ") / 40) for c in completions]

cfg = load_config(None, [f"model.path={{model_dir}}", f"run.output_dir={{out_dir}}", *{CONFIG!r}])
train(cfg, resume=(mode == "resume"), tasks=tasks, reward_fn=reward)
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


class Crash(RuntimeError):
    pass


def _in_process_config(model_dir, out_dir):
    from maxk.config import load_config

    return load_config(None, [*CONFIG, f"model.path={model_dir}", f"run.output_dir={out_dir}"])


def test_resume_after_a_crash_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    """In-process version (fast): the reward raises during step 4, after step 3 was logged and step 2
    checkpointed; resuming redoes steps 3-6 and the logs equal those of a run that never stopped."""
    from maxk.rewards import Task
    from maxk.trainer import train

    tasks = [Task(id=f"t{i}", prompt=p) for i, p in enumerate(PROMPTS)]
    train(_in_process_config(tiny_model_dir, tmp_path / "full"), tasks=tasks, reward_fn=reward)
    calls = []

    def crashing(completions, tasks):
        calls.append(1)
        if len(calls) == 4:
            raise Crash("simulated crash in step 4")
        return reward(completions, tasks)

    cfg = _in_process_config(tiny_model_dir, tmp_path / "crashed")
    with pytest.raises(Crash):
        train(cfg, tasks=tasks, reward_fn=crashing)
    assert len(_metrics(tmp_path / "crashed")) == 3
    assert (tmp_path / "crashed" / "checkpoints" / "latest").read_text() == "step_000002"
    train(cfg, resume=True, tasks=tasks, reward_fn=reward)
    a, b = _metrics(tmp_path / "full"), _metrics(tmp_path / "crashed")
    assert [m["step"] for m in b] == [1, 2, 3, 4, 5, 6]
    assert a == b  # exact: same floats, not approximately
    assert any(m["grad_norm"] > 0 for m in a) and len({m["reward_mean"] for m in a}) > 1
    assert (tmp_path / "full" / "completions.jsonl").read_text() == (
        tmp_path / "crashed" / "completions.jsonl"
    ).read_text()


def test_resume_after_sigkill_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir), str(full), "fresh"],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )

    proc = subprocess.Popen(
        [sys.executable, str(script), str(tiny_model_dir), str(killed), "fresh"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 240
    # kill once step 3 is logged: the newest checkpoint is then step 2 and step 3 must be redone
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    logged = len(metrics.read_text().splitlines())
    assert 3 <= logged < 6
    assert (killed / "checkpoints" / "latest").exists()

    subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir), str(killed), "resume"],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    a, b = _metrics(full), _metrics(killed)
    assert [m["step"] for m in b] == [1, 2, 3, 4, 5, 6]
    assert a == b  # exact: same floats, not approximately
    assert any(m["grad_norm"] > 0 for m in a) and len({m["reward_mean"] for m in a}) > 1
    samples_a = (full / "completions.jsonl").read_text()
    assert samples_a == (killed / "completions.jsonl").read_text()


def test_cli_train_subprocess_then_resume_to_more_steps(tiny_model_dir, tmp_path):
    from maxk.cli import main

    out = tmp_path / "cli-run"
    cmd = [
        sys.executable,
        "-m",
        "maxk.cli",
        "train",
        "--config",
        str(ROOT / "examples" / "train_tiny.yaml"),
        "--set",
        f"model.path={tiny_model_dir}",
        f"run.output_dir={out}",
        "eval.every=0",
        "run.progress=false",
        "rollout.max_new_tokens=4",
        "--run.steps",
        "1",
        "--algorithm.kl_beta",
        "0",
    ]
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"run directory: {out}" in done.stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / "final_model" / "config.json").exists()
    assert main(["train", "--resume", str(out), "--set", "run.steps=2"]) == 0
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--set", "algorithm.k=99"], "algorithm.k=99 must be between 1 and rollout.n=8"),
        (["--algorithm.minibatch_size", "5"], "multiple of rollout.n=8"),
        ([], "give --config FILE"),
    ],
)
def test_cli_bad_configs_exit_2_with_the_message(argv, message, capsys):
    from maxk.cli import main

    cmd = ["train"]
    if argv:
        cmd += ["--config", str(ROOT / "examples" / "train_tiny.yaml"), *argv]
    assert main(cmd) == 2
    assert message in capsys.readouterr().err
