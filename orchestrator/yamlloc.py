"""Where in a YAML file a pydantic validation error points: the shared 'file:line: key: problem' of every input file.

Used by the matrix (orchestrator/matrix.py) and framework.yaml (orchestrator/frameworks.py), so both report bad
input the same way: one line naming the file, the line, the key and what was expected.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError


def line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node on the pydantic error path `loc`."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    nxt, line = value, key.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def user_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The user's keys and indexes of a pydantic error path (without union-branch and validator names)."""
    return tuple(p for p in loc if isinstance(p, int) or not any(c in str(p) for c in "[]()'\"-"))


def most_specific(errors: list[Any]) -> Any:
    # A union reports one error per branch; the deepest one is what the user got wrong.
    return max(errors, key=lambda e: len(user_path(tuple(e["loc"]))))


def one_line(text: str) -> str:
    # Keys and values echoed from the file may hold newlines or control characters; the error stays one line.
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe(
    exc: ValidationError, root: yaml.Node | None, source: str, known_keys: tuple[str, ...] | None = None
) -> str:
    """'<source>:<line>: key '<key>': <what was expected> (got <value>)' for the most specific error."""
    err = most_specific(exc.errors())
    if err["type"] == "extra_forbidden" and known_keys:
        err = {**err, "msg": f"unknown key; expected one of {', '.join(known_keys)}"}
    elif err["type"] == "tuple_type":  # YAML has lists, not tuples
        err = {**err, "msg": "expected a list, e.g. [a, b]"}
    loc = user_path(tuple(err["loc"]))
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = line_of(root, loc)
    where = f"{source}:{line}" if line else source
    value = err.get("input")
    shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
    return one_line(f"{where}: key '{key}': {err['msg']}{shown}")
