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
from orchestrator.errors import InputError, OrchestrationError
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
# The container's log (json-file): the engine's default has no size limit, and a flooding cell would fill the host's
# disk for up to timeout_s. The orchestrator reads only the last LOG_TAIL_LINES lines anyway.
LOG_CONFIG = {"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}}
# Host memory a default limit leaves to the host (the orchestrator, the engine, the page cache): the larger of these.
MEMORY_RESERVE = (2 << 30, 8)  # bytes, and 1/8 of the host's RAM
CDI_GPU = "nvidia.com/gpu="
GPU_ENV = {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}
GPU_CHECK_TIMEOUT_S = 120
# Opt-in: a host directory kept across GPU cells as the CUDA driver's JIT cache (TensorFlow's wheels carry no SASS
# for Hopper, so each cell would JIT-compile their PTX for minutes). Shared by every cell: only for trusted images.
CUDA_CACHE_ENV = "LSTM_BENCH_CUDA_CACHE"
CONTAINER_CUDA_CACHE = "/cuda-cache"
GPU_HELP = ("install the NVIDIA Container Toolkit (`nvidia-ctk runtime configure --runtime=docker` and restart "
            "dockerd, or for CDI `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`), or run with --device cpu")


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


def cdi_gpus(info: dict[str, Any]) -> list[str]:
    """The NVIDIA GPUs the engine can inject through CDI ("nvidia.com/gpu=..."): Docker 28.3+ lists the CDI devices
    it found (`nvidia-ctk cdi generate` writes them) in `docker info`'s DiscoveredDevices."""
    return [str(d["ID"]) for d in info.get("DiscoveredDevices") or []
            if isinstance(d, dict) and d.get("Source") == "cdi" and str(d.get("ID", "")).startswith(CDI_GPU)]


def has_nvidia_runtime(info: dict[str, Any]) -> bool:
    """Whether `docker info` shows a route to NVIDIA GPUs: the `nvidia` runtime, or CDI GPU devices. Not proof, and
    not the only route (the toolkit's hook on dockerd's PATH serves `--gpus` without either): gpu_check decides."""
    return "nvidia" in (info.get("Runtimes") or {}) or bool(cdi_gpus(info))


def gpu_request(slot: str, cdi: list[str]) -> Any:
    """The device request a GPU cell on `slot` gets: the CDI device of that name when the engine has one (Docker's
    `--device nvidia.com/gpu=...`), else the toolkit's `--gpus device=<slot>` (a UUID; the toolkit takes those)."""
    import docker

    name = f"{CDI_GPU}{slot}"
    if name in cdi:
        return docker.types.DeviceRequest(driver="cdi", device_ids=[name])
    return docker.types.DeviceRequest(device_ids=[slot], capabilities=[["gpu"]])


def gpu_check(client: Any, image: str, request: Any, labels: dict[str, str]) -> str | None:
    """Start one throw-away container of the cell's image with the cell's exact device request and list the GPUs it
    sees (`nvidia-smi -L`, which the toolkit mounts). None when it works; otherwise why, in one line."""
    container = None
    try:
        container = client.containers.create(
            image, entrypoint=["nvidia-smi", "-L"], command=[], environment=dict(GPU_ENV), device_requests=[request],
            network_mode="none", labels={**labels, f"{LABEL_PREFIX}.purpose": "gpu-check"}, detach=True,
        )
        try:
            container.start()
        except Exception as exc:
            text = _first(exc)
            if "executable file not found" in text:  # the device was given; this image just has no nvidia-smi
                return None
            return f"the Docker engine cannot give this container its GPU ({text}); {GPU_HELP}"
        code = int(container.wait(timeout=GPU_CHECK_TIMEOUT_S)["StatusCode"])
        output = container.logs(stdout=True, stderr=True).decode(errors="replace").strip()
        if code != 0 or "GPU" not in output:
            why = (output.splitlines() or ["no output"])[-1]
            return f"a container with this cell's GPU request cannot use it: nvidia-smi exit {code}: {why}"
        return None
    except Exception as exc:  # create() refused (an unknown CDI device, a malformed request) or wait() timed out
        return f"the Docker engine cannot give this container its GPU ({_first(exc)}); {GPU_HELP}"
    finally:
        if container is not None:
            with contextlib.suppress(Exception):
                container.remove(force=True)


def _first(exc: BaseException) -> str:
    """The engine's own words (an APIError's explanation), else the exception's first line."""
    text = str(getattr(exc, "explanation", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


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
        self.memory_limit = memory_limit(memory, host_ram())  # the engine's own RAM once preflight asked it
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
        self.cdi: list[str] = []  # the engine's CDI GPU names, from preflight()
        self.rootless = False  # a rootless engine (preflight()): cells run as the namespace's root, see _user()
        self._gpu_checked: dict[str, str | None] = {}  # slot -> why its GPU request fails (None: it works)
        self._gpu_check_lock = threading.Lock()

    # ------------------------------------------------------------------ preflight
    def preflight(self) -> dict[str, Any]:
        info = self.client.info()
        version = self.client.version()
        self.cdi = cdi_gpus(info)
        self.rootless = any("rootless" in str(o) for o in info.get("SecurityOptions") or [])
        if self.device == "gpu" and not has_nvidia_runtime(info) and not self._any_gpu_route():
            raise OrchestrationError(f"GPU cells requested but the Docker engine gives containers no GPU: {GPU_HELP}")
        self.memory_limit = memory_limit(self.memory, int(info.get("MemTotal") or 0) or host_ram())
        orphans = remove_orphans(self.client)
        return {
            "engine": "docker",
            "docker_version": version.get("Version"),
            "api_version": version.get("ApiVersion"),
            "os": info.get("OperatingSystem"),
            "kernel": info.get("KernelVersion"),
            "cgroup_version": info.get("CgroupVersion"),
            "runtimes": sorted((info.get("Runtimes") or {}).keys()),
            "cdi_gpus": self.cdi,
            "rootless": self.rootless,
            "orphans_removed": orphans,
            "caps": {"memory_bytes": self.memory_limit, "log": LOG_CONFIG["config"]},
            "host_sampling": self.host_sampling
            or f"unavailable: the engine is on another host ({os.environ.get('DOCKER_HOST')})",
        }

    def _any_gpu_route(self) -> bool:
        """Without the nvidia runtime or CDI devices, the toolkit's hook on dockerd's PATH may still serve `--gpus`:
        ask with a container given every GPU, in any local image. No image to ask in: assume a route, and let each
        slot's gpu_check say."""
        from orchestrator.gpus import from_container, probe_image

        return probe_image(self.client) is None or from_container(self.client) is not None

    def gpu_problem(self, slot: str, image: str, cell: Cell) -> str | None:
        """Why `slot`'s GPU cannot be given to a container, checked once per slot with the cell's image and exact
        request before its first cell (a driverless CDI setup fails only here, at container start)."""
        with self._gpu_check_lock:
            if slot not in self._gpu_checked:
                self._gpu_checked[slot] = gpu_check(self.client, image, gpu_request(slot, self.cdi), self.labels(cell))
            return self._gpu_checked[slot]

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
        if self.rootless:
            # Rootless Docker maps the container's root to the user running dockerd (who owns io/) and any other uid
            # to a subordinate one that cannot write io/. Root in that user namespace is that user, nothing more.
            return "0:0"
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:
            uid = gid = FALLBACK_UID
            os.chown(io_dir(cell_dir), uid, gid)  # only io/: the rest of the cell directory stays the orchestrator's
        return f"{uid}:{gid}"

    def container_config(self, cell: Cell, env: Environment, cell_dir: Path, slot: str | None) -> dict[str, Any]:
        import docker

        limit = self.memory_limit
        environment = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        device_requests = []
        if slot is not None and self.device == "gpu":
            # Explicit ids (UUIDs): count=1 always means GPU 0, which would stack parallel cells on one GPU.
            device_requests = [gpu_request(slot, self.cdi)]
            environment.update(GPU_ENV)
        mounts = []
        cache = os.environ.get(CUDA_CACHE_ENV)
        if cache and device_requests:
            Path(cache).mkdir(parents=True, exist_ok=True)
            if os.getuid() == 0 and not self.rootless:  # the cells' user (FALLBACK_UID, see _user) must write it
                os.chown(cache, FALLBACK_UID, FALLBACK_UID)
            mounts.append(docker.types.Mount(CONTAINER_CUDA_CACHE, str(Path(cache).resolve()), type="bind"))
            environment.update(CUDA_CACHE_PATH=CONTAINER_CUDA_CACHE, CUDA_CACHE_MAXSIZE=str(4 << 30))
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
                *mounts,
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
            "log_config": docker.types.LogConfig(**LOG_CONFIG),
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
        if self.device == "gpu" and slot is not None and env.ref is not None:
            problem = self.gpu_problem(slot, env.ref, cell)
            if problem is not None:
                return Outcome(None, False, False, None, "", time.monotonic() - started, unsupported=problem)
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

    def stop_cell(self, cell_id: str) -> None:
        """Kill one cell's container (its /results went over the cap); the others run on."""
        with self._lock:
            container = self._running.get(cell_id)
        if container is not None:
            with contextlib.suppress(Exception):
                container.kill()

    def abort(self) -> None:
        self._aborted.set()
        with self._lock:
            running = list(self._running.values())
        for container in running:
            with contextlib.suppress(Exception):
                container.kill()


def host_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit(memory: str, host_total: int) -> int:
    """The container's memory limit. `auto`: the host's RAM less a reserve, so the cell's own limit (host-oom), not
    the kernel's global OOM killer, stops a cell that floods memory. An explicit size above the host's RAM is
    refused (one line, exit 2) for the same reason."""
    reserve = max(MEMORY_RESERVE[0], host_total // MEMORY_RESERVE[1])
    if memory == "auto":
        return max(host_total - reserve, 1 << 30)
    asked = memory_bytes(memory)
    if host_total > 0 and asked > host_total:
        raise InputError(f"memory: {memory} is more than the engine host's RAM ({host_total / (1 << 30):.1f} GiB), "
                         "so the kernel's OOM killer would stop the cell before its own limit; set memory: auto "
                         f"(RAM less {reserve >> 30} GiB) or a smaller size")
    return asked


def _read_tail(container: Any, tail: LogTail) -> None:
    """The last lines of a stopped container's output.

    Read once it has stopped rather than followed live: with json-file rotation a follow stream ends early
    under a flood of output, and its "tail" is then the middle of the log. Streamed, so one enormous line
    costs no more memory than LogTail keeps.
    """
    with contextlib.suppress(Exception):
        for chunk in container.logs(stream=True, follow=False, stdout=True, stderr=True, tail=LOG_TAIL_LINES):
            tail.feed(chunk)
