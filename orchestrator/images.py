"""Docker images for frameworks: a minimal build context, a content-hash tag, cached builds with progress.

The context holds only the Dockerfile and what its COPY/ADD lines name (paths relative to the project
root), so the tag hashes exactly what can change the image: those files, the build args and the base
image's id when it is present locally. An unchanged image is found by tag and not rebuilt.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import re
import shlex
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import LABEL_PREFIX
from orchestrator.errors import InputError
from orchestrator.frameworks import Framework
from orchestrator.runners.base import LogTail, strip_ansi

_ARG_RE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    out: list[Instruction] = []
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = no
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = ""
    if buf:
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def _substitute(text: str, args: dict[str, str]) -> str:
    return _ARG_RE.sub(lambda m: args.get(m.group(1), m.group(0)), text)


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    out = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, eq, default = ins.args.partition("=")
            # A bare re-declaration (`ARG X` after FROM brings X into the stage) keeps the earlier default.
            if eq or name.strip() not in out:
                out[name.strip()] = default.strip().strip('"')
    return out


def copy_sources(instructions: list[Instruction], build_args: dict[str, str]) -> list[str]:
    """Source paths of COPY/ADD (not those copying from another stage), ARGs substituted."""
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        body = ins.args
        words = json.loads(body) if body.startswith("[") else shlex.split(body)
        flags = [w for w in words if w.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources += [_substitute(p, build_args) for p in paths[:-1]]
    return sources


def base_images(instructions: list[Instruction], build_args: dict[str, str]) -> list[str]:
    stages = set()
    bases = []
    for ins in instructions:
        if ins.keyword != "FROM":
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        image = _substitute(words[0], build_args)
        if image not in stages:
            bases.append(image)
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return bases


def context_files(root: Path, framework: Framework, build_args: dict[str, str]) -> list[Path]:
    """The Dockerfile plus every file its COPY/ADD lines name, relative to `root`, sorted."""
    instructions = parse_dockerfile(framework.dockerfile.read_text())
    args = {**arg_defaults(instructions), **build_args}
    files = {framework.dockerfile.resolve().relative_to(root.resolve())}
    for src in copy_sources(instructions, args):
        matches = sorted(glob.glob(str(root / src), recursive=True))
        if not matches:
            raise FileNotFoundError(f"{framework.dockerfile}: COPY source {src!r} not found under {root}")
        for m in matches:
            p = Path(m)
            found = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
            files.update(f.resolve().relative_to(root.resolve()) for f in found)
    return sorted(files)


def content_hash(root: Path, files: list[Path], build_args: dict[str, str], base_ids: list[str]) -> str:
    h = hashlib.sha256()
    for rel in files:
        h.update(str(rel).encode() + b"\0")
        h.update(hashlib.sha256((root / rel).read_bytes()).digest())
    h.update(json.dumps(sorted(build_args.items())).encode())
    h.update(json.dumps(base_ids).encode())
    return h.hexdigest()


def build_context(root: Path, files: list[Path]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=str(rel))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0  # the hash, not the clock, decides what changed
            with (root / rel).open("rb") as f:
                tar.addfile(info, f)
    buf.seek(0)
    return buf


def image_repo(framework: str, variant: str | None) -> str:
    return f"{LABEL_PREFIX}/{framework}{'-' + variant if variant else ''}"


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    cached: bool
    duration_s: float


def parse_build_args(items: list[str]) -> dict[str, str]:
    """`--build-arg KEY=VALUE` items (the docker and ray runners both take them)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--build-arg {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


class BuildFailed(Exception):
    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.log_tail = log_tail


def ensure_image(
    client: Any,
    root: Path,
    framework: Framework,
    variant: str | None,
    build_args: dict[str, str],
    timeout_s: float,
    on_line: Callable[[str], None] | None = None,
) -> BuiltImage:
    """Return the image for this framework variant, building it only when its content hash is new."""
    started = time.monotonic()
    args = dict(build_args)
    if variant:
        args["VARIANT"] = variant
    try:
        instructions = parse_dockerfile(framework.dockerfile.read_text())
        args_all = {**arg_defaults(instructions), **args}
        files = context_files(root, framework, args)
    except (OSError, ValueError) as exc:
        raise BuildFailed(f"cannot prepare build context: {exc}", str(exc)) from None
    base_ids = []
    for base in base_images(instructions, args_all):
        try:
            base_ids.append(client.images.get(base).id)
        except Exception:  # absent locally: the build pulls (or fails) and the tag alone identifies it
            base_ids.append(base)
    digest = content_hash(root, files, args, base_ids)
    tag = f"{image_repo(framework.name, variant)}:{digest[:16]}"
    try:
        image = client.images.get(tag)
        return BuiltImage(tag, image.id, True, time.monotonic() - started)
    except Exception as exc:
        if type(exc).__name__ != "ImageNotFound":
            raise

    tail = LogTail(lines=40)
    context = build_context(root, files)
    deadline = started + timeout_s
    labels = {
        f"{LABEL_PREFIX}.managed": "true",
        f"{LABEL_PREFIX}.framework": framework.name,
        f"{LABEL_PREFIX}.content-hash": digest,
    }
    try:
        stream = client.api.build(
            fileobj=context,
            custom_context=True,
            dockerfile=str(framework.dockerfile.relative_to(root)),
            tag=tag,
            buildargs=args,
            decode=True,
            rm=True,
            forcerm=True,
            labels=labels,
            timeout=max(1, int(timeout_s)),
        )
        step = ""  # the legacy builder announces each instruction as "Step N/M : INSTRUCTION"
        for chunk in stream:
            if "error" in chunk:
                tail.feed(str(chunk["error"]) + "\n")
                error = strip_ansi(str(chunk["error"])).strip()
                raise BuildFailed(f"{step} failed: {error}" if step else error, tail.text())
            text = chunk.get("stream")
            if text:
                if text.startswith("Step "):
                    step = " ".join(strip_ansi(text).split())
                tail.feed(text)
                if on_line:
                    on_line(text.rstrip())
            if time.monotonic() > deadline:
                raise BuildFailed(f"build timed out after {timeout_s:g} s", tail.text())
    except BuildFailed:
        raise
    except Exception as exc:  # read timeouts (a silent, hanging step) and API errors
        text = str(exc)
        if "timed out" in text.lower():
            text = f"build timed out after {timeout_s:g} s ({text})"
        raise BuildFailed(text, tail.text()) from None
    image = client.images.get(tag)
    return BuiltImage(tag, image.id, False, time.monotonic() - started)
