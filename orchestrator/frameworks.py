"""Discovery of frameworks: every `images/<name>/Dockerfile` is one; `framework.yaml` beside it is optional.

framework.yaml (all keys optional, unknown keys refused; the guide is docs/adding-a-framework.md):

    label: keras                  # row label in the report; variants show as "keras (jax)"
    workload: keras_lstm          # module under workloads/ (default: the folder name with '-' -> '_')
    variants: [tensorflow, jax]   # one image per variant, built with --build-arg VARIANT=<variant>
    impls: [fused, loop]          # implementation paths the workload offers; the first is the default
    impl_notes:                   # what each impl runs, one line each (the report's "Impls" legend)
      fused: nn.LSTM (cuDNN on a GPU)
    python: "3.11"                # the image's Python (used by the static pin check)
    original_row: keras (tensorflow)   # the 2016 table's row this one continues, if any
    note: free text shown in the report (e.g. why a GPU cannot run it)
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from orchestrator.errors import InputError
from orchestrator.yamlloc import describe, one_line

# Names become image tags, container labels and directory names: keep them boring.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
WORKLOAD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUILD_CONSTRAINTS = "build-constraints.txt"
MAX_IMPL_NOTE = 300  # one line in the report's legend
# Variants and impls end up in image tags, cell ids and so directory names: the framework names' boring alphabet.
SafeName = Annotated[str, Field(pattern=NAME_RE.pattern)]


class FrameworkMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str | None = None
    workload: str | None = Field(default=None, pattern=WORKLOAD_RE.pattern)
    variants: tuple[SafeName, ...] = ()
    impls: tuple[SafeName, ...] = ()
    # After `impls`: its validator sees the declared names.
    impl_notes: dict[SafeName, Annotated[str, Field(max_length=MAX_IMPL_NOTE)]] = {}
    python: str | None = None
    original_row: str | None = None
    note: str | None = None

    @field_validator("impl_notes")
    @classmethod
    def _notes_name_declared_impls(cls, notes: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        declared = info.data.get("impls", ())
        unknown = [name for name in notes if name not in declared]
        if unknown:  # a typo would leave an impl undescribed and describe one that never runs
            raise ValueError(f"describes {', '.join(unknown)}, not among impls [{', '.join(declared)}]")
        return notes


META_KEYS = tuple(FrameworkMeta.model_fields)


@dataclass(frozen=True)
class Framework:
    name: str
    directory: Path
    meta: FrameworkMeta

    @property
    def dockerfile(self) -> Path:
        return self.directory / "Dockerfile"

    @property
    def workload_module(self) -> str:
        return self.meta.workload or self.name.replace("-", "_").replace(".", "_")

    @property
    def workload_file(self) -> Path:
        """workloads/<module>.py beside the images/ folder this framework was found in."""
        return self.directory.parent.parent / "workloads" / f"{self.workload_module}.py"

    @property
    def label(self) -> str:
        return self.meta.label or self.name

    @property
    def cpu_requirements(self) -> Path | None:
        path = self.directory / "requirements-cpu.txt"
        return path if path.is_file() else None

    @property
    def build_constraints(self) -> Path | None:
        """build-constraints.txt: the versions pip and uv build its sdists with (e.g. an old setuptools)."""
        path = self.directory / BUILD_CONSTRAINTS
        return path if path.is_file() else None

    def row_label(self, variant: str | None) -> str:
        return f"{self.label} ({variant})" if variant else self.label


def check_name(name: str, what: str = "framework name") -> str:
    if not NAME_RE.match(name):
        raise InputError(
            f"invalid {what} {name!r}: expected lowercase letters, digits, '-', '_' or '.', starting with a "
            "letter or digit (no '/', '..', spaces or shell characters)"
        )
    return name


MAX_META_BYTES = 64 << 10
MAX_META_NODES = 2_000


def read_input(path: Path, max_bytes: int) -> str:
    """A small input file as text, checked before it is read: a regular file (not /dev/zero, not a FIFO, whose
    read would never end) of at most `max_bytes` (a huge sparse file is refused by its size); one line otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file (a device, FIFO or directory); expected a YAML file")
        if st.st_size > max_bytes:
            raise InputError(f"{path}: file is {st.st_size} bytes, larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        while (size := sum(map(len, chunks))) <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - size)):
            chunks.append(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InputError(f"{path}: file is larger than {max_bytes} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: cannot read: not UTF-8 (byte {exc.start})") from None


def compose_bounded(text: str, max_nodes: int) -> yaml.Node | None:
    """The YAML node tree, refused (ValueError) past `max_nodes` nodes, aliases expanded ("billion laughs"), or
    too deep for the composer (it recurses once per level); counted without recursion."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ValueError(f"document too deeply nested (over {max_nodes} nodes)") from None
    stack, budget = ([root] if root is not None else []), max_nodes
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise ValueError(f"document too large or too deeply nested (over {max_nodes} nodes)")
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(x for pair in node.value for x in pair)
    return root


def _load_meta(path: Path) -> FrameworkMeta:
    """framework.yaml, validated; bad input is one line naming file, line, key and what was expected (exit 2)."""
    if not path.is_file():
        return FrameworkMeta()
    try:
        text = read_input(path, MAX_META_BYTES)
        root = compose_bounded(text, MAX_META_NODES)
        raw = yaml.safe_load(text) or {}
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(one_line(f"{where}: not valid YAML: {problem}")) from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}:1: expected a mapping of keys ({', '.join(META_KEYS)}), got {type(raw).__name__}")
    try:
        return FrameworkMeta.model_validate(raw)
    except ValidationError as exc:
        message = describe(exc, root, str(path), known_keys=META_KEYS)
        raise InputError(f"{message} (see docs/adding-a-framework.md, framework.yaml)") from None


def discover(images_dir: Path) -> dict[str, Framework]:
    """Every sub-folder of images/ holding a Dockerfile, sorted by name."""
    found: dict[str, Framework] = {}
    if not images_dir.is_dir():
        return found
    for child in sorted(images_dir.iterdir()):
        if not (child / "Dockerfile").is_file() or not NAME_RE.match(child.name):
            continue
        found[child.name] = Framework(child.name, child, _load_meta(child / "framework.yaml"))
    return found
