"""Expansion of a validated matrix into cells: frameworks x variants x impls x precisions x hidden sizes x repeats."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InputError
from orchestrator.frameworks import Framework, check_name
from orchestrator.matrix import Matrix
from orchestrator.report.baseline import load_baseline, original_row_for

# Matrix keys that reach the workload unchanged (the rest steer the orchestrator).
WORKLOAD_KEYS = ("batch", "seq_len", "vocab", "classes", "lr", "warmup", "iters", "seed", "device", "data_batches")


# The end of every cell id (id_tail): hidden, the cell's own batch when it has one, repeat.
ID_TAIL = re.compile(r"-h([0-9]+)(?:-b([0-9]+))?-r([0-9]+)$")


def id_tail(hidden: int, batch: int | None, repeat: int) -> list[str]:
    """The last parts of a cell id: h<hidden>[-b<batch>]-r<repeat>. The batch part sits between two fixed-shape
    parts, so an id says unambiguously whether its cell has a batch of its own."""
    return [f"h{hidden}", *([f"b{batch}"] if batch is not None else []), f"r{repeat}"]


@dataclass(frozen=True)
class Cell:
    framework: str
    variant: str | None
    impl: str
    hidden: int
    repeat: int
    precision: str = "fp32"
    # The cell's own batch size; None: the matrix's. Only the capacity search by batch sets it (one run, several
    # batch sizes), so every other cell keeps the id and params it always had.
    batch: int | None = None

    @property
    def image_key(self) -> tuple[str, str | None]:
        """Cells sharing this key run in the same image."""
        return (self.framework, self.variant)

    @property
    def cell_id(self) -> str:
        parts = [self.framework]
        if self.variant:
            parts.append(self.variant)
        if self.impl != "default":
            parts.append(self.impl)
        if self.precision != "fp32":  # fp32 cells keep the ids they had before the precision axis
            parts.append(self.precision)
        return "-".join([*parts, *id_tail(self.hidden, self.batch, self.repeat)])

    def params(self, matrix: Matrix) -> dict[str, Any]:
        """The contract's params.json for this cell (docs/contract.md)."""
        base = {k: getattr(matrix, k) for k in WORKLOAD_KEYS}
        return {
            "framework": self.framework,
            "variant": self.variant,
            "impl": self.impl,
            "hidden": self.hidden,
            "precision": self.precision,
            **base,
            "seed": matrix.seed,  # identical across repeats: the same model and data, rerun
            "batch": matrix.batch if self.batch is None else self.batch,
        }


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    frameworks: dict[str, Framework]  # only those the plan uses
    cells: tuple[Cell, ...]


def _variants(fw: Framework, wanted: tuple[str, ...] | None) -> list[str | None]:
    declared = list(fw.meta.variants)
    if wanted is None:
        return list(declared) or [None]
    if not declared:
        raise InputError(f"framework '{fw.name}' declares no variants, but the matrix asks for {list(wanted)}")
    unknown = [v for v in wanted if v not in declared]
    if unknown:
        raise InputError(
            f"framework '{fw.name}': unknown variant(s) {unknown}; "
            f"it declares {declared} (images/{fw.name}/framework.yaml)"
        )
    return list(wanted)


def _impls(fw: Framework, wanted: Any) -> list[str]:
    declared = list(fw.meta.impls)
    if not declared:
        return ["default"]
    if wanted == "default":
        return declared[:1]
    if wanted == "all":
        return declared
    chosen = [i for i in wanted if i in declared]
    return chosen or declared[:1]


def all_in_order(available: dict[str, Framework]) -> list[str]:
    """`frameworks: all`: the frameworks continuing a 2016 row first, in the 2016 table's order, then the rest by name.

    So a drop-in folder joins the main job (matrix.yaml) after the original rows, without editing the matrix.
    """
    baseline = load_baseline()
    rank = {row: i for i, row in enumerate(baseline.rows)}
    after = len(rank)

    def position(fw: Framework) -> tuple[int, str]:
        rows = [original_row_for(fw.row_label(v), fw, v, baseline) for v in (fw.meta.variants or (None,))]
        return min((rank[r] for r in rows if r is not None), default=after), fw.name

    return sorted(available, key=lambda name: position(available[name]))


def missing_workloads(plan: Plan) -> list[str]:
    """One line per framework of the plan whose workload module does not exist (its cells could only fail)."""
    return [
        f"framework '{fw.name}': its workload module {fw.workload_file.relative_to(fw.directory.parent.parent)} "
        f"does not exist (framework.yaml `workload:` names it; default: the folder name with '-' -> '_')"
        for fw in plan.frameworks.values()
        if not fw.workload_file.is_file()
    ]


def check_impls(wanted: Any, available: dict[str, Framework]) -> None:
    """A listed impl that no framework declares is a typo: without this it would be dropped silently and every
    framework would run its default. (An impl only some frameworks declare is normal: the others skip it.)"""
    if wanted in ("default", "all"):
        return
    declared = sorted({i for fw in available.values() for i in fw.meta.impls})
    unknown = [i for i in wanted if i not in declared]
    if unknown:
        raise InputError(f"impls: {', '.join(repr(i) for i in unknown)} is no framework's impl "
                         f"(declared in images/*/framework.yaml: {', '.join(declared) or 'none'})")


def expand(matrix: Matrix, available: dict[str, Framework]) -> Plan:
    check_impls(matrix.impls, available)
    if matrix.frameworks == "all":
        entries: list[tuple[str, tuple[str, ...] | None]] = [(name, None) for name in all_in_order(available)]
    else:
        entries = [(e.name, e.variants) for e in matrix.frameworks]
    used: dict[str, Framework] = {}
    cells: list[Cell] = []
    for name, wanted in entries:
        check_name(name)
        if name not in available:
            known = ", ".join(available) or "none"
            raise InputError(f"unknown framework '{name}': no images/{name}/Dockerfile (found: {known})")
        fw = used[name] = available[name]
        for variant in _variants(fw, wanted):
            for impl in _impls(fw, matrix.impls):
                for precision in matrix.precision:
                    for hidden in matrix.hidden:
                        for repeat in range(matrix.repeats):
                            cells.append(Cell(name, variant, impl, hidden, repeat, precision))
    return Plan(matrix, used, tuple(cells))
