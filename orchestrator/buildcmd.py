"""`python -m orchestrator build MATRIX`: build (and optionally push) every image a matrix needs, run no cell.

What a user does before a long run or when preparing a cluster: the images of the matrix's frameworks and variants,
in the matrix's device flavour (--device cpu builds the CPU flavour), parents first, each once.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator import PROJECT_ROOT
from orchestrator.errors import InputError, OrchestrationError
from orchestrator.images import BuildFailed, BuiltImage, ensure_image, image_repo


def _key_name(key: tuple[str, str | None]) -> str:
    return f"{key[0]}:{key[1]}" if key[1] else key[0]


def build_parser(parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = parser_class(
        prog="python -m orchestrator build",
        description="Build (and with --push, push) every image the matrix needs, without running any cell.",
        epilog="Exit codes: 0 every image built, 1 a build or push failed, 2 bad input.",
    )
    p.add_argument("matrix", type=Path, help="the matrix YAML file (e.g. matrix.yaml)")
    p.add_argument("--only", metavar="NAME[,NAME]", help="only these frameworks; NAME:VARIANT picks one variant")
    p.add_argument("--device", choices=("gpu", "cpu"), help="the flavour to build (default: the matrix's device)")
    p.add_argument("--push", metavar="REGISTRY", help="also push each image to REGISTRY (host[:port][/path])")
    p.add_argument("--build-arg", dest="build_args", action="append", default=[], metavar="KEY=VALUE",
                   help="docker build argument for every image, e.g. BASE_IMAGE=<a local base image>")
    p.add_argument("-q", "--quiet", action="store_true", help="no live progress, only the summary")
    return p


def push(client: Any, built: BuiltImage, key: tuple[str, str | None], registry: str) -> str:
    """Tag the image as REGISTRY/lstm-bench/<name>:<flavour>-<hash> and push it; the pushed reference."""
    repo = f"{registry.rstrip('/')}/{image_repo(*key)}"
    tag = built.tag.rpartition(":")[2]
    client.images.get(built.tag).tag(repo, tag=tag)
    for chunk in client.images.push(repo, tag=tag, stream=True, decode=True):
        if "error" in chunk:
            raise OrchestrationError(f"push to {repo}:{tag} failed: {chunk['error']}")
    return f"{repo}:{tag}"


def cmd_build(args: argparse.Namespace, console: Console, plan: Any) -> int:
    from orchestrator.images import parse_build_args
    from orchestrator.runners.docker import connect

    build_args = parse_build_args(args.build_args)
    if args.push is not None and (not args.push or any(c.isspace() for c in args.push)):
        raise InputError(f"--push {args.push!r}: expected a registry such as localhost:5000 or host/path")
    keys = list(dict.fromkeys(c.image_key for c in plan.cells))
    flavour = plan.matrix.device
    client = connect()
    rows: list[tuple[str, str, str]] = []
    failed = 0
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  disable=args.quiet, transient=False) as progress:
        for key in keys:
            task = progress.add_task(f"build {_key_name(key)} ({flavour})", total=None)

            def line(text: str, task: Any = task, key: tuple[str, str | None] = key) -> None:
                if text.strip():
                    progress.update(task, description=f"build {_key_name(key)}: {escape(text.strip()[:70])}")

            fw = plan.frameworks[key[0]]
            try:
                built = ensure_image(client, PROJECT_ROOT, fw, key[1], build_args, plan.matrix.build_timeout_s, line,
                                     flavour=flavour)
                ref = push(client, built, key, args.push) if args.push else built.tag
            except (BuildFailed, OrchestrationError) as exc:
                failed += 1
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else "failed"
                progress.update(task, description=f"[red]failed[/] {_key_name(key)}: {escape(first[:90])}",
                                total=1, completed=1)
                rows.append((_key_name(key), "failed", first))
                continue
            state = "cached" if built.cached else f"built in {built.duration_s:.0f} s"
            progress.update(task, description=f"[green]ready[/] {_key_name(key)} {escape(ref)} ({state})",
                            total=1, completed=1)
            rows.append((_key_name(key), state, ref))
    table = Table(title=f"images ({flavour} flavour)")
    for col in ("image", "state", "reference"):
        table.add_column(col)
    for row in rows:
        table.add_row(*map(escape, row))
    console.print(table)
    return 1 if failed else 0
