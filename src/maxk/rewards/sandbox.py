"""Process sandbox: runs a Python script in a fresh, limited, killable child process.

What it does, for every run:
- a fresh temporary directory (removed afterwards); the script's working directory is `<root>/work`;
- `python -I` (isolated mode: no user site, no PYTHON* variables, no script dir on sys.path), an empty
  environment, stdin fed from a pipe then closed;
- resource limits set before any untrusted code runs: address space, CPU seconds, processes, file size,
  open files, no core dumps;
- its own session (process group); on the wall-clock timeout, and always at the end, the whole group is
  killed with SIGKILL;
- stdout read with a cap, stderr kept as a short tail (anything beyond the file-size limit kills the
  writer).
With bubblewrap (`bwrap`) present and `bwrap != "off"`, the child also runs inside it: new user, PID, IPC,
UTS, cgroup and network namespaces (no network at all), an unprivileged uid/gid (65534), only read-only
system paths and the interpreter visible, a private /tmp and /dev, no /proc, dies with its parent.
`bwrap="require"` refuses to run without it. `isolation_level()` says which level is in force.

What is NOT protected: without bubblewrap the program runs as the calling user and sees the host file
system and network; only the harness's audit-hook guard (maxk.rewards.harness; Python-level, bypassable
by native code, which it also tries to block) stands between it and them, and a process that escapes its
session (setsid) could outlive the run. Even with bubblewrap: CPU and memory are limited per process, not
per sandbox (no cgroups), so many processes can use up to max_processes x memory; kernel exploits and
side channels are out of scope. RLIMIT_NPROC is a loose backstop (see SandboxConfig.max_processes).
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Literal

SANDBOX_ROOT = "/sandbox"  # where the run directory appears inside bubblewrap


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation for one sandboxed run (all sizes per process)."""

    timeout_s: float = 20.0
    """Wall-clock limit for the whole run; the process group is killed after it."""
    cpu_s: int = 10
    """RLIMIT_CPU: CPU seconds per process (SIGXCPU, then SIGKILL)."""
    memory_mb: int = 1024
    """RLIMIT_AS: address space per process, in MiB."""
    max_processes: int = 1024
    """RLIMIT_NPROC: a backstop only. Linux counts it over all processes and threads of the real user
    (so a small value breaks runs for a busy non-root user) and does not enforce it for root, even
    inside bubblewrap. The harness's guard, which refuses fork/exec, is the fork-bomb defence."""
    max_file_mb: int = 16
    """RLIMIT_FSIZE: largest file the program may write (also caps stderr)."""
    max_open_files: int = 64
    """RLIMIT_NOFILE."""
    max_stdout_bytes: int = 4 << 20
    """Stdout beyond this is dropped and the run is marked truncated."""
    bwrap: Literal["auto", "require", "off"] = "auto"
    """auto: use bubblewrap when installed; require: refuse to run without it; off: never."""
    python: str = sys.executable
    """Interpreter to run (its prefix is mounted read-only inside bubblewrap)."""

    def __post_init__(self):
        if self.bwrap not in ("auto", "require", "off"):
            raise ValueError(f"bwrap must be 'auto', 'require' or 'off', got {self.bwrap!r}")
        if self.timeout_s <= 0 or self.cpu_s <= 0 or self.memory_mb <= 0:
            raise ValueError("timeout_s, cpu_s and memory_mb must be positive")


@dataclass(frozen=True)
class ProcessResult:
    """What one sandboxed run produced. `returncode` < 0 means killed by that signal."""

    returncode: int | None
    stdout: bytes
    stderr_tail: str
    timed_out: bool
    stdout_truncated: bool
    duration_s: float
    isolation: str


@functools.cache
def _bwrap_path() -> str | None:
    path = shutil.which("bwrap")
    if path is None:
        return None
    try:  # installed is not enough: user namespaces may be disabled
        ok = subprocess.run([path, "--ro-bind", "/", "/", "--unshare-all", "--", "/bin/true"],
                            capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return path if ok else None


def isolation_level(config: SandboxConfig) -> Literal["bwrap", "process"]:
    """'bwrap' when runs are inside bubblewrap, 'process' when only process limits apply.

    Raises RuntimeError when `config.bwrap == "require"` and bubblewrap is missing or unusable.
    """
    if config.bwrap == "off":
        return "process"
    if _bwrap_path() is not None:
        return "bwrap"
    if config.bwrap == "require":
        raise RuntimeError("bwrap='require' but bubblewrap is not usable here; install it "
                           "(apt-get install bubblewrap) and allow unprivileged user namespaces")
    return "process"


# Runs first inside the child (python -I -S -c: argv[0] is '-c'): limits, the interpreter's
# site-packages on sys.path (site is skipped: .pth processing costs ~10 ms a run), then the script.
_BOOT = """\
import resource as R, sys
a = [int(x) for x in sys.argv[1:6]]
sys.path.extend(p for p in sys.argv[7].split(":") if p)
for lim, v in ((R.RLIMIT_AS, a[0]), (R.RLIMIT_CPU, a[1]), (R.RLIMIT_NPROC, a[2]),
               (R.RLIMIT_FSIZE, a[3]), (R.RLIMIT_NOFILE, a[4]), (R.RLIMIT_CORE, 0)):
    R.setrlimit(lim, (v, v))
p = sys.argv[6]; sys.argv = sys.argv[6:7]; del R, a, lim, v
exec(compile(open(p, "rb").read(), p, "exec"), {"__name__": "__main__", "__file__": p})
"""


@functools.cache
def _site_packages(python: str) -> tuple[str, ...]:
    """The interpreter's site-packages directories (asked once from the interpreter itself)."""
    out = subprocess.run([python, "-I", "-c", "import site; print(':'.join(site.getsitepackages()))"],
                         capture_output=True, text=True, timeout=60)
    return tuple(p for p in out.stdout.strip().split(":") if p and os.path.isdir(p))


def _python_mounts(python: str) -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(python))), os.path.dirname(python)}
    paths = sorted(p for p in paths if p and os.path.exists(p) and not p.startswith("/usr"))
    return [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]


def _bwrap_argv(root: str, python: str) -> list[str]:
    argv = [_bwrap_path(), "--unshare-all", "--die-with-parent", "--new-session",
            "--uid", "65534", "--gid", "65534", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "lib32", "sbin"):
        host = "/" + name
        if os.path.islink(host):
            argv += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            argv += ["--ro-bind", host, host]
    # The private /tmp comes before the interpreter's mounts: an environment that lives under /tmp
    # (a CI clone's .venv, say) must stay visible, mounted read-only on top of the empty tmpfs.
    argv += ["--dev", "/dev", "--tmpfs", "/tmp"]
    for p in _python_mounts(python):
        argv += ["--ro-bind", p, p]
    argv += ["--bind", root, SANDBOX_ROOT, "--chdir", SANDBOX_ROOT + "/work", "--clearenv", "--"]
    return argv


def run_sandboxed(script: str, *, stdin: bytes = b"", config: SandboxConfig = SandboxConfig(),
                  files: dict[str, str] | None = None) -> ProcessResult:
    """Run the Python source `script` in the sandbox, feeding `stdin`; never raises for what it does.

    `files` are written next to the script (outside the work dir; read-only for the program inside
    bubblewrap). The script runs with cwd `<root>/work`, a fresh empty directory.
    """
    level = isolation_level(config)
    root = tempfile.mkdtemp(prefix="maxk-sbx-")
    try:
        os.mkdir(os.path.join(root, "work"))
        for name, text in {"main.py": script, **(files or {})}.items():
            with open(os.path.join(root, name), "w", encoding="utf-8") as f:
                f.write(text)
        if level == "bwrap":
            os.chmod(root, 0o755)
            os.chmod(os.path.join(root, "work"), 0o777)
            inner_root, prefix = SANDBOX_ROOT, _bwrap_argv(root, config.python)
        else:
            inner_root, prefix = root, []
        limits = [config.memory_mb << 20, config.cpu_s, config.max_processes, config.max_file_mb << 20,
                  config.max_open_files]
        argv = prefix + [config.python, "-I", "-S", "-c", _BOOT, *map(str, limits), inner_root + "/main.py",
                         ":".join(_site_packages(config.python))]
        with open(os.path.join(root, "stderr"), "w+b") as err:
            return _communicate(argv, os.path.join(root, "work"), stdin, err, config, level)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _communicate(argv, cwd, stdin, err, config, level) -> ProcessResult:
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env={}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=err, start_new_session=True, close_fds=True)
    out, truncated, timed_out = bytearray(), False, False
    deadline = start + config.timeout_s
    try:
        _feed(proc, stdin, deadline)
        fd = proc.stdout.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                break
            if len(out) < config.max_stdout_bytes:
                out += data[: config.max_stdout_bytes - len(out)]
            else:
                truncated = True
        if not timed_out:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        _kill_group(proc)
        proc.stdout.close()
    err.seek(0, os.SEEK_END)
    err.seek(max(0, err.tell() - 2000))
    tail = err.read().decode("utf-8", "replace")
    return ProcessResult(returncode=proc.returncode, stdout=bytes(out), stderr_tail=tail,
                         timed_out=timed_out, stdout_truncated=truncated,
                         duration_s=time.monotonic() - start, isolation=level)


def _feed(proc: subprocess.Popen, data: bytes, deadline: float) -> None:
    """Write stdin and close it; a child that dies or stops reading must not block us past `deadline`."""
    try:
        if len(data) <= 60000:  # fits the pipe buffer: never blocks
            proc.stdin.write(data)
        else:
            os.set_blocking(proc.stdin.fileno(), False)
            view = memoryview(data)
            while view and time.monotonic() < deadline:
                _, ready, _ = select.select([], [proc.stdin], [], 0.1)
                if ready:
                    view = view[os.write(proc.stdin.fileno(), view[:65536]):]
        proc.stdin.close()
    except (BrokenPipeError, BlockingIOError, OSError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
