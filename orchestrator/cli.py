"""Command line: argument parsing and the pipeline's steps in order, nothing else.

    python -m orchestrator MATRIX [options]          run a matrix (same as `run MATRIX`)
    python -m orchestrator capacity MATRIX [options] the largest hidden (or batch) size each framework trains
    python -m orchestrator report RUN_DIR            re-render the report from stored results
    python -m orchestrator compare RUN_A RUN_B       per-cell ratios and verdicts over fresh processes
    python -m orchestrator clean                     remove containers left by a killed run
    python -m orchestrator build MATRIX [options]    build (and --push) the matrix's images, run no cell
    python -m orchestrator new NAME                  scaffold a new framework (docs/adding-a-framework.md)

Exit codes: 0 run completed (failed cells included), 1 the orchestration failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator import PROJECT_ROOT
from orchestrator.errors import InputError, OrchestrationError
from orchestrator.frameworks import check_name, discover
from orchestrator.images import parse_build_args
from orchestrator.matrix import Matrix, load_matrix, parse_set
from orchestrator.plan import Plan, expand, missing_workloads
from orchestrator.results import Status
from orchestrator.text import visible

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
SUBCOMMANDS = ("run", "capacity", "report", "compare", "clean", "build", "new")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message}")


def run_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m orchestrator",
        description="Run the LSTM benchmark matrix: one image per framework (images/<name>/Dockerfile), one fresh "
        "container per cell, one JSON result per cell, then a report. Other commands: build MATRIX | capacity MATRIX | "
        "report RUN_DIR | "
        "compare RUN_A RUN_B | clean | new NAME.",
        epilog="Exit codes: 0 run completed (classified cell failures included), 1 orchestration failed "
        "(e.g. no Docker engine), 2 bad input, 130 interrupted (finished cells kept; rerun with --resume).",
    )
    p.add_argument("matrix", type=Path, help="the matrix YAML file (e.g. matrix.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print one line per cell and run nothing")
    p.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run only these frameworks (any folder under images/); NAME:VARIANT picks one variant",
    )
    p.add_argument("--hidden", metavar="N[,N]", help="override the hidden-size axis")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scalar matrix key, precision or impls, e.g. --set batch=4 --set impls=all (repeatable)",
    )
    p.add_argument(
        "--runner",
        choices=("docker", "local", "ray"),
        default="docker",
        help="docker (default): one container per cell; local: a subprocess per cell, no Docker; "
        "ray: cells as Ray tasks on a cluster",
    )
    p.add_argument("--device", choices=("gpu", "cpu"), help="override the matrix's device")
    p.add_argument("--gpus", metavar="all|0,1,3", help="GPUs to use, one cell per GPU at a time")
    p.add_argument("--slots", type=int, metavar="N", help="with --device cpu: cells run N at a time")
    p.add_argument(
        "--pin-cpus",
        action="store_true",
        help="with --device cpu and the docker runner: give each slot its own equal share of the CPUs (cpuset)",
    )
    p.add_argument("--out", type=Path, help="run directory, new or empty (default: reports/run-<timestamp>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish the run in --out: only its cells without a record run (same matrix, build args and images)",
    )
    p.add_argument(
        "--build-arg",
        dest="build_args",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="docker build argument for every image, e.g. BASE_IMAGE=lstm-bench/base:bookworm-numpy",
    )
    p.add_argument(
        "--python",
        default="venv",
        metavar="venv|current|PATH",
        help="local runner: per-framework cached venvs (default), this interpreter, or a given Python",
    )
    p.add_argument("--ray-address", default=None, metavar="auto|ray://HOST:PORT", help="ray runner: cluster address")
    p.add_argument(
        "--ray-retries",
        type=int,
        default=2,
        metavar="N",
        help="ray runner: run a cell again up to N times when its node or worker dies (default 2)",
    )
    p.add_argument(
        "--gpu-settle",
        nargs="?",
        type=float,
        const=50.0,
        default=None,
        metavar="MAX_C",
        help="GPU runs: before each cell wait (at most 300 s) until its GPU is idle (<= 5%% busy) and at most MAX_C "
        "°C (default 50); off unless given. Only reads NVML: clocks and power limits are never changed",
    )
    p.add_argument("--no-report", action="store_true", help="skip rendering the report at the end")
    p.add_argument("-q", "--quiet", action="store_true", help="no live progress, only the summary")
    return p


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def build_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = parse_set(args.sets)
    if args.hidden:
        try:
            overrides["hidden"] = [int(h) for h in _csv(args.hidden)]
        except ValueError:
            raise InputError(f"--hidden {args.hidden!r}: expected integers separated by commas") from None
    if args.only:
        # "keras:jax,keras:torch" is one framework with two variants; a bare "keras" means all of its variants.
        chosen: dict[str, list[str] | None] = {}
        for item in _csv(args.only):
            name, _, variant = item.partition(":")
            check_name(name)
            so_far = chosen.get(name, [])
            if not variant or so_far is None:
                chosen[name] = None
            elif variant not in so_far:
                chosen[name] = [*so_far, variant]
        overrides["frameworks"] = [{"name": n, **({"variants": v} if v else {})} for n, v in chosen.items()]
    if args.device:
        overrides["device"] = args.device
    if args.gpus:
        ids = _csv(args.gpus)
        if args.gpus != "all" and not all(g.isdigit() for g in ids):
            raise InputError(f"--gpus {args.gpus!r}: expected 'all' or GPU indices separated by commas, e.g. 0,1,3")
        overrides["gpus"] = "all" if args.gpus == "all" else [int(g) for g in ids]
    if args.slots is not None:
        overrides["slots"] = args.slots
    return overrides


def make_plan(args: argparse.Namespace) -> Plan:
    matrix = load_matrix(args.matrix, build_overrides(args))
    return expand(matrix, discover(PROJECT_ROOT / "images"))


def dry_run(plan: Plan) -> int:
    """One line per cell; then one error line per framework that could not run (exit 2), as the static check does."""
    many = plan.matrix.repeats > 1
    for c in plan.cells:
        name = f"{c.framework}:{c.variant}" if c.variant else c.framework
        extra = (f" impl={c.impl}" if c.impl != "default" else "") + (f" repeat={c.repeat}" if many else "")
        print(f"{name} hidden={c.hidden}{extra}")
    problems = missing_workloads(plan)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_INPUT if problems else EXIT_OK


def slots_for(matrix: Matrix, runner: Any = None) -> list[str | None]:
    """One slot per GPU (its id), N CPU slots, or the runner's own (Ray): never two cells on one slot."""
    from orchestrator.scheduler import slots_for as scheduler_slots

    client = getattr(runner, "client", None)
    return scheduler_slots(matrix, runner, (lambda: client) if client is not None else None)


def make_runner(args: argparse.Namespace, matrix: Matrix, run_id: str) -> Any:
    if args.runner == "local":
        from orchestrator.runners.local import LocalRunner

        return LocalRunner(device=matrix.device, python=args.python)
    if args.runner == "ray":
        from orchestrator.runners.ray import RayRunner  # type: ignore[import-not-found]

        return RayRunner.from_args(args, matrix, run_id)
    from orchestrator.runners.docker import DockerRunner

    cpusets = None
    if getattr(args, "pin_cpus", False) and matrix.device == "cpu":
        from orchestrator.scheduler import cpusets as split_cpus

        cpusets = split_cpus(slots_for(matrix))
    return DockerRunner(
        run_id=run_id,
        device=matrix.device,
        memory=matrix.memory,
        pids_limit=matrix.pids_limit,
        build_args=parse_build_args(args.build_args),
        build_timeout_s=matrix.build_timeout_s,
        cpusets=cpusets,
    )


def cmd_run(argv: list[str], console: Console) -> int:
    args = run_parser().parse_args(argv)
    plan = make_plan(args)
    check_gpu_settle(args, plan)
    if args.dry_run:
        return dry_run(plan)
    return run_session(args, argv, console, plan)


def check_gpu_settle(args: argparse.Namespace, plan: Plan) -> None:
    if args.gpu_settle is not None and (plan.matrix.device != "gpu" or not 0 < args.gpu_settle <= 120):
        raise InputError(f"--gpu-settle {args.gpu_settle:g}: needs --device gpu and a temperature in (0, 120] °C")


def run_session(
    args: argparse.Namespace, argv: list[str], console: Console, plan: Plan, drive: Any = None,
    manifest_extra: dict[str, Any] | None = None,
) -> int:
    """A run directory's whole session: manifest, lock, environments pinned, cells, report. `drive` replaces the
    plain pass over the plan's cells (the capacity search runs its probes through the same pipeline)."""
    from orchestrator.manifest import initial_manifest, now_iso
    from orchestrator.pipeline import Events, execute
    from orchestrator.store import RUN_DIR_SCHEMA, RunStore
    from orchestrator.ui import RichEvents, summary_table

    if args.resume and args.out is None:
        raise InputError("--resume needs --out DIR (the run directory to finish)")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or PROJECT_ROOT / "reports" / f"run-{stamp}"
    store = RunStore(out)
    matrix_doc = plan.matrix.model_dump(mode="json")
    build_args = parse_build_args(args.build_args)
    previous = resumable_manifest(store, matrix_doc, build_args) if args.resume else refuse_used_out(out)
    if previous and previous.get("capacity") != (manifest_extra or {}).get("capacity"):
        held = f"a capacity search ({previous['capacity']})" if previous.get("capacity") else "a plain run"
        raise InputError(f"--resume: {out} holds {held}; finish it with the command and options that started it, "
                         f"or {FRESH}")
    run_id = previous.get("run_id") or f"{stamp}-{secrets.token_hex(3)}"

    # Reach the engine (and check its GPU runtime) before creating anything: a run that cannot start leaves no trace.
    runner = make_runner(args, plan.matrix, run_id)
    runner_info = runner.preflight()
    slots = slots_for(plan.matrix, runner)  # may refuse a GPU the host lacks: also before anything is written
    store.open_for_run()
    try:
        manifest = initial_manifest(run_id, matrix_doc, runner_info, [sys.executable, "-m", "orchestrator", *argv])
        manifest.update(run_dir_schema=RUN_DIR_SCHEMA, build_args=build_args, **(manifest_extra or {}))
        if previous:
            manifest["started_at"] = previous.get("started_at", manifest["started_at"])
            manifest["environments"] = previous.get("environments", {})
            manifest["images"] = previous.get("images", {})
            manifest["resumed_at"] = [*previous.get("resumed_at", []), now_iso()]
        store.write_manifest(manifest)

        check = pin_images(store, run_id, manifest, args.resume)

        def cells(events: Events) -> Any:
            if drive is not None:
                return drive(runner, store, run_id, slots, events, check)
            return execute(plan, runner, store, run_id, slots, events, args.resume, check_environments=check,
                           gpu_settle_c=args.gpu_settle)

        try:
            if args.quiet:
                summary = cells(Events())
            else:
                with RichEvents(console) as events:
                    summary = cells(events)
        except InputError:
            store.write_manifest(previous)  # refused before any cell ran: the run dir is as it was
            raise
        manifest["environments"].update(environment_facts(store, run_id))
        manifest["state"] = "interrupted" if summary.interrupted else "complete"
        manifest["finished_at"] = now_iso()
        store.write_manifest(manifest)
    except OSError as exc:  # e.g. the disk filled up mid-run: say so in one line; every finished cell is on disk
        where = f" ({exc.filename})" if exc.filename else ""
        raise OrchestrationError(
            f"{exc.strerror or exc}{where}; the finished cells are kept: fix this and finish with --resume --out {out}"
        ) from None
    finally:
        store.close()

    records = store.summaries(run_id)
    if records:
        console.print(summary_table(records))
    if not args.no_report and records:
        from orchestrator.report import render

        for path in render(out):
            console.print(f"wrote {path}", highlight=False)
    if summary.interrupted:
        console.print(f"[yellow]interrupted[/]: finished cells are in {out}; finish with --resume --out {out}")
        return EXIT_INTERRUPTED
    return EXIT_OK


def environment_facts(store: Any, run_id: str) -> dict[str, Any]:
    """Per image: its tag and id, and the versions the workload reported from inside it."""
    facts: dict[str, Any] = {}
    for r in store.summaries(run_id):
        key = f"{r.framework}:{r.variant}" if r.variant else r.framework
        entry = facts.setdefault(key, {"image": r.image, "versions": None, "device": None})
        if r.workload and entry["versions"] is None:
            entry["versions"] = dict(r.workload.versions)
            entry["device"] = r.workload.device.name
    return facts


FRESH = "start a fresh run with another --out"


def refuse_used_out(out: Path) -> dict[str, Any]:
    """A run directory holds one run: an existing, non-empty --out is only ever finished with --resume."""
    try:
        used = out.exists() and (not out.is_dir() or any(out.iterdir()))
    except OSError:
        used = False  # unreadable: open_for_run says so in its own words
    if used:
        raise InputError(f"--out {out} is not empty: finish that run with --resume, or {FRESH}")
    return {}


def resumable_manifest(store: Any, matrix_doc: dict[str, Any], build_args: dict[str, str]) -> dict[str, Any]:
    """The manifest of the run --resume finishes, once it is proven to be the same run (one line otherwise)."""
    from orchestrator.store import MANIFEST, RUN_DIR_SCHEMA

    out = store.root
    previous = store.read_manifest()
    if not previous:
        raise InputError(f"--resume: {out / MANIFEST} is missing, so nothing says which run {out} holds; {FRESH}")
    if previous.get("run_dir_schema") != RUN_DIR_SCHEMA or not isinstance(previous.get("run_id"), str):
        raise InputError(f"--resume: {out} was written by an older version, whose containers could write into the "
                         f"cell directories, so its records cannot be trusted; {FRESH}")
    before = previous.get("matrix") if isinstance(previous.get("matrix"), dict) else {}
    changed = sorted(k for k in set(before) | set(matrix_doc) if before.get(k) != matrix_doc.get(k))
    if changed:
        raise InputError(f"--resume: the matrix differs from the one {out} was run with in {', '.join(changed)}; "
                         f"use the same matrix and options, or {FRESH}")
    if previous.get("build_args", {}) != build_args:
        raise InputError(f"--resume: the build args differ from the run's ({previous.get('build_args')} vs "
                         f"{build_args}); use the same --build-arg options, or {FRESH}")
    return previous


def environment_identity(env: Any) -> dict[str, Any]:
    """What makes an environment the same one: the image id (docker, ray) or the interpreter (local)."""
    return {k: v for k, v in (env.details or {}).items() if k in ("id", "python")}


def pin_images(store: Any, run_id: str, manifest: dict[str, Any], resume: bool) -> Any:
    """A check for the pipeline, once the environments are prepared and before any cell runs: the manifest records
    every environment's identity ("images"); on --resume, a framework that already has measured cells must run
    on the environments the run started with."""

    def check(envs: dict[tuple[str, str | None], Any]) -> None:
        pinned: dict[str, Any] = manifest.setdefault("images", {})
        if resume:
            measured = {r.framework for r in store.summaries(run_id) if r.status is not Status.BUILD_FAILED}
            for (framework, variant), env in envs.items():
                name = f"{framework}:{variant}" if variant else framework
                then, now = pinned.get(name), environment_identity(env)
                if framework in measured and env.error is None and isinstance(then, dict) and then != now:
                    raise InputError(f"--resume: the image of {name} changed since the run started "
                                     f"({', '.join(map(str, then.values()))} -> {', '.join(map(str, now.values()))}) "
                                     f"and {framework} already has measured cells; restore it, or {FRESH}")
        for (framework, variant), env in envs.items():
            if env.error is None:
                pinned[f"{framework}:{variant}" if variant else framework] = environment_identity(env)

    return check


def cmd_capacity(argv: list[str], console: Console) -> int:
    from orchestrator import capacity
    from orchestrator.matrix import MAX_SIZE

    p = run_parser()
    p.prog = "python -m orchestrator capacity"
    p.description = (
        "Per framework (variant, impl, precision): the largest hidden size (--axis batch: batch size, per hidden size "
        "of the matrix or --hidden N) that trains ok and the smallest that fails, with its status. Probes are cells "
        f"on the multiples of {capacity.STEP} (batch: {capacity.BATCH_STEP}): doubling from the matrix's smallest "
        "hidden size (batch: its batch) until one fails, then binary search. Every probe is a normal cell of "
        f"the run directory; the result is {capacity.CAPACITY_FILE} there and a table in the report."
    )
    p.add_argument("--axis", choices=tuple(capacity.STEPS), default="hidden",
                   help="the axis searched: hidden (default) or batch")
    p.add_argument("--max", dest="ceiling", type=int, default=MAX_SIZE, metavar="N",
                   help=f"the largest size probed (default {MAX_SIZE})")
    args = p.parse_args(argv)
    step = capacity.STEPS[args.axis]
    if not step <= args.ceiling <= MAX_SIZE or args.ceiling % step:
        raise InputError(f"--max {args.ceiling}: expected a multiple of {step} in [{step}, {MAX_SIZE}]")
    plan = make_plan(args)
    check_gpu_settle(args, plan)
    start = capacity.axis_start(plan, args.axis)
    if start > args.ceiling:
        raise InputError(f"the first probe ({args.axis} {start}) is above --max {args.ceiling}")
    if args.dry_run:
        for s in capacity.series_of(plan, args.axis):
            print(f"{s.template.cell_id.removesuffix('-r0').removesuffix('-h0')}: first probe {args.axis}={start}, "
                  f"at most {args.ceiling}")
        return EXIT_OK
    settings = {"axis": args.axis, "step": step, "ceiling": args.ceiling}
    return run_session(args, ["capacity", *argv], console, plan,
                       drive=capacity.drive(plan, args.ceiling, args.gpu_settle, args.axis),
                       manifest_extra={"capacity": settings})


def cmd_report(argv: list[str], console: Console) -> int:
    p = _Parser(prog="python -m orchestrator report", description="Re-render a run's report from its stored results.")
    p.add_argument("run_dir", type=Path)
    args = p.parse_args(argv)
    from orchestrator.store import open_existing

    open_existing(args.run_dir)
    from orchestrator.report import render

    for path in render(args.run_dir):
        console.print(f"wrote {path}", highlight=False)
    return EXIT_OK


def cmd_compare(argv: list[str], console: Console) -> int:
    from orchestrator.compare import VERDICT_HELP, run_cli

    p = _Parser(
        prog="python -m orchestrator compare",
        description="Compare two runs cell by cell at the level of fresh processes (repeats): B/A with its 95% "
        "interval, a verdict per cell, geometric mean.",
        epilog=VERDICT_HELP,
    )
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--markdown", type=Path, help="also write the comparison as Markdown to this file")
    args = p.parse_args(argv)
    from orchestrator.store import open_existing

    open_existing(args.run_a)
    open_existing(args.run_b)
    return run_cli(args.run_a, args.run_b, args.markdown)


def cmd_clean(argv: list[str], console: Console) -> int:
    p = _Parser(
        prog="python -m orchestrator clean",
        description="Remove every container, and kill every local-runner process, that a killed run left behind.",
    )
    p.parse_args(argv)
    from orchestrator.runners.docker import connect, remove_orphans
    from orchestrator.runners.local import kill_orphans

    killed = kill_orphans()

    removed = remove_orphans(connect())
    console.print(f"removed {removed} container(s)")
    console.print(f"killed {killed} local process(es)")
    return EXIT_OK


def cmd_build(argv: list[str], console: Console) -> int:
    from orchestrator import buildcmd

    args = buildcmd.build_parser(_Parser).parse_args(argv)
    ns = argparse.Namespace(sets=[], hidden=None, only=args.only, device=args.device, gpus=None, slots=None,
                            matrix=args.matrix)
    return buildcmd.cmd_build(args, console, make_plan(ns))


def cmd_new(argv: list[str], console: Console) -> int:
    p = _Parser(
        prog="python -m orchestrator new",
        description="Scaffold a framework: images/NAME/ (Dockerfile, framework.yaml, requirements) and "
        "workloads/NAME_lstm.py with every method to fill in. Guide: docs/adding-a-framework.md.",
    )
    p.add_argument("name", help="the framework's folder name under images/ (lowercase, digits, '-', '_', '.')")
    args = p.parse_args(argv)
    from orchestrator.scaffold import create

    for path in create(PROJECT_ROOT, args.name):
        console.print(f"wrote {path.relative_to(PROJECT_ROOT)}", highlight=False)
    console.print("next: docs/adding-a-framework.md", highlight=False)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console(stderr=False)
    err = Console(stderr=True)
    # Our own handlers, whatever was inherited (a shell's background job starts with SIGINT ignored): Ctrl-C and
    # SIGTERM (a scheduler, `kill`) both stop a run cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    commands = {"capacity": cmd_capacity, "report": cmd_report, "compare": cmd_compare, "clean": cmd_clean,
                "build": cmd_build, "new": cmd_new}
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:], console)
        if argv and argv[0] == "run":
            argv = argv[1:]
        if not argv:
            run_parser().print_help()
            return EXIT_INPUT
        if argv[0] in ("-h", "--help"):
            run_parser().print_help()
            return EXIT_OK
        return cmd_run(argv, console)
    except InputError as exc:
        err.print(f"error: {visible(str(exc))}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_INPUT
    except OrchestrationError as exc:
        err.print(f"error: {visible(str(exc))}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os._exit(EXIT_OK)
