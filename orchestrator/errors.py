"""The two kinds of failure the command line distinguishes (exit codes 2 and 1)."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: one line naming the file, line and key. Exit code 2, no traceback."""


class OrchestrationError(Exception):
    """The orchestration itself cannot go on (no Docker engine, unwritable output, ...). Exit code 1."""
