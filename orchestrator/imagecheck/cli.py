"""Static checks of the framework Dockerfiles, for images that cannot be built on this machine (GPU images).

The whole repo (every image, every variant) and the command line.

Run: python -m orchestrator.dockerfile_check [--offline] [--root DIR] [framework ...]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from orchestrator import PROJECT_ROOT
from orchestrator.errors import InputError
from orchestrator.frameworks import Framework, discover
from orchestrator.imagecheck.dockerfile import check_image
from orchestrator.imagecheck.findings import ERROR, WARNING, Finding, Pin
from orchestrator.imagecheck.index import resolve_pins
from orchestrator.images import FLAVOURS, arg_defaults, build_order, parse_dockerfile


def _which_builds(hits: set[tuple[str, str, str]], builds: dict[str, set[tuple[str, str]]]) -> str:
    """' [variant a]', ' [flavour cpu]', ' [variant a flavour cpu]': a finding not in every build of its image."""
    tags: set[str] = set()
    for name in {n for n, _, _ in hits}:
        mine = {(v, fl) for n, v, fl in hits if n == name}
        if mine == builds[name]:
            continue
        for variant in sorted({v for v, _ in builds[name]}):
            flavours = {fl for v, fl in mine if v == variant}
            if flavours == {fl for v, fl in builds[name] if v == variant}:
                tags |= {f"variant {variant}"} if variant else set()
            else:
                tags |= {f"variant {variant} flavour {fl}" if variant else f"flavour {fl}" for fl in flavours}
    return f" [{', '.join(sorted(tags))}]" if tags else ""


def _flavours(root: Path, frameworks: dict[str, Framework], name: str, variant: str | None) -> tuple[str, ...]:
    """Both flavours when the image or a project image under it declares ARG FLAVOUR; else the one image it is."""
    try:
        order = build_order(root, frameworks, [(name, variant)], FLAVOURS[0], {})
    except (OSError, ValueError):
        return FLAVOURS[:1]  # the check of the image itself reports why
    uses = any("FLAVOUR" in arg_defaults(parse_dockerfile(r.text)) for r in order)
    return FLAVOURS if uses else FLAVOURS[:1]


def check(root: Path, names: list[str] | None = None, offline: bool = False) -> tuple[list[str], dict[str, int]]:
    """Output lines (one per finding, variant-tagged when not all variants share it) and summary counts."""
    frameworks = discover(root / "images")
    unknown = sorted(set(names or ()) - set(frameworks))
    if unknown:
        raise InputError(f"no images/<name>/Dockerfile for: {', '.join(unknown)}")
    selected = {n: fw for n, fw in frameworks.items() if not names or n in names}
    builds = {n: {(v or "", fl) for v in (fw.meta.variants or [None]) for fl in _flavours(root, frameworks, n, v)}
              for n, fw in selected.items()}
    per: dict[Finding, set[tuple[str, str, str]]] = defaultdict(set)
    pins: dict[Pin, set[tuple[str, str, str]]] = defaultdict(set)
    for name, fw in selected.items():
        for variant, flavour in sorted(builds[name]):
            result = check_image(root, fw, variant or None, flavour, frameworks)
            for f in result.findings:
                per[f].add((name, variant, flavour))
            for p in result.pins:
                pins[p].add((name, variant, flavour))
    if not offline:
        for f in resolve_pins(list(pins)):
            per[f] |= {b for p, bs in pins.items() if (p.path, p.line) == (f.path, f.line) for b in bs}
    lines = [str(f) + _which_builds(per[f], builds) for f in sorted(per)]
    counts = {"images": len(selected), "builds": sum(map(len, builds.values())),
              "pins": len({(p.name, p.version, p.indexes, p.python, p.glibc) for p in pins})}
    for sev in (ERROR, WARNING):
        counts[sev] = sum(f.severity == sev for f in per)
    counts["unchecked"] = sum("not checked (index unreachable)" in f.message for f in per)
    return lines, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.dockerfile_check", description=__doc__.split("\n")[0])
    ap.add_argument("frameworks", nargs="*", help="framework names (default: every images/<name>/Dockerfile)")
    ap.add_argument("--offline", action="store_true", help="skip resolving pins on the package indexes")
    ap.add_argument("--root", type=Path, default=PROJECT_ROOT, help="project root holding images/ and workloads/")
    opts = ap.parse_args(argv)
    try:
        lines, counts = check(opts.root, opts.frameworks, opts.offline)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    resolved = "not resolved: --offline" if opts.offline else f"{counts['unchecked']} not checked"
    print(f"checked {counts['images']} images ({counts['builds']} builds), {counts['pins']} pins ({resolved}): "
          f"{counts[ERROR]} errors, {counts[WARNING]} warnings")
    return 1 if counts[ERROR] else 0
