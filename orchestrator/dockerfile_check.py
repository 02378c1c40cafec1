"""Static checks of the framework Dockerfiles: now the package orchestrator.imagecheck; this module keeps the old
import path and the command line working.

Run: python -m orchestrator.dockerfile_check [--offline] [--root DIR] [framework ...]
"""

from __future__ import annotations

from orchestrator.imagecheck import (
    ALIASES,
    BUILDKIT_FLAGS,
    DEFAULT_GLIBC,
    DISTROS,
    ERROR,
    INFO,
    PIP_VALUE_OPTS,
    PYPI,
    REDIRECTS,
    SHELL_OPS,
    WARNING,
    Finding,
    ImageCheck,
    IndexFile,
    Pin,
    ProjectPage,
    check,
    check_image,
    fetch_project,
    main,
    resolve_pin,
    resolve_pins,
    target_tags,
)

__all__ = [
    "ALIASES",
    "BUILDKIT_FLAGS",
    "DEFAULT_GLIBC",
    "DISTROS",
    "ERROR",
    "INFO",
    "PIP_VALUE_OPTS",
    "PYPI",
    "REDIRECTS",
    "SHELL_OPS",
    "WARNING",
    "Finding",
    "ImageCheck",
    "IndexFile",
    "Pin",
    "ProjectPage",
    "check",
    "check_image",
    "fetch_project",
    "main",
    "resolve_pin",
    "resolve_pins",
    "target_tags",
]

if __name__ == "__main__":
    raise SystemExit(main())
