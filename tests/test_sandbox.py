"""The process sandbox itself: limits in force, environment, working directory, isolation level."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from maxk.rewards import SandboxConfig, isolation_level, run_sandboxed
from maxk.rewards import sandbox as sandbox_mod


@pytest.fixture(params=["bwrap", "process"])
def config(request):
    if request.param == "bwrap" and isolation_level(SandboxConfig(bwrap="auto")) != "bwrap":
        pytest.skip("bubblewrap not usable here")
    return SandboxConfig(bwrap="require" if request.param == "bwrap" else "off", timeout_s=10.0,
                         memory_mb=300, cpu_s=3, max_open_files=32, max_file_mb=2)


PROBE = """
import json, os, resource, sys
lim = {name: resource.getrlimit(getattr(resource, name))[0]
       for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE")}
print(json.dumps({"limits": lim, "env": dict(os.environ), "cwd": os.getcwd(), "files": os.listdir("."),
                  "stdin": sys.stdin.read(), "flags_isolated": sys.flags.isolated,
                  "uid": os.getuid(), "root": sorted(os.listdir("/")),
                  "repo_visible": os.path.exists(REPO + "/pyproject.toml")}))
"""
REPO = str(Path(__file__).resolve().parents[1])


def test_limits_environment_and_workdir(config):
    r = run_sandboxed(f"REPO = {REPO!r}\n" + PROBE, stdin=b"hello", config=config)
    assert r.returncode == 0, r.stderr_tail
    got = json.loads(r.stdout)
    assert got["limits"] == {"RLIMIT_AS": 300 << 20, "RLIMIT_CPU": 3, "RLIMIT_FSIZE": 2 << 20,
                             "RLIMIT_NOFILE": 32, "RLIMIT_CORE": 0}
    assert set(got["env"]) <= {"PWD", "LC_CTYPE"}  # set by bwrap --chdir / the interpreter itself
    assert got["files"] == [] and got["cwd"].endswith("/work")
    assert got["stdin"] == "hello" and got["flags_isolated"] == 1
    assert r.isolation == ("bwrap" if config.bwrap == "require" else "process")
    if r.isolation == "bwrap":
        assert got["uid"] == 65534
        assert "home" not in got["root"] and "proc" not in got["root"] and not got["repo_visible"]
    else:
        assert got["repo_visible"]  # without bubblewrap the host file system is visible (documented)


def test_workdir_removed_and_timeout_kills(config, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = SandboxConfig(bwrap=config.bwrap, timeout_s=0.5)
    r = run_sandboxed("import time\nprint('started', flush=True)\ntime.sleep(30)\n", config=cfg)
    assert r.timed_out and r.returncode == -9 and r.stdout == b"started\n"
    assert r.duration_s < 5
    assert list(tmp_path.iterdir()) == []


def test_stdout_cap(config):
    cfg = SandboxConfig(bwrap=config.bwrap, max_stdout_bytes=1000)
    r = run_sandboxed("import sys\nsys.stdout.write('x' * 100000)\n", config=cfg)
    assert len(r.stdout) == 1000 and r.stdout_truncated


def test_stderr_tail_and_exit_code(config):
    r = run_sandboxed("import sys\nsys.stderr.write('a' * 5000 + 'END')\nsys.exit(3)\n", config=config)
    assert r.returncode == 3 and r.stderr_tail.endswith("END") and len(r.stderr_tail) <= 2000


def test_large_stdin_is_delivered(config):
    data = os.urandom(300_000).hex().encode()
    r = run_sandboxed("import sys\nprint(len(sys.stdin.buffer.read()))\n", stdin=data, config=config)
    assert r.stdout.strip() == str(len(data)).encode()


def test_require_bwrap_refuses_without_it(monkeypatch):
    monkeypatch.setattr(sandbox_mod, "_bwrap_path", lambda: None)
    with pytest.raises(RuntimeError, match="bubblewrap"):
        isolation_level(SandboxConfig(bwrap="require"))
    with pytest.raises(RuntimeError, match="bubblewrap"):
        run_sandboxed("print(1)", config=SandboxConfig(bwrap="require"))
    assert isolation_level(SandboxConfig(bwrap="auto")) == "process"
    assert run_sandboxed("print(1)", config=SandboxConfig(bwrap="auto")).stdout == b"1\n"


def test_config_contract():
    with pytest.raises(ValueError, match="bwrap"):
        SandboxConfig(bwrap="yes")
    with pytest.raises(ValueError, match="positive"):
        SandboxConfig(timeout_s=0)


def test_interpreter_under_tmp_stays_visible_in_bubblewrap():
    """bubblewrap gives the program a private /tmp; an interpreter whose environment lives under /tmp (a CI
    clone's .venv) must still be mounted on top of it, or every program 'crashes' with execvp errors."""
    import subprocess
    import sys

    if isolation_level(SandboxConfig(bwrap="auto")) != "bwrap":
        pytest.skip("bubblewrap not usable here")
    with tempfile.TemporaryDirectory(dir="/tmp") as env_dir:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", env_dir], check=True)
        python = os.path.join(env_dir, "bin", "python")
        r = run_sandboxed("print(6 * 7)", config=SandboxConfig(bwrap="require", python=python))
    assert (r.returncode, r.stdout, r.isolation) == (0, b"42\n", "bwrap"), r.stderr_tail
