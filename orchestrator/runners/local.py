"""Runs each cell as a subprocess of a local Python: same contract as the container, no Docker needed.

`python` chooses the interpreter: "venv" (a cached per-framework environment from its pinned CPU
requirements, falling back to this interpreter when a framework has none), "current" (this interpreter,
e.g. on a GPU host whose frameworks are installed already), or a path to a Python.
No memory limit is applied (RLIMIT_AS breaks frameworks that reserve address space); timeouts are.

Process hygiene: each cell is its own session and process group, started through a shim that asks the kernel to
SIGKILL it when the orchestrator dies (PR_SET_PDEATHSIG); every process of a cell carries the cell's token in its
environment. At the cell's end the whole group, and any process with the token (one that left the group), is
killed whatever the main process did; processes of an orchestrator that was killed are found by the token and
killed by the next local run's preflight and by `python -m orchestrator clean`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator import PROJECT_ROOT
from orchestrator.frameworks import Framework
from orchestrator.gpus import CUDA_ORDINAL
from orchestrator.machine.cell import CellProcess
from orchestrator.plan import Cell
from orchestrator.runners.base import (
    PARAMS_FILE,
    RESULT_FILE,
    Environment,
    LogTail,
    Outcome,
    io_dir,
    read_result,
    strip_ansi,
)
from orchestrator.venvs import VenvError, ensure_venv, requirements_file


class LocalRunner:
    name = "local"
    host_sampling = True  # cells are processes of this host: the machine sampler can watch them

    def __init__(self, device: str, python: str = "venv", root: Path = PROJECT_ROOT) -> None:
        self.device = device
        self.python = python
        self.root = root
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._aborted = threading.Event()

    def preflight(self) -> dict[str, Any]:
        return {
            "engine": "local",
            "orphans_killed": kill_orphans(),
            "python": self.python,
            "host_python": sys.version.split()[0],
            "platform": platform.platform(),
        }

    def prepare(self, framework: Framework, variant: str | None, on_line: Any = None) -> Environment:
        key = (framework.name, variant)
        started = time.monotonic()
        if self.python == "current" or (self.python == "venv" and requirements_file(framework, variant) is None):
            exe = sys.executable
        elif self.python == "venv":
            try:
                exe = str(ensure_venv(framework, variant, on_line))
            except (VenvError, OSError, subprocess.TimeoutExpired) as exc:
                message = strip_ansi(str(exc))
                return Environment(key, None, {}, error=f"environment for {framework.name} failed: {message}",
                                   log_tail=message)
        else:
            exe = self.python
        details = {"python": exe, "workload": f"workloads.{framework.workload_module}"}
        return Environment(key, exe, details, None, time.monotonic() - started)

    def command(self, env: Environment, framework_module: str, cell_dir: Path) -> list[str]:
        cell_dir = cell_dir.absolute()  # the workload runs in the project root, not in the caller's directory
        return [
            sys.executable,
            "-c",
            PDEATHSIG_SHIM,
            str(os.getpid()),
            str(env.ref),
            "-m",
            framework_module,
            "--params",
            str(cell_dir / PARAMS_FILE),
            "--out",
            str(io_dir(cell_dir) / RESULT_FILE),
        ]

    def run(
        self, cell: Cell, env: Environment, cell_dir: Path, slot: str | None, timeout_s: float, watch: Any = None
    ) -> Outcome:
        started = time.monotonic()
        tail = LogTail()
        environ = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path(self.root, os.environ)}
        if self.device == "gpu" and slot is not None:
            # A UUID (gpus.py), or an inherited CUDA_VISIBLE_DEVICES entry we could not tie to a UUID, verbatim.
            environ["CUDA_VISIBLE_DEVICES"] = slot.removeprefix(CUDA_ORDINAL)
        elif self.device == "cpu":
            environ["CUDA_VISIBLE_DEVICES"] = ""
        token = f"{os.getpid()}:{cell.cell_id}:{secrets.token_hex(4)}"
        environ[OWNER_ENV] = token  # inherited by every process of the cell: how the cleanups find them
        timed_out = False
        error = None
        exit_code = None
        io_dir(cell_dir).mkdir(exist_ok=True)
        wall_start = time.time()
        try:
            proc = subprocess.Popen(
                self.command(env, env.details["workload"], cell_dir),
                cwd=self.root,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a timeout kills the workload's children too
            )
        except OSError as exc:
            return Outcome(None, False, False, None, "", time.monotonic() - started, f"cannot start: {exc}")
        with self._lock:
            self._procs[cell.cell_id] = proc
        if watch is not None:
            watch(CellProcess(proc.pid, own_cgroup=False))
        reader = threading.Thread(target=_pump, args=(proc, tail), daemon=True)
        reader.start()
        try:
            exit_code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = not self._aborted.is_set()
            _kill_group(proc)
            exit_code = proc.wait()
        finally:
            # Whatever the main process did: its children (forked, daemonised) end with the cell, so none runs
            # beside the next cell and none holds the output pipe open.
            _kill_group(proc)
            if proc.poll() is None:
                proc.wait()
            kill_tagged(lambda value: value == token)
            with self._lock:
                self._procs.pop(cell.cell_id, None)
            reader.join(timeout=5)
        wall_span = (wall_start, time.time())
        if self._aborted.is_set():
            error = "aborted"
        # A negative code is a signal; report it the way a container would (128 + signal).
        code = 128 - exit_code if exit_code is not None and exit_code < 0 else exit_code
        return Outcome(
            exit_code=code, timed_out=timed_out, oom_killed=False, log_tail=tail.text(),
            duration_s=time.monotonic() - started, error=error, wall_span=wall_span,
            **read_result(cell_dir).outcome_fields(),
        )

    def stop_cell(self, cell_id: str) -> None:
        """Kill one cell's process group (its /results went over the cap); the others run on."""
        with self._lock:
            proc = self._procs.get(cell_id)
        if proc is not None:
            _kill_group(proc)

    def abort(self) -> None:
        self._aborted.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _kill_group(proc)


OWNER_ENV = "LSTM_BENCH_LOCAL_CELL"  # "<orchestrator pid>:<cell id>:<random>"
# Runs first in the cell's process: SIGKILL when the orchestrator (the thread that started it) dies; if it died
# already, stop here; then become the workload (exec keeps the death signal).
PDEATHSIG_SHIM = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)\n"
    "except (AttributeError, OSError):\n"
    "    pass  # elsewhere the cleanups by token remain\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(137)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def kill_tagged(wanted: Any) -> int:
    """SIGKILL every process of this user whose OWNER_ENV value `wanted(value)` accepts; how many."""
    killed = 0
    prefix = f"{OWNER_ENV}=".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read(1 << 20)
        except OSError:
            continue
        value = next((v[len(prefix):] for v in environ.split(b"\0") if v.startswith(prefix)), None)
        if value is not None and wanted(value.decode(errors="replace")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def _owner_dead(value: str) -> bool:
    try:
        os.kill(int(value.partition(":")[0]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return False


def kill_orphans() -> int:
    """Kill the cell processes whose orchestrator is gone (SIGKILLed mid-cell); how many."""
    return kill_tagged(_owner_dead)


def python_path(root: Path, environ: Mapping[str, str]) -> str:
    """The repo root first (its `workloads` package), then whatever the host needs on PYTHONPATH (a site's own
    framework installs, e.g. a module system's): replacing it would hide them from the cell."""
    inherited = environ.get("PYTHONPATH", "")
    return os.pathsep.join([str(root), *(p for p in inherited.split(os.pathsep) if p)])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _pump(proc: subprocess.Popen[bytes], tail: LogTail) -> None:
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
        tail.feed(chunk)
