"""Hostile battery: one adversarial behaviour per test, run with bubblewrap and without it.

Each test asserts the status and reward of the hostile program, that the batch survives (an honest
program scored in the same sandbox run after it still gets 1.0) and that the host is unchanged (a watched
directory, the sandbox temp dir, no leftover processes carrying the test's marker).
"""

from __future__ import annotations

import os
import socket
import tempfile
import textwrap
import uuid

import pytest

from maxk.rewards import ExecConfig, SandboxConfig, Task, isolation_level, run_tests_batch

HONEST = "def f(*args):\n    return 1\n"
TASK = Task(id="hostile", prompt="", tests=["assert candidate() == 1", "assert candidate(2) == 1"],
            entry_point="f")


@pytest.fixture(params=["bwrap", "process"])
def mode(request):
    if request.param == "bwrap" and isolation_level(SandboxConfig(bwrap="auto")) != "bwrap":
        pytest.skip("bubblewrap not usable here (the Makefile installs it for `make test`)")
    return request.param


class Host:
    """Snapshot of what a hostile program must not change."""

    def __init__(self, root, monkeypatch):
        self.watched = root / "host"
        self.watched.mkdir()
        (self.watched / "keep.txt").write_text("original")
        (self.watched / "secret.txt").write_text("s3cr3t-on-disk")
        self.sbx_tmp = root / "sbx"
        self.sbx_tmp.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(self.sbx_tmp))
        self.marker = "m" + uuid.uuid4().hex[:12]

    def snapshot(self):
        return sorted((p.name, p.read_bytes()) for p in self.watched.iterdir())

    def marked_processes(self) -> list[int]:
        pids = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if self.marker.encode() in f.read():
                            pids.append(int(pid))
                except OSError:
                    pass
        return pids


@pytest.fixture
def host(tmp_path, monkeypatch):
    h = Host(tmp_path, monkeypatch)
    before = h.snapshot()
    yield h
    assert h.snapshot() == before, "the host directory changed"
    assert list(h.sbx_tmp.iterdir()) == [], "a sandbox directory was left behind"
    assert h.marked_processes() == [], "a process of the hostile program outlived its run"


def config(mode, memory_mb: int = 512, **kw) -> ExecConfig:
    opts = dict(test_timeout_s=2.0, total_timeout_s=6.0, chunk=2)
    opts.update(kw)
    sandbox = SandboxConfig(bwrap="require" if mode == "bwrap" else "off", memory_mb=memory_mb)
    return ExecConfig(sandbox=sandbox, **opts)


def run_with_honest(program: str, mode: str, task: Task = TASK, **kw):
    """Score the hostile program, then an honest one in the same sandbox run (chunk=2)."""
    hostile, honest = run_tests_batch([(textwrap.dedent(program), task), (HONEST, task)], config(mode, **kw))
    assert honest.reward == 1.0 and honest.status == "ok", f"the batch did not survive: {honest}"
    assert hostile.isolation == ("bwrap" if mode == "bwrap" else "process")
    return hostile


def test_infinite_loop(mode, host):
    r = run_with_honest("def f(*a):\n    while True:\n        pass\n", mode, test_timeout_s=0.3)
    assert (r.status, r.reward) == ("timeout", 0.0)
    assert r.outcomes == ("timeout", "timeout")


def test_infinite_loop_at_import(mode, host):
    r = run_with_honest("while True:\n    pass\n", mode, test_timeout_s=0.3)
    assert (r.status, r.reward) == ("timeout", 0.0)


def test_program_time_limit_cuts_remaining_tests(mode, host):
    task = Task(id="many", prompt="", tests=["assert candidate() == 1"] * 6, entry_point="f")
    prog = "import time\ndef f(*a):\n    time.sleep(10)\n"
    r = run_tests_batch([(prog, task)], config(mode, test_timeout_s=0.5, total_timeout_s=1.2))[0]
    assert (r.status, r.reward, r.total) == ("timeout", 0.0, 6)
    assert set(r.outcomes) == {"timeout"}


def test_deep_recursion(mode, host):
    r = run_with_honest("def f(*a, n=0):\n    return f(n=n + 1)\n", mode)
    assert (r.status, r.reward) == ("ok", 0.0)
    assert r.outcomes == ("error", "error") and "RecursionError" in r.detail


def test_fork_bomb(mode, host):
    prog = f"""
    import os, time
    def f(*a):
        tag = "{host.marker}"
        while True:
            os.fork()
    """
    r = run_with_honest(prog, mode)
    assert (r.status, r.reward) == ("ok", 0.0)
    assert "PermissionError" in r.detail


def test_memory_bomb_one_allocation(mode, host):
    r = run_with_honest("def f(*a):\n    return len(bytearray(8 * 1024 ** 3))\n", mode)
    assert (r.status, r.reward) == ("memory", 0.0)


def test_memory_bomb_gradual(mode, host):
    prog = "def f(*a):\n    x = []\n    while True:\n        x.append(bytearray(10 ** 7))\n"
    r = run_with_honest(prog, mode, memory_mb=256, test_timeout_s=4.0, total_timeout_s=10.0)
    assert (r.status, r.reward) == ("memory", 0.0)


def test_huge_stdout(mode, host):
    prog = "import sys\ndef f(*a):\n    while True:\n        sys.stdout.write('x' * 65536)\n"
    r = run_with_honest(prog, mode, test_timeout_s=0.3)
    assert (r.status, r.reward) == ("timeout", 0.0)
    assert len(r.detail) < 2000


def test_huge_stdout_io_case(mode, host):
    task = Task(id="io", prompt="", io_cases=[{"input": "", "output": "1\n"}])
    prog = "while True:\n    print('1' * 65536)\n"
    r = run_tests_batch([(prog, task), ("print(1)", task)], config(mode))
    assert (r[0].status, r[0].reward) == ("output_limit", 0.0)
    assert r[1].reward == 1.0


def test_huge_stderr(mode, host):
    """Stderr is a file capped by RLIMIT_FSIZE (16 MiB): writing past it fails (Python ignores SIGXFSZ)."""
    prog = "import sys\ndef f(*a):\n    while True:\n        sys.stderr.write('e' * 65536)\n"
    r = run_with_honest(prog, mode, test_timeout_s=2.0)
    assert r.reward == 0.0
    assert r.status == "timeout" or "OSError" in r.detail
    assert len(r.detail) < 2000


def test_write_and_delete_outside_workdir(mode, host):
    prog = f"""
    import os
    def f(*a):
        done = 0
        for attempt in (lambda: open("{host.watched}/new.txt", "w").write("x"),
                        lambda: os.remove("{host.watched}/keep.txt"),
                        lambda: open("{host.watched}/keep.txt", "w").write("changed"),
                        lambda: os.rename("{host.watched}/keep.txt", "{host.watched}/moved.txt"),
                        lambda: open("../escape.txt", "w").write("x")):
            try:
                attempt()
                done += 1
            except OSError:
                pass
        return 1 if done == 0 else done + 100
    """
    r = run_with_honest(prog, mode)
    assert r.reward == 1.0, "every attempt must fail (the program returns 1 only then)"


def test_workdir_is_writable_and_private(mode, host):
    prog = """
    import os
    def f(*a):
        with open("scratch.txt", "w") as fh:
            fh.write("ok")
        os.mkdir("d")
        os.remove("scratch.txt")
        os.rmdir("d")
        return 1
    """
    r = run_with_honest(prog, mode)
    assert r.reward == 1.0


def test_secret_from_environment(mode, host, monkeypatch):
    monkeypatch.setenv("MAXK_TEST_SECRET", "s3cr3t-in-env")
    prog = "import os\ndef f(*a):\n    return 1 if os.environ.get('MAXK_TEST_SECRET') else 0\n"
    task = Task(id="env", prompt="", tests=["assert candidate() == 1"], entry_point="f")
    r = run_tests_batch([(prog, task)], config(mode))[0]
    assert (r.status, r.reward) == ("ok", 0.0)


def test_secret_from_file(mode, host):
    prog = f"def f(*a):\n    return 1 if 's3cr3t' in open('{host.watched}/secret.txt').read() else 0\n"
    task = Task(id="file", prompt="", tests=["assert candidate() == 1"], entry_point="f")
    r = run_tests_batch([(prog, task)], config(mode))[0]
    assert r.reward == 0.0
    assert "PermissionError" in r.detail or "FileNotFoundError" in r.detail


def test_network_connection_to_local_port(mode, host):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    prog = f"""
    import socket
    def f(*a):
        s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
        s.sendall(b"stolen")
        return 1
    """
    try:
        r = run_with_honest(prog, mode)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    assert (r.status, r.reward) == ("ok", 0.0)


def test_kill_parent(mode, host):
    r = run_with_honest("import os\nos.kill(os.getppid(), 9)\ndef f(*a):\n    return 1\n", mode)
    assert r.reward == 0.0


@pytest.mark.parametrize("guard", [True, False])
def test_kill_parent_guard_off_batch_survives(mode, host, guard):
    prog = "import os\nos.kill(os.getppid(), 9)\ndef f(*a):\n    return 1\n"
    results = run_tests_batch([(HONEST, TASK), (prog, TASK), (HONEST, TASK), (HONEST, TASK)],
                              config(mode, guard=guard, chunk=4))
    assert [r.reward for r in results] == [1.0, 0.0, 1.0, 1.0]
    assert results[1].status == ("ok" if guard else "crashed")


def test_sleep_past_timeout_holding_children(mode, host):
    """With the guard off (it would refuse the fork), children must still die with the run."""
    prog = f"""
    import os, subprocess, time
    def f(*a):
        subprocess.Popen(["sleep", "1000", "{host.marker}"])
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", "999", "{host.marker}"])
        time.sleep(1000)
    """
    r = run_with_honest(prog, mode, guard=False, test_timeout_s=0.5, total_timeout_s=3.0)
    assert (r.status, r.reward) == ("timeout", 0.0)


def test_non_utf8_output(mode, host):
    task = Task(id="bytes", prompt="", io_cases=[{"input": "", "output": "ok\n"}])
    prog = ("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x00ok\\n')\n"
            "sys.stderr.buffer.write(b'\\xff\\n')\n")
    r = run_tests_batch([(prog, task), ("print('ok')", task)], config(mode))
    assert (r[0].status, r[0].reward) == ("ok", 0.0)
    assert r[1].reward == 1.0


def test_not_valid_python(mode, host):
    r = run_with_honest("def f(:\n    return 1\n", mode)
    assert (r.status, r.reward, r.total) == ("syntax_error", 0.0, 2)


def test_null_bytes_in_source(mode, host):
    r = run_with_honest("def f(*a):\n    return 1\n\x00\n", mode)
    assert (r.status, r.reward) == ("syntax_error", 0.0)
