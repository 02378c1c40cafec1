"""The matrix file: schema (pydantic), loading with file:line errors, and command-line overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.errors import InputError
from orchestrator.frameworks import NAME_RE, compose_bounded, read_input
from orchestrator.workload_result import MAX_TIMES
from orchestrator.yamlloc import line_of as _line_of
from orchestrator.yamlloc import most_specific as _most_specific
from orchestrator.yamlloc import one_line as _one_line
from orchestrator.yamlloc import user_path as _user_path

# Timed batches per cell: far beyond any useful median interval, and what one result file may hold.
MAX_ITERS = MAX_TIMES // 2

MAX_MATRIX_BYTES = 1 << 20
# Sane maxima: each far beyond any real LSTM benchmark, each small enough that nothing downstream overflows (a
# timeout of 1e10 s is out of the engine's timestamp range) or expands without bound.
MAX_SECONDS = 7 * 24 * 3600.0
MAX_SIZE = 1 << 16
MAX_VOCAB = 1 << 24
MAX_REPEATS = 1000
MAX_CELLS = 10_000  # cells per framework variant: checked on the matrix's own counts before anything is expanded
# Aliases let a tiny YAML document describe a huge tree ("billion laughs"); we refuse past this many nodes.
MAX_NODES = 20_000
MEMORY_RE = re.compile(r"^(auto|[1-9][0-9]{0,15}[bkmg]?)$", re.IGNORECASE)
# Keys `--set` may override: every scalar of the schema.
SCALAR_KEYS = (
    "batch",
    "seq_len",
    "vocab",
    "classes",
    "lr",
    "warmup",
    "iters",
    "seed",
    "device",
    "repeats",
    "timeout_s",
    "build_timeout_s",
    "memory",
    "results_max_mb",
    "pids_limit",
    "data_batches",
    "name",
    "slots",
    "registry",
    "precision",  # an axis, but `--set precision=bf16` (one) or `--set precision=[fp32,bf16]` is the common case
    "impls",  # `default`, `all` or `[fused, loop]`: the only CLI way to run a framework's other impls
)
PRECISIONS = ("fp32", "tf32", "bf16")  # workloads/harness.py PRECISIONS; docs/matrix.md "precision"
Precision = Literal["fp32", "tf32", "bf16"]


class FrameworkEntry(BaseModel):
    """One framework of the matrix; `variants` narrows a framework's declared variants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_RE.pattern)
    variants: tuple[str, ...] | None = None

    @field_validator("variants")
    @classmethod
    def _some_unique_variants(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        # An empty list would silently drop the framework; a repeated variant would run the same cell twice.
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("expected at least one variant, each listed once")
        return value

    @classmethod
    def parse(cls, value: Any) -> Any:
        # "keras" or "keras:jax" is shorthand for {name: keras, variants: [jax]}.
        if isinstance(value, str):
            name, _, variant = value.partition(":")
            return {"name": name, "variants": [variant]} if variant else {"name": name}
        return value


class Matrix(BaseModel):
    """The experiment. Defaults are the original 2016 benchmark's parameters (see docs/matrix.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "lstm-bench"
    frameworks: Literal["all"] | tuple[FrameworkEntry, ...] = "all"
    hidden: tuple[Annotated[int, Field(gt=0, le=MAX_SIZE)], ...] = (128, 256, 512, 1024, 2048)
    impls: Literal["default", "all"] | tuple[str, ...] = "default"
    precision: tuple[Precision, ...] = ("fp32",)
    batch: int = Field(default=128, gt=0, le=MAX_SIZE)
    seq_len: int = Field(default=64, gt=0, le=MAX_SIZE)
    vocab: int = Field(default=10000, gt=0, le=MAX_VOCAB)
    classes: int = Field(default=5, ge=2, le=MAX_VOCAB)
    lr: float = Field(default=0.001, gt=0, le=1e6, allow_inf_nan=False)
    warmup: int = Field(default=2, ge=0, le=MAX_ITERS)
    iters: int = Field(default=50, gt=0, le=MAX_ITERS)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)  # numpy's seeds
    data_batches: int = Field(default=4, gt=0, le=MAX_SIZE)
    device: Literal["gpu", "cpu"] = "gpu"
    gpus: Literal["all"] | tuple[int, ...] = "all"
    slots: int = Field(default=1, gt=0, le=1024)
    repeats: int = Field(default=1, gt=0, le=MAX_REPEATS)
    timeout_s: float = Field(default=1800.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    build_timeout_s: float = Field(default=3600.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    memory: str = "auto"  # the host's RAM less a reserve (runners/docker.py memory_limit), or a size
    results_max_mb: int = Field(default=128, gt=0, le=1 << 20)  # the cell's /results cap (runners/quota.py)
    pids_limit: int = Field(default=4096, gt=0, le=1 << 22)
    registry: str | None = None

    @field_validator("frameworks", mode="before")
    @classmethod
    def _frameworks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [FrameworkEntry.parse(v) for v in value]
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _one_precision(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value  # `precision: bf16` is a one-value axis

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not MEMORY_RE.match(value):
            raise ValueError("expected a size like 512m or 16g, or auto")
        return value.lower()

    @field_validator("hidden", "gpus", "impls", "precision")
    @classmethod
    def _non_empty_unique(cls, value: Any) -> Any:
        if isinstance(value, tuple):
            if not value:
                raise ValueError("expected at least one value")
            if len(set(value)) != len(value):
                raise ValueError("values must be unique")
        return value

    @model_validator(mode="after")
    def _bounded_plan(self) -> Matrix:
        per_variant = len(self.hidden) * len(self.precision) * self.repeats
        if per_variant > MAX_CELLS:
            raise ValueError(f"hidden sizes x precisions x repeats is {per_variant} cells per framework variant, "
                             f"over {MAX_CELLS}")
        return self

    @model_validator(mode="after")
    def _unique_frameworks(self) -> Matrix:
        if isinstance(self.frameworks, tuple):
            names = [f.name for f in self.frameworks]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"framework listed twice: {', '.join(dup)}")
            if not names:
                raise ValueError("expected at least one framework, or 'all'")
        return self


def memory_bytes(text: str) -> int:
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    unit = text[-1].lower()
    return int(text[:-1]) * units[unit] if unit in units else int(text)


# ---------------------------------------------------------------------------------------------- loading


def parse_matrix(text: str, source: str, overrides: dict[str, Any] | None = None) -> Matrix:
    """Validate a matrix document; raise InputError with 'file:line: key: problem' (one line) on bad input."""
    try:
        return _parse_matrix(text, source, overrides)
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise InputError(_one_line(f"{source}: document too deeply nested")) from None
    except InputError as exc:
        raise InputError(_one_line(str(exc))) from None


def _parse_matrix(text: str, source: str, overrides: dict[str, Any] | None) -> Matrix:
    if len(text.encode()) > MAX_MATRIX_BYTES:
        raise InputError(f"{source}: file is larger than {MAX_MATRIX_BYTES} bytes")
    try:
        root = compose_bounded(text, MAX_NODES)
        raw = yaml.safe_load(text)
    except ValueError as exc:
        raise InputError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{where}: not valid YAML: {problem}") from None
    if raw is None:
        raise InputError(f"{source}: the matrix is empty; expected a mapping with at least 'frameworks'")
    if not isinstance(raw, dict):
        raise InputError(f"{source}:1: expected a mapping of keys, got {type(raw).__name__}")
    raw = {**raw, **(overrides or {})}
    try:
        return Matrix.model_validate(raw)
    except ValidationError as exc:
        err = _most_specific(exc.errors())
        loc = _user_path(tuple(err["loc"]))
        key = ".".join(str(p) for p in loc) or "(top level)"
        from_cli = bool(overrides) and loc and loc[0] in overrides
        line = None if from_cli else _line_of(root, loc)
        where = "command line" if from_cli else (f"{source}:{line}" if line else source)
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        raise InputError(f"{where}: key '{key}': {err['msg']}{shown}") from None
    except RecursionError:
        raise InputError(f"{source}: document too deeply nested") from None


def load_matrix(path: Path, overrides: dict[str, Any] | None = None) -> Matrix:
    try:
        text = read_input(path, MAX_MATRIX_BYTES)  # its type and size are checked before a byte is read
    except FileNotFoundError:
        raise InputError(f"{path}: no such matrix file") from None
    return parse_matrix(text, str(path), overrides)


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs; VALUE is read as YAML so numbers and booleans keep their type."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        if key not in SCALAR_KEYS:
            raise InputError(f"--set {key}: unknown key; expected one of {', '.join(SCALAR_KEYS)}")
        try:
            out[key] = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            out[key] = value
        if key in {"memory", "name", "registry"} and out[key] is not None:
            out[key] = str(value)
    return out
