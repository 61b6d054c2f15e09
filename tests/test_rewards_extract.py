"""Program extraction from completions: fences, bare code, HumanEval-style bodies."""

from __future__ import annotations

from maxk.rewards import Task, extract_program
from maxk.rewards.extract import code_blocks

TASK = Task(id="t", prompt="def add(a, b):\n    \"\"\"Sum.\"\"\"\n", entry_point="add", tests=["assert 1"])


def test_fenced_python_block_wins_over_prose():
    c = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nThis adds."
    assert extract_program(c, TASK) == "def add(a, b):\n    return a + b\n"


def test_last_block_defining_the_entry_point():
    c = ("```python\ndef add(a, b):\n    return 0\n```\nbetter:\n"
         "```py\ndef add(a, b):\n    return a + b\n```\n"
         "usage:\n```python\nprint(add(1, 2))\n```")
    assert extract_program(c, TASK) == "def add(a, b):\n    return a + b\n"


def test_non_python_blocks_ignored_when_python_exists():
    c = "```bash\nrm -rf /\n```\n```\ndef add(a, b):\n    return a + b\n```"
    assert extract_program(c, TASK) == "def add(a, b):\n    return a + b\n"
    assert code_blocks(c)[0] == ("bash", "rm -rf /\n")


def test_unterminated_fence_runs_to_the_end():
    assert extract_program("```python\nx = 1\nprint(x)", None) == "x = 1\nprint(x)"


def test_bare_code_is_the_program():
    assert extract_program("import sys\nprint(sum(map(int, sys.stdin.read().split())))\n", None).startswith(
        "import sys")


def test_humaneval_body_continuation_gets_the_prompt():
    body = "    return a + b\n\nprint(add(1, 2))\nassert add(1, 1) == 2\n"
    assert extract_program(body, TASK) == TASK.prompt + "    return a + b\n\n"


def test_fenced_body_without_def_also_gets_the_prompt():
    assert extract_program("```python\n    return a + b\n```", TASK) == TASK.prompt + "    return a + b\n"


def test_full_function_is_not_prefixed():
    c = "def add(a, b):\n    return a + b\n"
    assert extract_program(c, TASK) == c
