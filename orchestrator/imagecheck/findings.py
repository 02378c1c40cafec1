"""What the image check reports (findings) and what it resolves (pins), shared by every part of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PYPI = "https://pypi.org/simple/"
ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class Pin:
    """One `name==version` an image installs, with where it was written and what it must resolve for."""

    requirement: str
    name: str
    version: str
    path: str
    line: int
    indexes: tuple[str, ...]
    python: str
    glibc: tuple[int, int]


@dataclass
class ImageCheck:
    findings: list[Finding] = field(default_factory=list)
    pins: list[Pin] = field(default_factory=list)


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
