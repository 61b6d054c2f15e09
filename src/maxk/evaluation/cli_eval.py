"""`maxk eval --model PATH --tasks FILE --n N --out DIR`: Best-of-N sampling, scoring and curves.

Samples N completions per task (KV-cached, batched), scores them with the reward, appends every sample to
DIR/samples.jsonl as it goes, then writes metrics.json, metrics.md and curves.png. Resumable: run the same
command again after a crash or kill and it continues where it stopped (DIR/run.json holds the settings;
other settings in the same DIR are refused). Exit status 2 on bad input (missing model or task file,
malformed options).
"""

from __future__ import annotations

import argparse
import json
import sys

from maxk.evaluation.cli_metrics import add_common_metric_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", required=True, help="local model directory (or a hub name 'org/model' with network)")
    a("--gguf-file", default=None, help="GGUF file name inside --model (slow to load; convert once instead)")
    a(
        "--tasks",
        required=True,
        help="task file (.jsonl, see docs/rewards.md) or a known name like 'humaneval'",
    )
    a("--split", default=None, help="dataset split when --tasks is a dataset")
    a("--limit", type=int, default=None, help="evaluate only the first LIMIT tasks")
    a("--n", type=int, default=16, help="samples per prompt, N (default 16)")
    a("--out", required=True, help="run directory: samples.jsonl, run.json, metrics.*, curves.png")
    a("--reward", default="code_tests", help="reward name in maxk.rewards.REWARDS (default code_tests)")
    a(
        "--reward-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword option of the reward, VALUE parsed as JSON when it can be (repeatable)",
    )
    a("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    a("--top-p", type=float, default=1.0, help="nucleus truncation (default 1.0)")
    a("--max-new-tokens", type=int, default=256, help="completion length limit (default 256)")
    a("--batch-size", type=int, default=64, help="rows per generate call (default 64)")
    a("--stop", nargs="*", default=[], help="cut completions at the first of these strings before scoring")
    a(
        "--codex-stop",
        action="store_true",
        help="HumanEval-style stops: \\ndef, \\nclass, \\nif __name__, \\nprint(, \\n#",
    )
    a(
        "--chat-stop",
        action="store_true",
        help="stops for chat answers: \\n```, \\nprint(, \\nassert , \\n# Example, \\n# Test, \\nif __name__",
    )
    a("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template")
    a(
        "--engine",
        default="auto",
        choices=["auto", "fast", "hf"],
        help="sampler: fast (maxk.decode; Llama, Mistral, Qwen2), hf (generate), auto (fast if supported)",
    )
    a("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="model dtype")
    a("--device", default=None, help="torch device (default: cpu, or the model's default)")
    a("--threads", type=int, default=None, help="torch CPU threads")
    a("--quiet", action="store_true", help="no per-prompt progress lines")
    add_common_metric_arguments(
        parser, seed_help="sampling seed; prompt p uses a seed derived from (SEED, p)"
    )


def parse_reward_options(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--reward-option expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def unescape(text: str) -> str:
    r"""'\n' and '\t' typed on a command line become a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def run(args: argparse.Namespace) -> int:
    import torch

    from maxk.evaluation.sampling import CHAT_STOP, CODEX_STOP, EvalConfig, evaluate_best_of_n
    from maxk.evaluation.schema import SamplesFormatError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from maxk.rewards import load_tasks

        stop = tuple(unescape(s) for s in args.stop) + (CODEX_STOP if args.codex_stop else ())
        stop += CHAT_STOP if args.chat_stop else ()
        cfg = EvalConfig(
            n=args.n,
            reward=args.reward,
            reward_options=parse_reward_options(args.reward_option),
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            stop=stop,
            chat=args.chat,
            engine=args.engine,
        )
        tasks = load_tasks(args.tasks, split=args.split)
        tasks = tasks[: args.limit] if args.limit is not None else tasks
        from maxk.models import load_model_and_tokenizer

        dtype = getattr(torch, args.dtype) if args.dtype else None
        model, tokenizer = load_model_and_tokenizer(
            args.model, dtype=dtype, device=args.device, gguf_file=args.gguf_file
        )
        info = {
            "model": args.model,
            "gguf_file": args.gguf_file,
            "tasks_source": args.tasks,
            "split": args.split,
            "limit": args.limit,
            "dtype": args.dtype,
        }
        result = evaluate_best_of_n(
            model,
            tokenizer,
            tasks,
            config=cfg,
            ks=args.k,
            out_dir=args.out,
            run_info=info,
            n_boot=args.n_boot,
            plot=not args.no_plot,
            progress=not args.quiet,
        )
    except (FileNotFoundError, SamplesFormatError, ValueError, KeyError, TypeError) as e:
        print(f"maxk eval: error: {e}", file=sys.stderr)
        return 2
    from maxk.evaluation.report import metrics_markdown

    print(metrics_markdown(result.curves))
    print("wrote " + ", ".join([str(result.samples_path), *result.files.values()]))
    return 0
