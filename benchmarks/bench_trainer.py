"""Wall time per training step: maxk's trainer next to TRL's GRPOTrainer on the same tiny model.

    python benchmarks/bench_trainer.py                     # CPU, defaults below
    python benchmarks/bench_trainer.py --max-new-tokens 64 # short completions: the update weighs more
    python benchmarks/bench_trainer.py --device cuda --hidden 512 --layers 8
    python benchmarks/bench_trainer.py --engine fast       # maxk with one rollout engine only

Both trainers get the same random tiny Qwen2 model (built locally), the same prompts, P prompts x N
samples per step, the same max new tokens (by default N = 8 and 256 new tokens, as in the paper's
experiment, arXiv:2510.23393), temperature 1, top-p 1, one PPO iteration, no KL, no gradient
checkpointing, AdamW, and the same Python reward. Each trainer runs in its own subprocess (so
peak memory is its own); the first step is warm-up and is left out; a trainer's time is the median of the
rest. The trainers run one after the other, `--rounds` times in alternation (load that drifts on a shared
machine then hits each alike); the table shows each trainer's median round, and the ratio line lists
every round's ratio. maxk runs once per rollout engine (`--engine`, default both: `fast` is maxk.decode,
`hf` is Hugging Face `generate`, which TRL uses too). maxk's split comes from its metrics.jsonl; TRL's rollout
time is the time spent in `GRPOTrainer._generate_and_score_completions` (generation, old log-probs,
reward, advantages).
tokens/s counts generated completion tokens per second of the whole step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "Write a function add(a, b) that returns the sum.\n",
    "def square(x):\n",
    "The answer is",
    "print(sum(int(t) for t in input().split()))\n",
    "Write a function f(x) that returns the answer.\n",
    "assert f(1) == 2\n",
    "def is_even(n):\n",
    "Reverse the words of a line.\n",
]


def reward(completions, **_):
    """A continuous toy reward in [0, 1] (the same function for both trainers)."""
    return [min(1.0, c.count("a") / 8 + c.count(" ") / 64) for c in completions]


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_maxk(a, engine: str) -> dict:
    from maxk.config import load_config
    from maxk.rewards import Task
    from maxk.trainer import train

    tasks = [Task(id=f"t{i}", prompt=p) for i, p in enumerate(PROMPTS)]
    out = Path(a.workdir) / f"maxk-run-{engine}"
    cfg = load_config(None, [
        f"model.path={a.model}", f"model.device={a.device}", f"run.output_dir={out}", f"run.steps={a.steps}",
        "run.progress=false", "run.save_every=0", "run.save_final_model=false", "run.samples_every=0",
        "run.tensorboard=false", f"data.prompts_per_step={a.prompts}", f"rollout.n={a.n}",
        f"rollout.max_new_tokens={a.max_new_tokens}", f"rollout.batch_size={a.prompts * a.n}",
        f"algorithm.estimator={a.estimator}", "algorithm.k=4", "algorithm.ppo_epochs=1",
        f"algorithm.micro_batch_size={a.prompts * a.n}", "algorithm.kl_beta=0", "optim.lr=1e-5",
        f"run.seed={a.seed}", f"rollout.engine={engine}",
    ])
    train(cfg, tasks=tasks, reward_fn=lambda completions, tasks: reward(completions))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]
    return {
        "step_s": statistics.median(r["time/step_s"] for r in rows),
        "rollout_s": statistics.median(r["time/rollout_s"] for r in rows),
        "update_s": statistics.median(r["time/update_s"] for r in rows),
        "tokens": statistics.median(r["tokens"] for r in rows),
        "peak_mb": peak_memory_mb(a.device),
    }


def run_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    data = Dataset.from_dict({"prompt": PROMPTS * (a.steps * a.prompts // len(PROMPTS) + 2)})
    args = GRPOConfig(
        output_dir=str(Path(a.workdir) / "trl-run"), per_device_train_batch_size=a.prompts * a.n,
        num_generations=a.n, max_completion_length=a.max_new_tokens, num_iterations=1, beta=0.0,
        temperature=1.0, top_p=1.0, learning_rate=1e-5, max_steps=a.steps, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=not a.device.startswith("cuda"),
        gradient_checkpointing=False, bf16=False, seed=a.seed, disable_tqdm=True,
    )
    steps, gen, lengths = [], [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            steps.append(time.perf_counter() - self.t0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=tok, callbacks=[Timer()])
    inner = trainer._generate_and_score_completions

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            gen.append(time.perf_counter() - t0)

    trainer._generate_and_score_completions = timed
    trainer.train()
    step_s = statistics.median(steps[1:])
    rollout_s = statistics.median(gen[1:])
    return {
        "step_s": step_s, "rollout_s": rollout_s, "update_s": step_s - rollout_s,
        "tokens": statistics.median(lengths[1:]) * a.prompts * a.n, "peak_mb": peak_memory_mb(a.device),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=6, help="steps per trainer (the first is warm-up)")
    p.add_argument("--prompts", type=int, default=4, help="P prompts per step")
    p.add_argument("--n", type=int, default=8, help="N samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--estimator", default="maxk_offpolicy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", nargs="+", choices=["fast", "hf", "auto"], default=["fast", "hf"],
                   help="maxk rollout engine(s) to time (rollout.engine); one table row each")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds of all trainers; each trainer's median round is shown")
    p.add_argument("--only", help=argparse.SUPPRESS)  # "maxk:ENGINE" or "trl": run one trainer, print RESULT
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.only:
        result = run_trl(a) if a.only == "trl" else run_maxk(a, a.only.split(":")[1])
        print("RESULT " + json.dumps(result))
        return 0

    from maxk.models import build_tiny_model

    with tempfile.TemporaryDirectory() as work:
        model = build_tiny_model(Path(work) / "model", PROMPTS * 20, vocab_size=512, hidden_size=a.hidden,
                                 num_layers=a.layers, intermediate_size=4 * a.hidden)
        rounds: dict[str, list[dict]] = {}
        for i in range(a.rounds):  # trainers alternate, so load that drifts hits each of them alike
            workdir = Path(work) / f"round{i}"  # fresh run directories each round
            workdir.mkdir()
            for name in [f"maxk:{e}" for e in a.engine] + ["trl"]:
                cmd = [sys.executable, __file__, "--only", name, "--model", str(model), "--workdir",
                       str(workdir), *sys.argv[1:]]
                env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode or not line:
                    print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                    return 1
                rounds.setdefault(name, []).append(json.loads(line[-1][7:]))
    # per trainer, the round with the median step time (a whole round, so its columns stay consistent)
    results = {name: sorted(rs, key=lambda r: r["step_s"])[(len(rs) - 1) // 2] for name, rs in rounds.items()}
    t = results.pop("trl")
    print(f"device={a.device} model=Qwen2 hidden={a.hidden} layers={a.layers} P={a.prompts} N={a.n} "
          f"max_new_tokens={a.max_new_tokens} ppo_iterations=1 steps={a.steps} "
          f"(median of steps 2..{a.steps}; the median of {a.rounds} alternating rounds), "
          f"torch threads={os.environ.get('OMP_NUM_THREADS', 'default')}")
    print("| trainer | s / step | rollout s | update s | rollout tok/s | update tok/s | tokens/s | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [(f"maxk, engine={name.split(':')[1]}", r) for name, r in results.items()]
    for label, r in [*rows, ("TRL GRPOTrainer", t)]:
        print(f"| {label} | {r['step_s']:.3f} | {r['rollout_s']:.3f} | {r['update_s']:.3f} | "
              f"{r['tokens'] / r['rollout_s']:.0f} | {r['tokens'] / r['update_s']:.0f} | "
              f"{r['tokens'] / r['step_s']:.0f} | {r['peak_mb']:.0f} |")
    for (label, r), name in zip(rows, results):
        ratio = r["step_s"] / t["step_s"]
        each = ", ".join(f"{m['step_s'] / x['step_s']:.2f}x" for m, x in zip(rounds[name], rounds["trl"]))
        print(f"ratio maxk ({label[6:]}) / TRL time per step: {ratio:.2f}x  (target <= 0.5x; rounds: {each})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
