"""Python requirements an image installs: requirements files, pip's index options, exact `==` pins."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from orchestrator.imagecheck.findings import ERROR, INFO, PYPI, WARNING, Finding, ImageCheck, Pin, _rel

PIP_VALUE_OPTS = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
    "-t", "--target", "--prefix", "--root", "--platform", "--python-version", "--implementation", "--abi",
    "--progress-bar", "--cache-dir", "--src", "--trusted-host", "--log", "--timeout", "--retries", "--proxy",
    "--cert", "--client-cert", "--exists-action", "--global-option", "--config-settings", "-C", "--no-binary",
    "--only-binary", "--upgrade-strategy", "--root-user-action", "-e", "--editable", "--python", "-p",
    "--use-feature", "--use-deprecated", "--report", "--keyring-provider", "--index-strategy", "--python-platform",
}


def _target_env(python: str) -> dict[str, str]:
    full = python if python.count(".") >= 2 else f"{python}.0"
    return {"python_version": ".".join(python.split(".")[:2]), "python_full_version": full,
            "implementation_name": "cpython", "implementation_version": full, "platform_python_implementation":
            "CPython", "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "os_name": "posix", "extra": ""}


def _pin_of(text: str, path: str, line: int, python: str | None, out: ImageCheck, indexes: tuple[str, ...],
            glibc: tuple[int, int]) -> None:
    """Check one requirement string is an exact pin; add it to the pins to resolve."""
    if text.startswith((".", "/")) or "://" in text or text.endswith((".whl", ".tar.gz", ".zip")):
        out.findings.append(Finding(path, line, WARNING, f"{text}: a direct path or URL, not an index pin; "
                                    "not checked"))
        return
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        out.findings.append(Finding(path, line, ERROR, f"{text!r} is not a valid requirement: {exc}"))
        return
    if req.url:
        out.findings.append(Finding(path, line, WARNING, f"{text}: a direct URL, not an index pin; not checked"))
        return
    if req.marker and python and not req.marker.evaluate(_target_env(python)):
        return  # pip skips it on this image's Python/platform
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator not in {"==", "==="} or "*" in specs[0].version:
        what = f"`{req.specifier}`" if specs else "no version"
        out.findings.append(Finding(path, line, ERROR, f"{text}: not pinned with == ({what})"))
        return
    if python:
        out.pins.append(Pin(text, canonicalize_name(req.name), specs[0].version, path, line, indexes, python, glibc))


@dataclass
class _Indexes:
    """pip's index options as they accumulate over a command line and the requirement files it reads."""

    index: str | None = None
    extra: list[str] = field(default_factory=list)

    def take(self, opt: str, value: str) -> bool:
        if opt in {"-i", "--index-url"}:
            self.index = value
        elif opt == "--extra-index-url":
            self.extra.append(value)
        else:
            return False
        return True

    def urls(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.index or PYPI, *self.extra]))


def _option(tokens: list[str], i: int) -> tuple[str, str | None, int]:
    """(option, value, next index) at tokens[i], for `--opt=value` and `--opt value` forms."""
    opt, eq, value = tokens[i].partition("=")
    if eq:
        return opt, value, i + 1
    if opt in PIP_VALUE_OPTS:
        return opt, (tokens[i + 1] if i + 1 < len(tokens) else None), i + 2
    return opt, None, i + 1


def _requirement_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, logical line) of a requirements file: comments dropped, continuations joined."""
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for no, raw in enumerate(path.read_text().splitlines(), 1):
        text = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not buf:
            start = no
        if text.endswith("\\"):
            buf += text[:-1] + " "
            continue
        buf = (buf + text).strip()
        if buf:
            out.append((start, buf))
        buf = ""
    return out


def _read_requirements(root: Path, path: Path, indexes: _Indexes, seen: set[Path],
                       out: ImageCheck) -> list[tuple[str, str, int]]:
    """Requirement strings (text, file, line) of a requirements file and the files it includes with -r."""
    rel = _rel(root, path)
    if path in seen:
        return []
    seen.add(path)
    reqs: list[tuple[str, str, int]] = []
    for no, line in _requirement_lines(path):
        if not line.startswith("-"):
            # per-requirement options (--hash, --config-settings) follow the requirement itself
            reqs.append((re.split(r"\s+--?[A-Za-z]", line, maxsplit=1)[0].strip(), rel, no))
            continue
        tokens = shlex.split(line)
        opt, value, _ = _option(tokens, 0)
        if value is None and opt in PIP_VALUE_OPTS:
            out.findings.append(Finding(rel, no, ERROR, f"{opt} without a value"))
        elif indexes.take(opt, value or ""):
            out.findings.append(Finding(rel, no, INFO, f"index {value} ({opt})"))
        elif opt in {"-r", "--requirement"}:
            nested = path.parent / (value or "")
            if nested.is_file():
                reqs += _read_requirements(root, nested, indexes, seen, out)
            else:
                out.findings.append(Finding(rel, no, ERROR, f"-r {value}: no such file next to {rel}"))
        elif opt in {"-e", "--editable"}:
            out.findings.append(Finding(rel, no, ERROR, f"editable install {value}: not a pinned release"))
    return reqs
