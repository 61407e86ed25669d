"""Progress bars: a bar on a terminal, a few plain lines in a log."""
import io
import sys

import pytest

from genprior.errors import GenpriorError
from genprior.progress import progress_bar


class Log(io.StringIO):
    def isatty(self):
        return False


def test_a_log_gets_a_line_every_few_seconds_and_the_final_state(monkeypatch):
    log = Log()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setenv("GENPRIOR_PROGRESS_INTERVAL", "3600")
    bar = progress_bar(range(1000), desc="distill", total=1000)
    for i in bar:
        bar.set_postfix(loss=i)  # a forced redraw per update, as the loops do
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    # the first state, then nothing for an hour, then the final state when the bar closes
    assert len(lines) == 2 and lines[0].startswith("distill") and "1000/1000" in lines[-1] and "loss=999" in lines[-1]


def test_with_no_interval_every_redraw_is_its_own_line(monkeypatch):
    log = Log()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setenv("GENPRIOR_PROGRESS_INTERVAL", "0")
    bar = progress_bar(total=5, desc="x")
    for _ in range(5):
        bar.update(1)
        bar.set_postfix(step=1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) >= 5 and all(line.startswith("x") for line in lines) and "5/5" in lines[-1]


def test_a_terminal_keeps_the_redrawn_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    for _ in progress_bar(range(3), desc="t", mininterval=0):
        pass
    assert "\r" in term.getvalue()


def test_a_bad_interval_is_one_line(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Log())
    monkeypatch.setenv("GENPRIOR_PROGRESS_INTERVAL", "soon")
    with pytest.raises(GenpriorError, match="GENPRIOR_PROGRESS_INTERVAL must be a number of seconds"):
        progress_bar(range(3))
