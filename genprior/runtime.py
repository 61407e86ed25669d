"""How a genprior process uses memory: freed step buffers are kept for the next step.

A distillation step or an evaluation epoch allocates the same large buffers every
time (activations of 256 real images, their gradients). glibc's malloc hands every
freed block above its mmap threshold (128 KiB, rising to at most 32 MiB) back to the
system, and the next step faults the same memory in again, page by page: on a 2-core
CPU about 40 % of a pixel-DM step went to the kernel (hundreds of millions of minor
page faults in 200 iterations). Keeping those blocks in the heap halves the wall time
of every loop with bit-identical results (``benchmarks/results/speed.md``, 2 threads,
glibc's defaults -> kept: a pixel-DM iteration at IPC 1 2.90 -> 1.22 s, GLaD-DM at IPC 10
3.20 -> 1.40 s, a ConvNet evaluation epoch 0.258 -> 0.123 s).

``import genprior`` applies this once per process with ``mallopt(3)``, so the CLI,
the recipes, the benchmark lanes, ``accelerate launch`` workers and library users all
get it. The switch is the environment variable ``GENPRIOR_KEEP_MEMORY``:

- unset or ``1``: on. What is kept is what the steps needed anyway, so the process
  holds about its peak until it ends instead of returning memory between steps.
- ``0``: off, glibc's defaults. Use it to watch live memory with ``ps`` or to measure
  memory the way a tool that samples RSS expects (``benchmarks/distill_memory.py``
  and ``benchmarks/prior_cost.py`` do).
- ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
  ``MALLOC_MMAP_MAX_`` or the same ``glibc.malloc.*`` tunables in ``GLIBC_TUNABLES`` set
  by the user win: genprior then leaves the allocator as the environment set it and says
  so. With jemalloc, tcmalloc or mimalloc in ``LD_PRELOAD`` it does nothing either.

Every run log, evaluation report and benchmark result records ``memory_setting()``.
"""
from __future__ import annotations

import ctypes
import os
from typing import Dict, Optional

from .errors import GenpriorError

ENV = "GENPRIOR_KEEP_MEMORY"
#: environment variables that set the same glibc parameters at process start (the user's win)
GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
GLIBC_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad",
                  "glibc.malloc.mmap_max")
#: allocators that replace malloc when preloaded; glibc's mallopt then tunes nothing in use
PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4
#: blocks up to 1 GiB come from the heap and stay there when freed; free heap top is
#: returned only past 1 GiB; the heap grows 64 MiB at a time (fewer brk calls)
SETTINGS = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
NAMES = {M_MMAP_THRESHOLD: "mmap threshold 1 GiB", M_TRIM_THRESHOLD: "trim threshold 1 GiB", M_TOP_PAD: "top pad 64 MiB"}

_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")
_setting: Optional[Dict[str, str]] = None
_error: Optional[str] = None


def _mallopt():
    """glibc's ``mallopt``, or None where the C library has none (macOS, musl)."""
    try:
        libc = ctypes.CDLL(None)  # the running process's own symbols: no library search at import
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
    from_env += [t for t in GLIBC_TUNABLES if t in os.environ.get("GLIBC_TUNABLES", "")]
    preloaded = [a for a in PRELOADED if a in os.environ.get("LD_PRELOAD", "")]
    if value in _OFF:
        user = f", with {', '.join(from_env)} as set" if from_env else ""
        _setting = {"keep_freed_memory": "off", "how": f"{ENV}={os.environ[ENV]}: glibc's defaults{user}"}
    elif from_env:
        _setting = {"keep_freed_memory": "environment", "how": f"left as {', '.join(from_env)} set it"}
    elif preloaded:
        _setting = {"keep_freed_memory": "unsupported", "how": f"{preloaded[0]} is preloaded: its own behaviour"}
    else:
        _setting = _apply(_mallopt())
    return dict(_setting)


def _apply(mallopt) -> Dict[str, str]:
    if mallopt is None:
        return {"keep_freed_memory": "unsupported", "how": "not glibc: the C library's defaults"}
    done = [name for param, name in NAMES.items() if mallopt(param, SETTINGS[param]) == 1]
    if NAMES[M_MMAP_THRESHOLD] not in done and mallopt(M_MMAP_MAX, 0) == 1:
        # glibc before 2.35 caps the threshold at 32 MiB; no mmap at all keeps every block in the heap
        done.append("no mmap (this glibc caps the mmap threshold)")
    if len(done) == len(SETTINGS):
        return {"keep_freed_memory": "on", "how": "mallopt: " + ", ".join(done)}
    return {"keep_freed_memory": "partial" if done else "unsupported",
            "how": "mallopt took " + (", ".join(done) if done else "none of the settings")}


def memory_setting() -> Dict[str, str]:
    """What this process runs under, for logs and reports (applies it first if needed)."""
    return keep_freed_memory()
