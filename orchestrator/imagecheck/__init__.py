"""Static checks of the framework Dockerfiles, for images that cannot be built on this machine (GPU images).

Per images/<name>/Dockerfile, once per variant when framework.yaml declares variants (VARIANT substituted):

1. the base image is pinned (a tag that is not `latest`; a warning without an @sha256 digest);
2. every COPY/ADD source exists, workloads/harness.py and the workload module are copied where
   `python -m workloads.<module>` finds them, the ENTRYPOINT runs that module, the USER is not root,
   the image has one Python (framework.yaml `python`, base tag, apt/pythonX.Y use), no BuildKit-only syntax;
3. every Python requirement it installs (COPYed requirements*.txt, `-r` files, `pip install` arguments in
   RUN lines) is pinned with `==`, and (unless offline) each pin resolves on its index for the image's
   Python on linux x86_64: the version exists, is not yanked, and a wheel matches (or only an sdist exists,
   which is a warning). Indexes are read through the standard simple API (PEP 691 JSON, PEP 503 HTML
   fallback): one request per project, never a wheel download. An index that cannot be reached leaves its
   pins "not checked", never passed.

Run: python -m orchestrator.dockerfile_check [--offline] [--root DIR] [framework ...]

Modules: findings (Finding, Pin, ImageCheck), syntax (Dockerfile structure), requirements, dockerfile (one
image), index (resolution against an index), cli (whole repo, command line).
"""

from __future__ import annotations

from orchestrator.imagecheck.cli import check, main
from orchestrator.imagecheck.dockerfile import BUILDKIT_FLAGS, DEFAULT_GLIBC, check_image
from orchestrator.imagecheck.findings import ERROR, INFO, PYPI, WARNING, Finding, ImageCheck, Pin
from orchestrator.imagecheck.index import IndexFile, ProjectPage, fetch_project, resolve_pin, resolve_pins, target_tags
from orchestrator.imagecheck.requirements import PIP_VALUE_OPTS
from orchestrator.imagecheck.syntax import ALIASES, DISTROS, REDIRECTS, SHELL_OPS

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
