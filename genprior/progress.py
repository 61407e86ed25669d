"""Progress bars: tqdm's bar on a terminal; elsewhere (CI, ``nohup``, a log file) one plain line
every few seconds instead of a redraw per update.

Every long loop of genprior draws its bar through ``progress_bar``, which takes tqdm's
arguments. When standard error is not a terminal, the bar's redraws go through a stream
that writes at most one line per ``GENPRIOR_PROGRESS_INTERVAL`` seconds (default 5) and
always the bar's final state, so a log holds a readable history rather than thousands
of carriage-return updates.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Iterable, Optional

from tqdm.auto import tqdm

from .errors import GenpriorError

DEFAULT_INTERVAL_S = 5.0


def line_interval() -> float:
    """Seconds between two progress lines when standard error is not a terminal."""
    text = os.environ.get("GENPRIOR_PROGRESS_INTERVAL", "")
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise GenpriorError(f"GENPRIOR_PROGRESS_INTERVAL must be a number of seconds >= 0, got {text!r}")
    return value


class LineStream:
    """A stream for tqdm that turns its redraws into lines: the latest state at most once per
    ``interval`` seconds, and the final state when the bar closes."""

    def __init__(self, stream: Any, interval: float):
        self.stream, self.interval = stream, interval
        self.last = -math.inf
        self.pending: Optional[str] = None

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        now = time.monotonic()
        if line:
            self.pending = line
            if now - self.last >= self.interval:
                self._emit(now)
        elif "\n" in text and self.pending is not None:  # the bar closed: its last state
            self._emit(now)

    def _emit(self, now: float) -> None:
        self.stream.write(self.pending + "\n")
        self.stream.flush()
        self.last, self.pending = now, None

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Optional[Iterable] = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on standard error, as lines when it is not a terminal."""
    stream = sys.stderr
    if not kwargs.get("disable") and "file" not in kwargs and not getattr(stream, "isatty", lambda: False)():
        kwargs["file"] = LineStream(stream, line_interval())
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("ncols", 120)
    return tqdm(iterable, **kwargs)
