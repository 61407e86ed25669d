"""How a genprior process uses memory: freed step buffers are kept for the next step.

A distillation step or an evaluation epoch allocates the same large buffers every
time (activations of 256 real images, their gradients). glibc's malloc hands every
freed block above its mmap threshold (128 KiB, rising to at most 32 MiB) back to the
system, and the next step faults the same memory in again, page by page: on a 2-core
CPU about 40 % of a pixel-DM step went to the kernel (hundreds of millions of minor
page faults in 200 iterations). Keeping those blocks in the heap halves the wall time
of every loop with bit-identical results (``benchmarks/speed.py``: DM at IPC 1 3.1 ->
1.2 s per iteration, a ConvNet evaluation epoch 0.27 -> 0.13 s).

``import genprior`` applies this once per process with ``mallopt(3)``, so the CLI,
the recipes, the benchmark lanes, ``accelerate launch`` workers and library users all
get it. The switch is the environment variable ``GENPRIOR_KEEP_MEMORY``:

- unset or ``1``: on. The peak resident memory is unchanged (what is kept is what the
  step needed anyway); the process keeps its peak until it ends instead of returning
  memory between steps.
- ``0``: off, glibc's defaults. Use it to watch live memory with ``ps`` or to measure
  memory the way a tool that samples RSS expects (``benchmarks/distill_memory.py``
  and ``benchmarks/prior_cost.py`` do).
- Any ``MALLOC_*_`` variable or ``GLIBC_TUNABLES`` set by the user wins: genprior then
  leaves the allocator as the environment set it and says so.

Every run log, evaluation report and benchmark result records ``memory_setting()``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Dict, Optional

from .errors import GenpriorError

ENV = "GENPRIOR_KEEP_MEMORY"
#: environment variables through which glibc's malloc is tuned at process start
GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
             "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
#: blocks up to 1 GiB come from the heap and stay there when freed; free heap top is
#: returned only past 1 GiB; the heap grows 64 MiB at a time (fewer brk calls)
SETTINGS = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}

_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")
_setting: Optional[Dict[str, str]] = None
_error: Optional[str] = None


def _mallopt():
    """glibc's ``mallopt``, or None where the C library has none (macOS, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl's mallopt is a no-op
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def keep_freed_memory() -> Dict[str, str]:
    """Apply the process's allocator setting once (``import genprior`` calls this) and
    return it; a bad ``GENPRIOR_KEEP_MEMORY`` raises the one-line error again on
    every call, so the CLI reports it."""
    global _setting, _error
    if _error is not None:
        raise GenpriorError(_error)
    if _setting is not None:
        return dict(_setting)
    value = os.environ.get(ENV, "1").strip().lower()
    if value not in _ON + _OFF:
        _error = f"{ENV}={os.environ[ENV]!r} is not understood; set it to 1 (keep freed memory, the default) or 0 (off)"
        raise GenpriorError(_error)
    from_env = [k for k in GLIBC_ENV if k in os.environ]
    if value in _OFF:
        _setting = {"keep_freed_memory": "off", "how": f"{ENV}={os.environ[ENV]}: glibc's defaults"}
    elif from_env:
        _setting = {"keep_freed_memory": "environment", "how": f"left as {', '.join(from_env)} set it"}
    else:
        fn = _mallopt()
        if fn is None:
            _setting = {"keep_freed_memory": "unsupported", "how": "not glibc: the C library's defaults"}
        elif all(fn(param, value) == 1 for param, value in SETTINGS.items()):
            _setting = {"keep_freed_memory": "on", "how": "mallopt: mmap threshold 1 GiB, trim threshold 1 GiB, top pad 64 MiB"}
        else:
            _setting = {"keep_freed_memory": "unsupported", "how": "mallopt refused part of the settings"}
    return dict(_setting)


def memory_setting() -> Dict[str, str]:
    """What this process runs under, for logs and reports (applies it first if needed)."""
    return keep_freed_memory()
