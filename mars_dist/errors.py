"""The one distinction every command line needs: a user's mistake versus a bug.

A `UserError` means the input was wrong (a path, a key, a value, a file's content) and its message
says which and what would be right; the CLIs print it as one `prog: error: ...` line and exit 2
(mars_dist.cli). Anything else is a bug and keeps its traceback. Errors that callers may also want
to catch as ValueError or FileNotFoundError inherit from both.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message names the offending value and what is expected."""


class UserValueError(UserError, ValueError):
    """A value (argument, config entry, file content) outside what is accepted."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A path the user gave does not exist or is not what it should be."""
