"""Optional fused CPU kernels for `maxk` and `maxk_offpolicy` at small N (plumbing around _fused.c).

At N = 8 the eager transforms (sort, multiply, cumulative sum, multiply-add, scatter) cost what PyTorch's
per-op dispatch costs, several times the arithmetic. `_fused.c` sorts each group with a sorting network
(`network`) and does the same sums in one pass, vectorised across groups, writing each result to its
sample's position.
It is compiled on first use with the system C compiler (`$CC`, else `cc`; about a second), cached under
`$MAXK_CACHE` (default ~/.cache/maxk) by a hash of source and flags, and loaded with ctypes: no build step at
install time and no new dependency. Without a compiler, or with MAXK_FUSED=0, everything runs the eager
path (same results up to float rounding; tests/test_fused.py checks the two against each other).
Used only for CPU float32/float64 (P, N) input with N <= MAX_N; the eager path stays the
O(N log N) algorithm for every other case.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_fused.c")
# Read once, with this module: the library is compiled from exactly the source this wrapper was written
# for, even if the installed file changes while a long run is going (an upgrade in place).
_SOURCE_BYTES = SOURCE.read_bytes() if SOURCE.exists() else b""
FLAGS = ("-O3", "-ffp-contract=off", "-shared", "-fPIC")
MAX_N = 16  # must match MAXK_FUSED_MAX_N in _fused.c (checked on load)
ABI = 2  # must match maxk_fused_abi() in _fused.c: the argument lists below (checked on load)
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_enabled = True


def _cache_dir() -> Path:
    return Path(os.environ.get("MAXK_CACHE") or Path.home() / ".cache" / "maxk")


def _compile(cc: str, target: Path) -> None:
    """Compile SOURCE into `target` atomically (a temporary file in the same directory, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    src = Path(tmp).with_suffix(".c")
    try:
        src.write_bytes(_SOURCE_BYTES)
        subprocess.run([cc, *FLAGS, str(src), "-o", tmp], check=True, capture_output=True, text=True,
                       timeout=120)
        os.replace(tmp, target)
    finally:
        for path in (tmp, src):
            if os.path.exists(path):
                os.unlink(path)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (disabled, no compiler, or the build failed: logged once)."""
    if os.environ.get("MAXK_FUSED", "1") == "0":
        return None
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        log.info("no C compiler found ($CC or cc): maxk uses the eager path at small N")
        return None
    if not _SOURCE_BYTES:
        return None
    key = hashlib.sha256(_SOURCE_BYTES + " ".join((cc, *FLAGS)).encode()).hexdigest()[:16]
    try:
        target = _cache_dir() / f"fused-{key}.so"  # Path.home() raises RuntimeError without a home
        if not target.exists():
            _compile(cc, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        log.warning("maxk: could not build the fused small-N kernels (%s); using the eager path", detail)
        return None
    if lib.maxk_fused_abi() != ABI or lib.maxk_fused_max_n() != MAX_N:
        log.warning("maxk: the fused kernels do not match this version of maxk; using the eager path")
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        offpolicy_args = [ptr, ptr, ptr, i64, i64, ptr, i64, real, real, *[ptr] * 5]
        for name, args in ((f"maxk_rt_{suffix}", [ptr, ptr, i64, i64, ptr, i64, ptr, ptr]),
                           (f"maxk_offpolicy_rt_{suffix}", offpolicy_args)):
            getattr(lib, name).argtypes = args
            getattr(lib, name).restype = ctypes.c_double
    return lib


@functools.lru_cache(maxsize=MAX_N + 1)
def network(n: int) -> torch.Tensor:
    """Batcher's odd-even merge sorting network for n inputs: (C, 2) int32 comparator pairs (a < b).

    Applied in order, each pair moves the larger value to a, so the whole sorts in descending order. For
    n not a power of two it is the power-of-two network without the comparators that touch positions
    >= n (those would hold the smallest values and never move). tests/test_fused.py proves that it sorts
    every 0/1 input for every n <= MAX_N, which by the 0-1 principle means every input.
    """
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return torch.tensor(pairs, dtype=torch.int32).reshape(-1, 2)


def applies(rewards: torch.Tensor) -> bool:
    """True when the fused kernels take this input: (P, N) on CPU, float32/64, N <= MAX_N, no autograd."""
    return (_enabled and rewards.device.type == "cpu" and rewards.dtype in _SUFFIX and rewards.dim() == 2
            and 0 < rewards.shape[-1] <= MAX_N and not rewards.requires_grad and library() is not None)


@contextlib.contextmanager
def disabled():
    """Within the block every transform takes the eager path (tests and benchmarks compare the two)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def maxk_rt(rewards: torch.Tensor, own: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The eager `maxk_reward_transform` sums in input order, and their total (for the finiteness check);
    own, b: (N,) weights per descending position."""
    r = rewards.contiguous()
    out = torch.empty_like(r)
    net = network(r.shape[1])
    fn = getattr(library(), f"maxk_rt_{_SUFFIX[r.dtype]}")
    total = fn(r.data_ptr(), out.data_ptr(), r.shape[0], r.shape[1], net.data_ptr(), net.shape[0],
               own.data_ptr(), b.data_ptr())
    return out, total


def offpolicy_rt(rewards: torch.Tensor, delta: torch.Tensor, clip: float | None,
                 weights: tuple) -> tuple[torch.Tensor, float]:
    """The eager `offpolicy_reward_transform` sums, and their total; delta (P, N) is clamped to
    [-clip, clip] (None: not clamped) inside the kernel; weights = (wb, we, wf, wab, wab_f), each (N,)."""
    r = rewards.contiguous()
    d = delta.to(dtype=r.dtype).contiguous()
    out = torch.empty_like(r)
    lo, hi = (-math.inf, math.inf) if clip is None else (-clip, clip)
    net = network(r.shape[1])
    fn = getattr(library(), f"maxk_offpolicy_rt_{_SUFFIX[r.dtype]}")
    total = fn(r.data_ptr(), d.data_ptr(), out.data_ptr(), r.shape[0], r.shape[1], net.data_ptr(),
               net.shape[0], lo, hi, *(w.data_ptr() for w in weights))
    return out, total
