"""In-sandbox test harness: runs one program against its tests, one forked child per test.

This file is a stand-alone script (standard library only, and few of it: start-up time is per program).
`maxk.rewards.execution` copies it into the sandbox and runs it with `python -I -S`; it reads a marshal'd
spec dict on stdin (the tests never touch the disk the program can see: {"programs": [{"program",
"items", "entry_point"}, ...], "test_timeout_s", "total_timeout_s", "guard", "max_output_bytes"}) and
writes tab-separated lines on its stdout, the *report channel*, for each program j in turn:

    program <j> <n tests>
    test <j> <i> <outcome> <detail>  one per test, in order
    syntax_error <j> <message>       instead of tests, when the program does not compile
    done <j>
and `end` after the last program. Several programs share one sandbox start-up (interpreter, bubblewrap,
`typing`), each in its own fresh work directory (random name, removed afterwards); the harness process
never runs program code, so one program cannot change another's tests or results through it.

Outcomes: pass, fail (assertion false / wrong output), error (any other exception), timeout (per-test
wall clock or CPU limit), memory (MemoryError or killed at the address-space limit), crashed (killed by a
signal), output_limit (an io case printed more than the cap).

Why forging does not pay. The harness process itself never runs untrusted code: for each test it forks a
child which first points fd 0/1 away from the report channel (stdin: /dev/null or the case's input; stdout:
/dev/null or a pipe the harness reads), closes every other descriptor except a fresh per-test result pipe,
installs the audit-hook guard, and only then executes the program and the test. The child credits the
test by writing "P" plus a random per-test token to the result pipe *after* the test statement returned.
So exiting with status 0 early, printing "passed", raising SystemExit inside a test, replacing builtins or
AssertionError (the `assert` statement raises the real class; every exception is a failure), patching the
harness's functions (they are patched in the child, which is thrown away) earn nothing. IO cases are
compared here, in the harness, not in the child.

Residual risk (documented, not defended): code that deliberately introspects its own interpreter can
find the token and the result descriptor (e.g. through a generator's `gi_frame.f_back`, or by probing
descriptors with `os.read`) and forge a pass for that test. The guard blocks the easy doors
(`sys._getframe`, `gc` object walks, `tb_frame`, tracing hooks, `ctypes`), not all of them.
"""

import builtins
import marshal
import os
import select
import sys
import time

# Captured before any program runs: a program may replace `builtins.exec` and friends in its process.
_exec = exec
_AssertionError = AssertionError
_MemoryError = MemoryError
_SystemExit = SystemExit
_write = os.write
_exit = os._exit
_resource = sys.modules.get("resource")  # imported by the sandbox's boot code; None when run bare
# Linux signal numbers (the `signal` module pulls in `enum`, ~10 ms of start-up per program).
SIGKILL, SIGXCPU, SIGSEGV, SIGABRT, SIGBUS = 9, 24, 11, 6, 7

# Audit events the guard refuses outright: processes, signals, native code, frame and object walks,
# tracing, raising resource limits, the network, links (which would let writes escape the work dir).
_BLOCKED_EVENTS = frozenset({
    "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "subprocess.Popen",
    "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames", "sys.settrace",
    "sys.setprofile", "resource.setrlimit", "resource.prlimit", "socket.connect", "socket.bind",
    "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "os.symlink", "os.link", "os.chdir",
    "os.chroot", "os.chown", "os.mknod", "os.mkfifo",
})
_BLOCKED_IMPORTS = frozenset({"ctypes", "_ctypes", "cffi", "_posixsubprocess", "_xxsubinterpreters"})
# Events that change paths: (number of leading path arguments, positions of dir_fd arguments). The paths
# must lie in the work dir; a dir_fd (relative to an arbitrary directory descriptor) is refused.
_WRITE_PATH_EVENTS = {"os.remove": (1, (1,)), "os.rmdir": (1, (1,)), "os.rename": (2, (2, 3)),
                      "os.mkdir": (1, (2,)), "os.chmod": (1, (2,)), "os.truncate": (1, ()),
                      "os.utime": (1, (3,)), "shutil.rmtree": (1, (1,)), "os.chflags": (1, ())}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
# Standard-library modules the harness imports once, before forking, when the program or its tests
# name them, so that each test process finds them loaded (importing `typing` costs ~25 ms per process).
_PRELOAD = frozenset({
    "typing", "re", "math", "collections", "itertools", "functools", "heapq", "string", "random",
    "bisect", "copy", "fractions", "decimal", "statistics", "operator", "hashlib", "datetime", "json",
    "dataclasses", "enum", "abc", "array", "cmath", "numbers", "textwrap", "unicodedata",
})


def install_guard(workdir, read_roots):
    """Add an audit hook (PEP 578; it cannot be removed) that confines this process.

    Writes, deletes and renames only inside `workdir`; reads only inside `workdir`, `read_roots` (the
    interpreter's import path) and a few devices; no fork/exec, signals, sockets, ctypes, frame walks.
    Uses only values captured here, so monkeypatching `os.path` and friends does not weaken it.
    """
    workdir = workdir.rstrip("/") + "/"
    roots = tuple(r.rstrip("/") + "/" for r in read_roots if r)
    blocked, blocked_imports, write_events = _BLOCKED_EVENTS, _BLOCKED_IMPORTS, _WRITE_PATH_EVENTS
    write_flags, devices, deny = _WRITE_FLAGS, _DEVICES, PermissionError
    _str, _bytes, _int, _isinstance = str, bytes, int, isinstance

    def inside(path, allowed):
        if _isinstance(path, _bytes):
            path = path.decode("utf-8", "surrogateescape")
        if not _isinstance(path, _str):
            return False
        if "\x00" in path or ".." in path.split("/"):
            return False
        if not path.startswith("/"):
            path = workdir + path
        return (path + "/").startswith(allowed) or path.startswith(allowed)

    def hook(event, args):
        if event in blocked:
            raise deny(f"sandbox: {event} is not allowed")
        if event == "sys._getframe":
            raise ValueError("sandbox: frame access is not allowed")
        if event == "object.__getattr__" and len(args) > 1 and args[1] == "tb_frame":
            raise deny("sandbox: frame access is not allowed")
        if event == "import":
            if args[0] in blocked_imports or args[0].split(".")[0] in blocked_imports:
                raise ImportError(f"sandbox: import of {args[0]} is not allowed")
        elif event == "open":
            path, flags = args[0], args[2]
            if _isinstance(path, _int):
                return
            writing = _isinstance(flags, _int) and flags & write_flags
            if writing and not inside(path, (workdir,)):
                raise deny(f"sandbox: writing {path!r} outside the work dir is not allowed")
            if not writing and not (inside(path, (workdir,) + roots) or path in devices):
                raise deny(f"sandbox: reading {path!r} is not allowed")
        elif event in ("os.listdir", "os.scandir"):
            path = args[0] if args and args[0] is not None else "."
            if not _isinstance(path, _int) and not inside(path, (workdir,) + roots):
                raise deny(f"sandbox: listing {path!r} is not allowed")
        elif event in write_events:
            n_paths, dir_fds = write_events[event]
            for path in args[:n_paths]:
                if not inside(path, (workdir,)):
                    raise deny(f"sandbox: {event} on {path!r} outside the work dir is not allowed")
            for k in dir_fds:
                if k < len(args) and _isinstance(args[k], _int) and args[k] >= 0:
                    raise deny(f"sandbox: {event} relative to a directory descriptor is not allowed")

    sys.addaudithook(hook)


def _child(code, test_code, item, spec, result_w, token, in_fd, out_fd, workdir):
    """Runs in the forked child: the program, then one test; reports on `result_w`. Never returns."""
    try:
        os.chdir(workdir)
        if _resource is not None:
            cpu = int(spec.get("test_timeout_s", 5.0)) + 1
            _resource.setrlimit(_resource.RLIMIT_CPU, (cpu, cpu))
        os.dup2(in_fd, 0)
        os.dup2(out_fd, 1)
        os.closerange(3, result_w)
        os.closerange(result_w + 1, 1 << 16)
        if spec.get("guard", True):
            install_guard(workdir, spec.get("read_roots", sys.path))
        is_io = item["kind"] == "io"
        ns = {"__name__": "__main__" if is_io else "__program__", "__builtins__": builtins}
        stdout = sys.stdout
        try:
            _exec(code, ns)
        except _SystemExit as e:
            if not (is_io and e.code in (None, 0)):
                raise
        if not is_io:
            entry = spec.get("entry_point")
            if entry:
                if entry not in ns:
                    raise NameError(entry)
                ns["candidate"] = ns[entry]
            _exec(test_code, ns)
        try:  # noqa: SIM105 (no contextlib: the program may have patched it in this process)
            stdout.flush()
        except BaseException:
            pass
        message = b"P" + token
    except _AssertionError:
        message = b"F"
    except _MemoryError:
        message = b"M"
    except BaseException as e:
        try:
            message = b"E" + type(e).__name__.encode()[:64]
        except BaseException:
            message = b"E"
    try:
        _write(result_w, message)
    finally:
        _exit(0)


def _collect(pid, fds, deadline, out_cap):
    """Read the child's result pipe (and stdout pipe) until EOF, the deadline or the child's exit."""
    bufs = {fd: bytearray() for fd in fds}
    open_fds = list(fds)
    timed_out = over = False
    status = None
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(open_fds, [], [], min(remaining, 0.1))
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                open_fds.remove(fd)
                continue
            bufs[fd] += data
            if len(bufs[fd]) > out_cap:
                over = True
        if over:
            break
        if not ready and status is None:  # a grandchild may hold the pipes open after the child exits
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            status = None
    if status is None:
        try:  # noqa: SIM105
            os.kill(pid, SIGKILL)
        except ProcessLookupError:
            pass
        status = os.waitpid(pid, 0)[1]
    for fd in fds:
        os.close(fd)
    return bufs, timed_out, over, status


def normalized_output(text):
    """Stdout compared for io cases: trailing whitespace per line and trailing blank lines ignored."""
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).rstrip("\n")


def _imported_names(source):
    """Top-level module names in `import x` / `from x import y` lines (plain string scan, no parsing)."""
    names = set()
    for line in source.splitlines():
        words = line.replace(",", " ").split()
        if len(words) >= 2 and words[0] == "import":
            names.update(w.split(".")[0] for w in words[1:] if w != "as")
        elif len(words) >= 2 and words[0] == "from":
            names.add(words[1].split(".")[0])
    return names


def _preload(sources):
    """Import the _PRELOAD modules that `sources` name (found by scanning text, never by running it)."""
    names = set()
    for src in sources:
        names |= _imported_names(src)
    for name in sorted(names & _PRELOAD):
        __import__(name)


def _run_test(code, i, item, spec, devnull, workdir, deadline):
    test_code = None
    if item["kind"] == "assert":
        try:
            test_code = compile(item["src"], f"<test {i}>", "exec")
        except (SyntaxError, ValueError) as e:
            return "error", f"test does not compile: {e}"
    token = os.urandom(16).hex().encode()
    result_r, result_w = os.pipe()
    in_fd, out_r, out_w = devnull, None, devnull
    if item["kind"] == "io":
        in_fd = os.memfd_create("stdin")
        os.write(in_fd, item["input"].encode())
        os.lseek(in_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(code, test_code, item, spec, result_w, token, in_fd, out_w, workdir)
    os.close(result_w)
    if out_r is not None:
        os.close(out_w)
        os.close(in_fd)
    fds = [result_r] + ([out_r] if out_r is not None else [])
    deadline = min(deadline, time.monotonic() + float(spec.get("test_timeout_s", 5.0)))
    bufs, timed_out, over, status = _collect(pid, fds, deadline, int(spec.get("max_output_bytes", 1 << 20)))
    message = bytes(bufs[result_r])
    if over:
        return "output_limit", "printed more than the output cap"
    if timed_out:
        return "timeout", "per-test time limit"
    if message == b"P" + token:
        if out_r is None:
            return "pass", ""
        got = bytes(bufs[out_r]).decode("utf-8", "replace")
        if normalized_output(got) == normalized_output(item["output"]):
            return "pass", ""
        return "fail", "wrong output"
    if message == b"M":
        return "memory", "MemoryError"
    if message == b"F":
        return "fail", "assertion failed"
    if message.startswith(b"E") and len(message) < 80:
        return "error", message[1:].decode("ascii", "replace")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == SIGXCPU:
            return "timeout", "CPU time limit"
        if sig in (SIGSEGV, SIGKILL, SIGABRT, SIGBUS):
            return "memory" if sig != SIGABRT else "crashed", f"killed by signal {sig}"
        return "crashed", f"killed by signal {sig}"
    return "fail", "exited before finishing the test"


def _report(*fields):
    """One report line: tab-separated fields, no tabs or newlines inside a field."""
    line = "\t".join(str(f).replace("\t", " ").replace("\n", " ")[:300] for f in fields)
    data = (line + "\n").encode("utf-8", "replace")
    while data:
        data = data[os.write(1, data):]


def _remove_tree(path):
    """Delete a directory tree without following symbolic links; errors are ignored."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
    try:  # noqa: SIM105 (contextlib would cost start-up time)
        os.rmdir(path)
    except OSError:
        pass


def _run_program(j, prog, spec, devnull):
    """All tests of program j, each in a fresh child, in a fresh work dir removed afterwards."""
    items = prog["items"]
    _report("program", j, len(items))
    try:
        code = compile(prog["program"], "<program>", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        _report("syntax_error", j, f"{type(e).__name__}: {e}")
        _report("done", j)
        return
    _preload([prog["program"]] + [it["src"] for it in items if it["kind"] == "assert"])
    workdir = os.path.join(os.getcwd(), f"p{j}-{os.urandom(8).hex()}")
    os.mkdir(workdir, 0o700)
    deadline = time.monotonic() + float(spec.get("total_timeout_s", 30.0))
    test_spec = dict(spec, entry_point=prog.get("entry_point"))
    try:
        for i, item in enumerate(items):
            if time.monotonic() >= deadline:
                outcome, detail = "timeout", "program time limit reached before this test"
            else:
                outcome, detail = _run_test(code, i, item, test_spec, devnull, workdir, deadline)
            _report("test", j, i, outcome, detail)
    finally:
        _remove_tree(workdir)
    _report("done", j)


def main():
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    spec = marshal.loads(b"".join(chunks))
    devnull = os.open(os.devnull, os.O_RDWR)
    for j, prog in enumerate(spec["programs"]):
        _run_program(j, prog, spec, devnull)
    _report("end")


if __name__ == "__main__":
    main()
