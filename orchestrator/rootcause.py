"""The one line of a failed build's output that says why: what a reason's first line (the console, the record) shows.

uv, pip and `docker build` end a failure with generic lines ("error: Failed to build `x`", "error:
subprocess-exited-with-error", "The command ... returned a non-zero code: 1") and hints; the cause is earlier: the
exception a setup.py raised (`ModuleNotFoundError: No module named 'pkg_resources'`), pip's "ERROR: No matching
distribution found for ...", uv's resolver explanation ("╰─▶ Because ..."). The last such line is the deepest cause.
"""

from __future__ import annotations

import re

from orchestrator.runners.base import strip_ansi

# Box-drawing and marker prefixes pip and uv put before quoted output ("│ ", "╰─▶ ", "× ").
_PREFIX = re.compile(r"^[\s│╰─▶×|>]+")
# `ModuleNotFoundError: ...`, `subprocess.CalledProcessError: ...`, `distutils.errors.DistutilsError: ...`
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)(?::\s*\S.*)?$")
_ERROR = re.compile(r"^(?:ERROR|error|E|fatal|FATAL)(?:\[[^\]]*\])?:\s*\S")
_UV_CAUSE = re.compile(r"^\s*╰─▶\s*\S")
# Lines that only say "it failed", never why: a cause line beats them wherever they stand.
_GENERIC = (
    "subprocess-exited-with-error", "failed to build", "failed building wheel", "could not build wheels",
    "returned a non-zero code", "metadata-generation-failed", "see above for output", "no solution found",
    "failed to download and build", "failed to install", "traceback (most recent call last)",
)


def root_cause(output: str, limit: int = 300) -> str | None:
    """The last meaningful error line of a build's output (at most `limit` characters), or None if none is."""
    lines = [strip_ansi(raw).rstrip() for raw in output.splitlines()]
    for kind in (_EXCEPTION, _UV_CAUSE, _ERROR):
        for raw in reversed(lines):
            if kind is _UV_CAUSE:
                if not kind.match(raw):
                    continue
            elif not kind.match(_PREFIX.sub("", raw)):
                continue
            line = " ".join(_PREFIX.sub("", raw).split())
            if line and not any(g in line.lower() for g in _GENERIC):
                return line if len(line) <= limit else line[: limit - 1] + "…"
    return None


def keep_first_line(text: str, limit: int) -> str:
    """`text` within `limit` characters, cut in the middle: its first line (the cause) and its end (the log's tail)."""
    if len(text) <= limit:
        return text
    first = text.split("\n", 1)[0][: limit // 2]
    return f"{first}\n…\n{text[-(limit - len(first) - 3):]}"
