"""Docker images for frameworks: a minimal build context, a content-hash tag, cached builds with progress.

An image may start FROM another project image (`FROM lstm-bench/<name>[-<variant>]`, no tag): that one is built
first, with the same flavour, and its tag and id go into the child's Dockerfile and hash. A Dockerfile without an
ENTRYPOINT gets the shared tail (images/tail.Dockerfile: user, workload files, smoke test, ENTRYPOINT) appended.
The flavour (gpu or cpu) is the build argument FLAVOUR and the start of the tag.

The context holds only the Dockerfile and what its COPY/ADD lines name (paths relative to the project
root), so the tag hashes exactly what can change the image: those files, the build args and the base
image's id when it is present locally. An unchanged image is found by tag and not rebuilt.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import io
import json
import os
import re
import shlex
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator import LABEL_PREFIX
from orchestrator.errors import InputError
from orchestrator.frameworks import Framework, discover
from orchestrator.rootcause import root_cause
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


MAX_CONTEXT_FILES = 100_000
_CHUNK = 1 << 20


def _check(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"{what} passed the build time limit")


def _entries(top: Path, deadline: float | None) -> Iterator[tuple[Path, bool]]:
    """(path, is a directory) of everything under `top`: no link followed, no recursion, within the deadline."""
    stack = [top]
    while stack:
        _check(deadline, "assembling the build context")
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                is_dir = entry.is_dir(follow_symlinks=False)
                yield Path(entry.path), is_dir
                if is_dir:
                    stack.append(Path(entry.path))


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Glob match segment by segment; `**` is any number of segments (docker's COPY patterns)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def _sources(root: Path, src: str, deadline: float | None) -> list[Path]:
    """What one COPY source names under `root` (relative paths), links included as links, never followed."""
    pattern = tuple(p for p in Path(src).parts if p not in ("", "."))
    fixed = 0
    while fixed < len(pattern) and not glob.has_magic(pattern[fixed]):
        fixed += 1
    base = root.joinpath(*pattern[:fixed])
    if fixed == len(pattern):
        found = [base] if base.is_symlink() or base.exists() else []
    elif base.is_dir() and not base.is_symlink():
        found = [p for p, _ in _entries(base, deadline) if _matches(p.relative_to(base).parts, pattern[fixed:])]
    else:
        found = []
    files: list[Path] = []
    for p in found:
        if p.is_dir() and not p.is_symlink():
            files += [f for f, is_dir in _entries(p, deadline) if not is_dir and "__pycache__" not in f.parts]
        else:
            files.append(p)
        if len(files) > MAX_CONTEXT_FILES:
            raise ValueError(f"COPY source {src!r} names more than {MAX_CONTEXT_FILES} files")
    return [f.relative_to(root) for f in files]


def context_files(root: Path, instructions: list[Instruction], build_args: dict[str, str],
                  deadline: float | None = None) -> list[Path]:
    """Every file (or link, kept a link) the COPY/ADD lines name, relative to `root`, sorted; the Dockerfile itself
    is added by the caller. No link is followed (two links to "." made a glob loop forever) and the walk stops at
    `deadline` (time.monotonic()) with a TimeoutError."""
    args = {**arg_defaults(instructions), **build_args}
    root = root.resolve()
    files: set[Path] = set()
    for src in copy_sources(instructions, args):
        if Path(src).is_absolute() or ".." in Path(src).parts:
            raise ValueError(f"COPY source {src!r} is outside the build context")
        found = _sources(root, src, deadline)
        if not found:
            raise FileNotFoundError(f"COPY source {src!r} not found under {root}")
        files.update(found)
        if len(files) > MAX_CONTEXT_FILES:
            raise ValueError(f"the build context has more than {MAX_CONTEXT_FILES} files")
    return sorted(files)


def _file_digest(path: Path, deadline: float | None) -> bytes:
    """sha256 of a file streamed in chunks (a 2 GiB file costs 1 MiB of memory), or of a link's target text."""
    if path.is_symlink():
        return hashlib.sha256(b"symlink\0" + os.readlink(path).encode()).digest()
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            _check(deadline, "hashing the build context")
    return h.digest()


def content_hash(root: Path, files: list[Path], build_args: dict[str, str], base_ids: list[str],
                 dockerfile_text: str = "", deadline: float | None = None) -> str:
    h = hashlib.sha256()
    h.update(hashlib.sha256(dockerfile_text.encode()).digest())
    for rel in files:
        h.update(str(rel).encode() + b"\0")
        h.update(_file_digest(root / rel, deadline))
    h.update(json.dumps(sorted(build_args.items())).encode())
    h.update(json.dumps(base_ids).encode())
    return h.hexdigest()


def _tar_info(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, 0  # the hash, not the clock, decides what changed
    return info


def build_context(root: Path, files: list[Path], dockerfile: tuple[str, str] | None = None,
                  deadline: float | None = None) -> IO[bytes]:
    """A tar of `files` plus, when given, (path in the context, text) of the Dockerfile the engine builds; written to
    a temporary file (never held in memory), links kept links."""
    buf = tempfile.TemporaryFile()  # noqa: SIM115 (handed to the caller, who closes it)
    try:
        with tarfile.open(fileobj=buf, mode="w") as tar:
            if dockerfile is not None:
                data = dockerfile[1].encode()
                tar.addfile(_tar_info(dockerfile[0], len(data)), io.BytesIO(data))
            for rel in files:
                _check(deadline, "writing the build context")
                path = root / rel
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    info = _tar_info(str(rel), 0, 0o777)
                    info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                    tar.addfile(info)
                    continue
                with path.open("rb") as f:
                    tar.addfile(_tar_info(str(rel), st.st_size, st.st_mode & 0o777), f)
        buf.seek(0)
    except BaseException:
        buf.close()
        raise
    return buf


def image_repo(framework: str, variant: str | None) -> str:
    return f"{LABEL_PREFIX}/{framework}{'-' + variant if variant else ''}"


# ---------------------------------------------------------------- recipes: what one image is built from

TAIL_DOCKERFILE = "images/tail.Dockerfile"
FLAVOURS = ("gpu", "cpu")
_FROM_RE = re.compile(r"^(\s*FROM\s+(?:--\S+\s+)*)(\S+)(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Recipe:
    """One image: the Dockerfile text the engine builds (the framework's, plus the shared tail when it has no
    ENTRYPOINT), the build args it gets, the project images it starts FROM and the other bases."""

    framework: Framework
    variant: str | None
    flavour: str
    text: str
    args: dict[str, str]
    parents: tuple[tuple[Framework, str | None], ...]
    bases: tuple[str, ...]

    @property
    def repo(self) -> str:
        return image_repo(self.framework.name, self.variant)


def project_image(ref: str, frameworks: dict[str, Framework]) -> tuple[Framework, str | None] | None:
    """(framework, variant) when `ref` names a project image (`lstm-bench/<name>[-<variant>]`, no tag), else None."""
    prefix = f"{LABEL_PREFIX}/"
    if not ref.startswith(prefix) or ":" in ref or "@" in ref:
        return None
    name = ref[len(prefix):]
    if name in frameworks and not frameworks[name].meta.variants:
        return frameworks[name], None
    for fw in frameworks.values():
        for v in fw.meta.variants:
            if name == f"{fw.name}-{v}":
                return fw, v
    return None


def recipe(root: Path, frameworks: dict[str, Framework], framework: Framework, variant: str | None,
           flavour: str, build_args: dict[str, str]) -> Recipe:
    text = framework.dockerfile.read_text()
    tail = root / TAIL_DOCKERFILE
    if not any(i.keyword == "ENTRYPOINT" for i in parse_dockerfile(text)) and tail.is_file():
        text = text.rstrip("\n") + "\n\n" + tail.read_text()
    args = {**build_args, "FLAVOUR": flavour}
    instructions = parse_dockerfile(text)
    declared = {i.args.split("=")[0].strip() for i in instructions if i.keyword == "ARG"}
    # Only declared arguments: an undeclared one changes nothing in the image but its hash, so variants of a
    # Dockerfile that ignores VARIANT (the workload reads the variant from its params) share one image, built once.
    if variant and "VARIANT" in declared:
        args["VARIANT"] = variant
    if "WORKLOAD" in declared:
        args["WORKLOAD"] = framework.workload_module
    parents, bases = [], []
    for base in base_images(instructions, {**arg_defaults(instructions), **args}):
        found = project_image(base, frameworks)
        if found is not None:
            parents.append(found)
        elif base.startswith(f"{LABEL_PREFIX}/") and ":" not in base.rpartition("/")[2]:
            raise ValueError(f"{framework.dockerfile}: FROM {base}: no images/<name>/Dockerfile (or variant) of "
                             "that name")
        else:
            bases.append(base)
    return Recipe(framework, variant, flavour, text, args, tuple(parents), tuple(bases))


def with_parent_tags(text: str, args: dict[str, str], frameworks: dict[str, Framework],
                     tags: dict[tuple[str, str | None], str]) -> str:
    """The Dockerfile with each `FROM <project image>` replaced by the concrete tag built for it."""
    defaults = arg_defaults(parse_dockerfile(text))
    out = []
    for line in text.splitlines():
        m = _FROM_RE.match(line)
        if m:
            found = project_image(_substitute(m.group(2), {**defaults, **args}), frameworks)
            if found is not None:
                line = f"{m.group(1)}{tags[(found[0].name, found[1])]}{m.group(3)}"
        out.append(line)
    return "\n".join(out) + "\n"


def build_order(root: Path, frameworks: dict[str, Framework], wanted: list[tuple[str, str | None]], flavour: str,
                build_args: dict[str, str]) -> list[Recipe]:
    """Recipes for `wanted` and every project image they start FROM, parents first; a cycle is an error."""
    done: dict[tuple[str, str | None], Recipe] = {}
    visiting: list[tuple[str, str | None]] = []

    def visit(key: tuple[str, str | None]) -> None:
        if key in done:
            return
        if key in visiting:
            chain = " -> ".join(image_repo(*k) for k in [*visiting[visiting.index(key):], key])
            raise ValueError(f"images start FROM each other in a cycle: {chain}")
        visiting.append(key)
        r = recipe(root, frameworks, frameworks[key[0]], key[1], flavour, build_args)
        for fw, v in r.parents:
            visit((fw.name, v))
        visiting.pop()
        done[key] = r

    for key in wanted:
        visit(key)
    return list(done.values())


# ---------------------------------------------------------------- building


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    cached: bool
    duration_s: float
    flavour: str = "gpu"
    parents: tuple[str, ...] = ()  # tags of the project images it was built FROM

    def details(self) -> dict[str, Any]:
        return {"tag": self.tag, "id": self.image_id, "cached": self.cached, "flavour": self.flavour,
                "parents": list(self.parents)}


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
    flavour: str = "gpu",
    frameworks: dict[str, Framework] | None = None,
) -> BuiltImage:
    """Return the image for this framework variant and flavour, building it (and first the project images it
    starts FROM) only when its content hash is new."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r}: expected one of {', '.join(FLAVOURS)}")
    started = time.monotonic()
    # Every framework under images/ can be a parent, not only those a plan selected.
    known = {**discover(root / "images"), **(frameworks or {}), framework.name: framework}
    try:
        order = build_order(root, known, [(framework.name, variant)], flavour, build_args)
    except (OSError, ValueError) as exc:
        raise BuildFailed(f"cannot prepare build context: {exc}", str(exc)) from None
    built: dict[tuple[str, str | None], BuiltImage] = {}
    for r in order:
        deadline_left = timeout_s - (time.monotonic() - started)
        built[(r.framework.name, r.variant)] = _ensure_one(client, root, known, r, built, deadline_left, on_line,
                                                           limit_s=timeout_s)
    last = built[(framework.name, variant)]
    return BuiltImage(last.tag, last.image_id, last.cached and all(b.cached for b in built.values()),
                      time.monotonic() - started, flavour, last.parents)


def _ensure_one(client: Any, root: Path, frameworks: dict[str, Framework], r: Recipe,
                built: dict[tuple[str, str | None], BuiltImage], timeout_s: float,
                on_line: Callable[[str], None] | None, limit_s: float | None = None) -> BuiltImage:
    started = time.monotonic()
    deadline = started + timeout_s  # context assembly, hashing and the tar count against the build time limit too
    limit = limit_s if limit_s is not None else timeout_s
    parent_tags = {(fw.name, v): built[(fw.name, v)].tag for fw, v in r.parents}
    text = with_parent_tags(r.text, r.args, frameworks, parent_tags)
    try:
        files = context_files(root, parse_dockerfile(text), r.args, deadline)
        base_ids = [built[(fw.name, v)].image_id for fw, v in r.parents]
        for base in r.bases:
            try:
                base_ids.append(client.images.get(base).id)
            except Exception:  # absent locally: the build pulls (or fails) and the tag alone identifies it
                base_ids.append(base)
        digest = content_hash(root, files, r.args, base_ids, text, deadline)
    except TimeoutError as exc:
        raise BuildFailed(f"build timed out after {limit:g} s: {exc}", str(exc)) from None
    except (OSError, ValueError) as exc:
        raise BuildFailed(f"cannot prepare build context: {r.framework.dockerfile}: {exc}", str(exc)) from None
    tag = f"{r.repo}:{r.flavour}-{digest[:16]}"
    parents = tuple(parent_tags.values())
    try:
        image = client.images.get(tag)
        return BuiltImage(tag, image.id, True, time.monotonic() - started, r.flavour, parents)
    except Exception as exc:
        if type(exc).__name__ != "ImageNotFound":
            raise
    if timeout_s <= 0:
        raise BuildFailed(f"build of {tag} not started: the build time limit is used up", "")
    dockerfile = str(r.framework.dockerfile.resolve().relative_to(root.resolve()))
    labels = {
        f"{LABEL_PREFIX}.managed": "true",
        f"{LABEL_PREFIX}.framework": r.framework.name,
        f"{LABEL_PREFIX}.flavour": r.flavour,
        f"{LABEL_PREFIX}.content-hash": digest,
    }
    try:
        context = build_context(root, files, (dockerfile, with_labels(text, labels)), deadline)
    except TimeoutError as exc:
        raise BuildFailed(f"build timed out after {limit:g} s: {exc}", str(exc)) from None
    except OSError as exc:
        raise BuildFailed(f"cannot prepare build context: {r.framework.dockerfile}: {exc}", str(exc)) from None
    with context:
        _build(client, context, dockerfile, tag, r.args, deadline - time.monotonic(), on_line, limit)
    image = client.images.get(tag)
    return BuiltImage(tag, image.id, False, time.monotonic() - started, r.flavour, parents)


def with_labels(text: str, labels: dict[str, str]) -> str:
    """The Dockerfile with one `LABEL` instruction at its end (its last stage). Not the engine's `labels=` option:
    the legacy builder turns that into one instruction, one container and one layer commit per label, each costing
    seconds to a minute on top of a multi-GB image on a slow storage driver."""
    pairs = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return f"{text.rstrip(chr(10))}\nLABEL {pairs}\n"


# The registry-free route (README, "Without a GPU, without Docker, without a registry"), named where a pull fails.
# It fits the console's one line (ui.HEADLINE_CHARS) after a base image's name.
NO_REGISTRY_HINT = ("no registry? scripts/make-base-image.sh --python, "
                    "--build-arg BASE_IMAGE=lstm-bench/base:python3.11-slim-bookworm")


def _cause_first(what: str, step: str, log: str, args: dict[str, str]) -> str:
    """A build error with its cause as the first line: the base image that could not be pulled (and the way
    round it), or the last error line the failed step printed; then the step and the engine's message."""
    if re.search(r" : FROM\s", step):
        ref = _substitute(step.split(" : FROM", 1)[1].split()[0], args)
        return f"cannot pull {ref}: {NO_REGISTRY_HINT}\n{what}"
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Step ")]
    cause = root_cause("\n".join(lines[starts[-1] + 1:] if starts else lines))  # this step's output only
    return f"{cause}\n{what}" if cause else what


def _build(client: Any, context: IO[bytes], dockerfile: str, tag: str, args: dict[str, str],
           timeout_s: float, on_line: Callable[[str], None] | None, limit_s: float) -> None:
    """Build within `timeout_s` (what is left of the framework's build time limit, `limit_s`, which errors name)."""
    tail = LogTail(lines=40)
    deadline = time.monotonic() + timeout_s
    try:
        stream = client.api.build(
            fileobj=context,
            custom_context=True,
            dockerfile=dockerfile,
            tag=tag,
            buildargs=args,
            decode=True,
            rm=True,
            forcerm=True,
            timeout=max(1, int(timeout_s)),
        )
        step = ""  # the legacy builder announces each instruction as "Step N/M : INSTRUCTION"
        for chunk in stream:
            if "error" in chunk:
                log = tail.text()
                tail.feed(str(chunk["error"]) + "\n")
                error = strip_ansi(str(chunk["error"])).strip()
                what = f"{step} failed: {error}" if step else error
                raise BuildFailed(_cause_first(what, step, log, args), tail.text())
            text = chunk.get("stream")
            if text:
                if text.startswith("Step "):
                    step = " ".join(strip_ansi(text).split())
                tail.feed(text)
                if on_line:
                    on_line(text.rstrip())
            if time.monotonic() > deadline:
                raise BuildFailed(f"build timed out after {limit_s:g} s", tail.text())
    except BuildFailed:
        raise
    except Exception as exc:  # read timeouts (a silent, hanging step) and API errors
        text = str(exc)
        if "timed out" in text.lower():
            text = f"build timed out after {limit_s:g} s ({text})"
        raise BuildFailed(text, tail.text()) from None
