"""Tests count, not exit codes: per-test reporting, and forging attacks that must not pay.

Every forging program below implements `add` WRONGLY (or not at all) and tries to be credited anyway;
the honest partial solution shows the counting is per assertion (3 of 4).
"""

from __future__ import annotations

import textwrap

import pytest

from maxk.rewards import ExecConfig, SandboxConfig, Task, isolation_level, run_tests, run_tests_batch

TASK = Task(id="add", prompt="", entry_point="add", tests=[
    "assert candidate(1, 2) == 3",
    "assert candidate(2, 2) == 4",
    "assert candidate(0, 0) == 0",
    "assert candidate(-1, 1) == 0",
])
WRONG = "def add(a, b):\n    return 7\n"


@pytest.fixture(params=["bwrap", "process"])
def cfg(request):
    if request.param == "bwrap" and isolation_level(SandboxConfig(bwrap="auto")) != "bwrap":
        pytest.skip("bubblewrap not usable here")
    return ExecConfig(test_timeout_s=2.0, total_timeout_s=10.0,
                      sandbox=SandboxConfig(bwrap="require" if request.param == "bwrap" else "off"))


def score(program: str, cfg: ExecConfig, task: Task = TASK):
    return run_tests(textwrap.dedent(program), task, cfg)


def test_partial_credit_counts_assertions(cfg):
    # a + b except at 0: passes tests 0, 1, 3 and fails test 2 -> 3/4
    r = score("def add(a, b):\n    return a + b if a else 99\n", cfg)
    assert (r.passed, r.total, r.reward, r.status) == (3, 4, 0.75, "ok")
    assert r.outcomes == ("pass", "pass", "fail", "pass")


def test_io_cases_count_individually(cfg):
    task = Task(id="io", prompt="", io_cases=[{"input": "1 2\n", "output": "3\n"},
                                              {"input": "5 5\n", "output": "10"},
                                              {"input": "0 0\n", "output": "1\n"}])
    r = score("a, b = map(int, input().split())\nprint(a + b)   \n", cfg, task)
    assert (r.passed, r.total, r.outcomes) == (2, 3, ("pass", "pass", "fail"))


def test_io_case_sys_exit_zero_is_a_normal_exit(cfg):
    task = Task(id="io", prompt="", io_cases=[{"input": "", "output": "hi\n"}])
    assert score("import sys\nprint('hi')\nsys.exit(0)\n", cfg, task).reward == 1.0
    assert score("import sys\nprint('hi')\nsys.exit(1)\n", cfg, task).reward == 0.0


def test_exit_zero_before_tests_run(cfg):
    assert score("import sys\nsys.exit(0)\n" + WRONG, cfg).reward == 0.0
    assert score("import os\nos._exit(0)\n" + WRONG, cfg).reward == 0.0


def test_exit_zero_inside_the_function(cfg):
    assert score("import os\ndef add(a, b):\n    os._exit(0)\n", cfg).reward == 0.0


def test_fake_passed_lines_on_stdout_and_stderr(cfg):
    prog = """
    import sys
    for j in range(4):
        line = "test\\t0\\t%d\\tpass\\t\\n" % j
        print(line, end=""); sys.stderr.write(line); print("PASSED", j)
    print("done\\t0"); print("program\\t0\\t4")
    def add(a, b):
        print("test\\t0\\t0\\tpass\\t")
        return 7
    """
    r = score(prog, cfg)
    assert (r.reward, r.outcomes) == (0.0, ("fail",) * 4)


def test_system_exit_inside_a_test(cfg):
    assert score("def add(a, b):\n    raise SystemExit(0)\n", cfg).reward == 0.0
    assert score("import sys\ndef add(a, b):\n    sys.exit()\n", cfg).reward == 0.0


def test_override_assertion_error_and_builtins(cfg):
    prog = """
    import builtins
    class Never(Exception):
        pass
    builtins.AssertionError = Never
    builtins.exec = lambda *a, **k: None
    builtins.compile = lambda *a, **k: compile("pass", "x", "exec")
    builtins.isinstance = lambda *a: True
    builtins.type = lambda *a: Never
    def add(a, b):
        return 7
    """
    r = score(prog, cfg)
    assert r.reward == 0.0 and set(r.outcomes) == {"fail"}


def test_patch_harness_functions(cfg):
    prog = """
    import os, sys
    main = sys.modules["__main__"]
    for name in dir(main):
        if callable(getattr(main, name)) and not name.startswith("__"):
            try:
                setattr(main, name, lambda *a, **k: None)
            except Exception:
                pass
    main._write = lambda fd, data: os.write(fd, b"P" + b"0" * 32)
    def add(a, b):
        return 7
    """
    assert score(prog, cfg).reward == 0.0


def test_write_pass_guesses_to_every_descriptor(cfg):
    prog = """
    import os
    def add(a, b):
        for fd in range(3, 256):
            for msg in (b"P", b"P" + b"0" * 32, b"test\\t0\\t0\\tpass\\t\\n"):
                try:
                    os.write(fd, msg)
                except OSError:
                    pass
        return 7
    """
    assert score(prog, cfg).reward == 0.0


def test_forge_through_proc_parent_stdout(cfg):
    prog = """
    import os
    def add(a, b):
        for j in range(4):
            try:
                with open(f"/proc/{os.getppid()}/fd/1", "w") as fh:
                    fh.write(f"test\\t0\\t{j}\\tpass\\t\\n")
            except OSError:
                pass
        return 7
    """
    assert score(prog, cfg).reward == 0.0


def test_frame_and_gc_introspection_is_refused(cfg):
    prog = """
    import gc, sys
    def add(a, b):
        found = 0
        for attempt in (lambda: sys._getframe(1), lambda: gc.get_objects(),
                        lambda: gc.get_referrers(add), lambda: sys.settrace(lambda *x: None)):
            try:
                attempt()
                found += 1
            except (PermissionError, ValueError):
                pass
        try:
            raise KeyError
        except KeyError as e:
            try:
                e.__traceback__.tb_frame
                found += 1
            except PermissionError:
                pass
        return a + b if found == 0 else -1
    """
    assert score(prog, cfg).reward == 1.0


def test_ctypes_and_subprocess_are_refused(cfg):
    prog = """
    def add(a, b):
        for mod in ("ctypes", "_posixsubprocess", "multiprocessing"):
            try:
                __import__(mod)
                if mod == "multiprocessing":
                    import multiprocessing
                    multiprocessing.Process(target=print).start()
                return -1
            except (ImportError, PermissionError):
                pass
        return a + b
    """
    assert score(prog, cfg).reward == 1.0


def test_tests_never_reach_the_program_disk(cfg):
    prog = """
    import os
    def add(a, b):
        seen = []
        for root in (".", ".."):
            try:
                seen += os.listdir(root)
            except OSError:
                pass
        return -1 if any("spec" in s or "main" in s for s in seen) else a + b
    """
    assert score(prog, cfg).reward == 1.0


def test_batch_isolates_programs(cfg):
    """A program in the same sandbox run cannot leave a file for the next one."""
    writer = "def add(a, b):\n    open('answer.txt', 'w').write('7')\n    return 7\n"
    reader = "import os\ndef add(a, b):\n    return -1 if os.path.exists('answer.txt') else a + b\n"
    cfg2 = ExecConfig(test_timeout_s=cfg.test_timeout_s, sandbox=cfg.sandbox, chunk=2)
    results = run_tests_batch([(writer, TASK), (reader, TASK)], cfg2)
    assert [r.reward for r in results] == [0.0, 1.0]
