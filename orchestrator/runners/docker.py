"""Runs each cell in a fresh, locked-down container on a Docker engine (the docker SDK, never the CLI)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import requests

from orchestrator import LABEL_PREFIX, PROJECT_ROOT
from orchestrator.errors import OrchestrationError
from orchestrator.frameworks import Framework
from orchestrator.gpus import engine_is_remote
from orchestrator.images import BuildFailed, ensure_image
from orchestrator.machine.cell import CellProcess
from orchestrator.machine.cpu import parse_cpuset
from orchestrator.matrix import memory_bytes
from orchestrator.plan import Cell
from orchestrator.runners.base import (
    LOG_TAIL_LINES,
    PARAMS_FILE,
    RESULT_FILE,
    Environment,
    LogTail,
    Outcome,
    io_dir,
    read_result,
)

CONTAINER_RESULTS = "/results"  # the cell's io/ directory: the only place the workload may write
CONTAINER_PARAMS = f"/{PARAMS_FILE}"  # the cell's params.json, read-only
MANAGED = f"{LABEL_PREFIX}.managed"
RUN_LABEL = f"{LABEL_PREFIX}.run-id"
# A caller (a CI job, a test session) may tag every container it causes, to find exactly its own later.
SESSION_LABEL = f"{LABEL_PREFIX}.session"
SESSION_ENV = "LSTM_BENCH_SESSION"
# Who started a container: a later run removes it only when that orchestrator is dead (orphans).
HOST_LABEL = f"{LABEL_PREFIX}.host"
PID_LABEL = f"{LABEL_PREFIX}.pid"
# Root on the host would mean root in the container; cells then run as this uid and own their io/ directory.
FALLBACK_UID = 10001
STOP_GRACE_S = 2


def connect(timeout: int = 60) -> Any:
    """A client for DOCKER_HOST (or the default socket), proven alive; OrchestrationError otherwise."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OrchestrationError(f"cannot reach the Docker engine at {where}: {first}") from None


def _owner_alive(labels: dict[str, str]) -> bool:
    """Whether the orchestrator that started a container still runs (same host, live pid)."""
    if labels.get(HOST_LABEL) != socket.gethostname():
        return True  # another host's run: not ours to judge
    try:
        pid = int(labels.get(PID_LABEL, ""))
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(client: Any, everything: bool = False) -> int:
    """Remove containers whose orchestrator is gone (or, with everything=True, all of this project's)."""
    removed = 0
    for c in client.containers.list(all=True, filters={"label": f"{MANAGED}=true"}, ignore_removed=True):
        if not everything and _owner_alive(c.labels):
            continue
        with contextlib.suppress(Exception):
            c.remove(force=True)
            removed += 1
    return removed


def has_nvidia_runtime(info: dict[str, Any]) -> bool:
    runtimes = info.get("Runtimes") or {}
    return "nvidia" in runtimes or (bool(info.get("CDISpecDirs")) and os.environ.get("LSTM_BENCH_CDI") == "1")


class DockerRunner:
    name = "docker"

    def __init__(
        self,
        run_id: str,
        device: str,
        memory: str,
        pids_limit: int,
        build_args: dict[str, str] | None = None,
        build_timeout_s: float = 3600.0,
        root: Path = PROJECT_ROOT,
        client: Any = None,
        cpusets: dict[str, str] | None = None,
        flavour: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.device = device
        # Which image flavour to build: the device's by default; a GPU image's CPU cell (an image test) sets "gpu".
        self.flavour = flavour or device
        self.memory = memory
        self.pids_limit = pids_limit
        self.build_args = dict(build_args or {})
        self.build_timeout_s = build_timeout_s
        self.root = root
        self.cpusets = dict(cpusets or {})  # CPU slot -> its cores ("0,1"), from scheduler.cpusets (--pin-cpus)
        self.client = client or connect()
        # The machine sampler reads the container's cgroup and /proc/stat: only meaningful on the engine's host.
        self.host_sampling = not engine_is_remote()
        self._running: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._aborted = threading.Event()

    # ------------------------------------------------------------------ preflight
    def preflight(self) -> dict[str, Any]:
        info = self.client.info()
        version = self.client.version()
        if self.device == "gpu" and not has_nvidia_runtime(info) and os.environ.get("LSTM_BENCH_SKIP_GPU_CHECK") != "1":
            raise OrchestrationError(
                "GPU cells requested but the Docker engine has no NVIDIA runtime: install the NVIDIA Container "
                "Toolkit (then `nvidia-ctk runtime configure --runtime=docker` and restart dockerd), "
                "or run on CPU with --device cpu"
            )
        orphans = remove_orphans(self.client)
        return {
            "engine": "docker",
            "docker_version": version.get("Version"),
            "api_version": version.get("ApiVersion"),
            "os": info.get("OperatingSystem"),
            "kernel": info.get("KernelVersion"),
            "cgroup_version": info.get("CgroupVersion"),
            "runtimes": sorted((info.get("Runtimes") or {}).keys()),
            "orphans_removed": orphans,
            "host_sampling": self.host_sampling
            or f"unavailable: the engine is on another host ({os.environ.get('DOCKER_HOST')})",
        }

    # ------------------------------------------------------------------ images
    def prepare(self, framework: Framework, variant: str | None, on_line: Any = None) -> Environment:
        key = (framework.name, variant)
        try:
            built = ensure_image(
                self.client, self.root, framework, variant, self.build_args, self.build_timeout_s, on_line,
                flavour=self.flavour,
            )
        except BuildFailed as exc:
            return Environment(key, None, {}, error=f"{exc}\n{exc.log_tail}".strip(), log_tail=exc.log_tail)
        return Environment(key, built.tag, built.details(), None, built.duration_s)

    # ------------------------------------------------------------------ cells
    def _user(self, cell_dir: Path) -> str:
        io_dir(cell_dir).mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(cell_dir / PARAMS_FILE, 0o644)  # readable by the container's user; writable by us alone
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:
            uid = gid = FALLBACK_UID
            os.chown(io_dir(cell_dir), uid, gid)  # only io/: the rest of the cell directory stays the orchestrator's
        return f"{uid}:{gid}"

    def container_config(self, cell: Cell, env: Environment, cell_dir: Path, slot: str | None) -> dict[str, Any]:
        import docker

        limit = memory_bytes(self.memory)
        environment = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        device_requests = []
        if slot is not None and self.device == "gpu":
            # Explicit ids: count=1 always means GPU 0, which would stack parallel cells on one GPU.
            device_requests = [docker.types.DeviceRequest(device_ids=[slot], capabilities=[["gpu"]])]
            environment["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
        return {
            "image": env.ref,
            "command": [
                "--params",
                CONTAINER_PARAMS,
                "--out",
                f"{CONTAINER_RESULTS}/{RESULT_FILE}",
            ],
            "user": self._user(cell_dir),
            "environment": environment,
            "mounts": [
                docker.types.Mount(CONTAINER_RESULTS, str(io_dir(cell_dir).resolve()), type="bind", read_only=False),
                docker.types.Mount(CONTAINER_PARAMS, str((cell_dir / PARAMS_FILE).resolve()), type="bind",
                                   read_only=True),
            ],
            "read_only": True,  # the image (and with it the workload code) is read-only
            "tmpfs": {"/tmp": "rw,exec,size=2g"},
            "mem_limit": limit,
            "memswap_limit": limit,  # equal: no swap, so exceeding the limit is a real OOM kill
            "pids_limit": self.pids_limit,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "network_mode": "none",
            "privileged": False,
            "init": True,
            "device_requests": device_requests,
            "labels": self.labels(cell),
            "detach": True,
            **({"cpuset_cpus": self.cpusets[slot]} if slot in self.cpusets else {}),
        }

    def labels(self, cell: Cell) -> dict[str, str]:
        labels = {
            MANAGED: "true",
            RUN_LABEL: self.run_id,
            f"{LABEL_PREFIX}.cell": cell.cell_id,
            HOST_LABEL: socket.gethostname(),
            PID_LABEL: str(os.getpid()),
        }
        if os.environ.get(SESSION_ENV):
            labels[SESSION_LABEL] = os.environ[SESSION_ENV]
        return labels

    def run(
        self, cell: Cell, env: Environment, cell_dir: Path, slot: str | None, timeout_s: float, watch: Any = None
    ) -> Outcome:
        started = time.monotonic()
        tail = LogTail()
        container = None
        timed_out = oom_killed = False
        exit_code: int | None = None
        error: str | None = None
        wall_span: tuple[float, float] | None = None
        try:
            container = self.client.containers.create(**self.container_config(cell, env, cell_dir, slot))
            with self._lock:
                self._running[cell.cell_id] = container
            if self._aborted.is_set():
                raise InterruptedError("aborted")
            wall_start = time.time()
            container.start()
            if watch is not None:
                self._watch(container, slot, watch)
            try:
                exit_code = int(container.wait(timeout=timeout_s)["StatusCode"])
            except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
                timed_out = not self._aborted.is_set()
                with contextlib.suppress(Exception):
                    container.kill()
                with contextlib.suppress(Exception):
                    exit_code = int(container.wait(timeout=30)["StatusCode"])
            wall_span = (wall_start, time.time())
            _read_tail(container, tail)
            container.reload()
            oom_killed = bool(container.attrs["State"].get("OOMKilled")) and not timed_out
        except InterruptedError:
            error = "aborted"
        except Exception as exc:
            error = f"container failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
                with self._lock:
                    self._running.pop(cell.cell_id, None)
        if self._aborted.is_set():
            error = "aborted"  # our own kill (Ctrl-C), not the cell's failure: no record, --resume reruns it
        return Outcome(
            exit_code=exit_code,
            timed_out=timed_out,
            oom_killed=oom_killed,
            log_tail=tail.text(),
            duration_s=time.monotonic() - started,
            error=error,
            memory_limited=True,
            wall_span=wall_span,
            **read_result(cell_dir).outcome_fields(),
        )

    def _watch(self, container: Any, slot: str | None, watch: Any) -> None:
        """Tell the host's sampler which process tree (cgroup) and CPUs the started container has."""
        with contextlib.suppress(Exception):  # sampling is a bonus: never a reason for a cell to fail
            container.reload()
            pid = int(container.attrs["State"].get("Pid") or 0)
            if pid > 0:
                cpus = frozenset(parse_cpuset(self.cpusets[slot])) if slot in self.cpusets else None
                watch(CellProcess(pid, own_cgroup=True, cpus=cpus, cgroup_must_name=container.id))

    def abort(self) -> None:
        self._aborted.set()
        with self._lock:
            running = list(self._running.values())
        for container in running:
            with contextlib.suppress(Exception):
                container.kill()


def _read_tail(container: Any, tail: LogTail) -> None:
    """The last lines of a stopped container's output.

    Read once it has stopped rather than followed live: with json-file rotation a follow stream ends early
    under a flood of output, and its "tail" is then the middle of the log. Streamed, so one enormous line
    costs no more memory than LogTail keeps.
    """
    with contextlib.suppress(Exception):
        for chunk in container.logs(stream=True, follow=False, stdout=True, stderr=True, tail=LOG_TAIL_LINES):
            tail.feed(chunk)
