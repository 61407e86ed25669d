"""Errors genprior raises for bad input.

Every message is one line that names the fix; the CLI prints it as is.
"""


class GenpriorError(Exception):
    """Base class: bad input or missing files, never a bug in genprior."""


class UnknownNameError(GenpriorError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(GenpriorError, FileNotFoundError):
    """Local data that is not where genprior looks for it."""


class CorruptedSetError(GenpriorError):
    """A synthetic-set directory that is incomplete or inconsistent."""
