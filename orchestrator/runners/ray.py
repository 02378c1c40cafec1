"""Cells as Ray tasks on a cluster: each task runs its cell's container on its node's own Docker engine.

Driver (this process): connects to the cluster, ships the project as the job's working_dir, probes every node
(Docker reachable, NVIDIA runtime for GPU runs), makes every image available on every engine, then runs one task
per cell. The task reserves one GPU (`num_gpus=1`) or one CPU slot (the custom resource `lstm_bench_slot`, which
nodes declare with `ray start --resources='{"lstm_bench_slot": N}'`), runs the cell through DockerRunner on its
node and returns the raw Outcome; the pipeline classifies and stores it exactly like a local run.

Images, two ways (docs/scaling.md):
- build on each node (default): the shipped working_dir is the build context; `ensure_image` builds once per
  Docker engine in prepare() and is a cached lookup in every cell task (a node that joins later builds then);
- `registry:` in the matrix: the driver builds with its own engine, pushes `<registry>/lstm-bench/<name>:<hash>`
  and every engine pulls it.
A task whose worker or node dies is run again (up to `--ray-retries` times) on whatever node is left; after that
the cell is `crashed` with the history. Finished cells are on the driver's disk already, so nothing is lost.

Ctrl-C: Ray's polite cancel (a KeyboardInterrupt in the task) is best effort and was seen not to arrive, so the
driver does not rely on it. Each cell in flight removes its own containers on every Docker engine, again every
few seconds while its task lives (a task that ignored the cancel cannot keep one running), force-cancels a task
still alive after ABORT_GRACE_S, and removes them once more after the task ended. Whatever the task returns after
the abort is discarded: the cell is `aborted` (no record) and `--resume` runs it again, as with the docker runner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator import LABEL_PREFIX, PROJECT_ROOT
from orchestrator.errors import OrchestrationError
from orchestrator.frameworks import Framework, discover
from orchestrator.images import image_repo, parse_build_args
from orchestrator.plan import Cell
from orchestrator.runners.base import PARAMS_FILE, Environment, Outcome, io_dir
from orchestrator.runners.docker import (
    RUN_LABEL,
    SESSION_ENV,
    DockerRunner,
    connect,
    has_nvidia_runtime,
    remove_orphans,
)
from orchestrator.store import remove_tree

SLOT_RESOURCE = "lstm_bench_slot"
NODE_LABEL = f"{LABEL_PREFIX}.ray-node"
CELL_LABEL = f"{LABEL_PREFIX}.cell"
POLL_S = 0.5
ABORT_GRACE_S = 30  # after a polite cancel, how long a task may take to kill its container before we force it
SWEEP_EVERY_S = 2.0  # after Ctrl-C, how often a cell's containers are removed again while its task still lives
SWEEP_TIMEOUT_S = 30  # one removal round on every engine; a node that does not answer is not waited for longer
PROBE_TIMEOUT_S = 180
CONNECT_TIMEOUT_S = 10
# Not shipped to the nodes: history, results, caches.
EXCLUDES = [".git", "reports", "**/__pycache__", "*.pyc", ".venv", "venv", ".pytest_cache", ".ruff_cache", "*.egg-info"]


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """What a node needs to run a cell the way the driver would have."""

    run_id: str
    device: str
    memory: str
    pids_limit: int
    build_args: dict[str, str]
    build_timeout_s: float


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise OrchestrationError(
            "the ray runner needs Ray: pip install 'ray[default]' (or pip install -e '.[ray]')"
        ) from None
    return ray


def _retryable(ray: Any) -> tuple[type[BaseException], ...]:
    """Failures of the cluster rather than of the cell: the task is worth running again elsewhere."""
    ex = ray.exceptions
    return (ex.WorkerCrashedError, ex.NodeDiedError, ex.LocalRayletDiedError, ex.ObjectLostError,
            ex.RaySystemError, ex.OutOfMemoryError)


_REMOTE: dict[Any, Any] = {}


def _remote(fn: Any) -> Any:
    """One Ray remote function per node-side function: each is exported to the cluster once."""
    if fn not in _REMOTE:
        _REMOTE[fn] = _ray().remote(fn)
    return _REMOTE[fn]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".strip(": ")


# ---------------------------------------------------------------------------------------------- on the nodes


def _where() -> tuple[str, str]:
    import ray

    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()


class NodeDockerRunner(DockerRunner):
    """DockerRunner that also labels containers with the Ray node, so an operator (or a test) sees where they run."""

    def __init__(self, node_id: str, spec: NodeSpec, client: Any) -> None:
        super().__init__(spec.run_id, spec.device, spec.memory, spec.pids_limit, spec.build_args,
                         spec.build_timeout_s, root=PROJECT_ROOT, client=client)
        self.node_id = node_id

    def labels(self, cell: Cell) -> dict[str, str]:
        return {**super().labels(cell), NODE_LABEL: self.node_id}


def probe_node() -> dict[str, Any]:
    """A node's facts; raises when its Docker engine is unreachable."""
    node_id, ip = _where()
    client = connect()
    info = client.info()
    return {
        "node_id": node_id,
        "ip": ip,
        "hostname": socket.gethostname(),
        "engine_id": info.get("ID") or node_id,
        "docker_version": client.version().get("Version"),
        "nvidia_runtime": has_nvidia_runtime(info),
        "project_root": str(PROJECT_ROOT),
    }


def _framework(name: str) -> Framework:
    found = discover(PROJECT_ROOT / "images")
    if name not in found:
        raise OrchestrationError(f"framework {name!r} is not in the shipped project at {PROJECT_ROOT}")
    return found[name]


def build_on_node(spec: NodeSpec, name: str, variant: str | None) -> dict[str, Any]:
    node_id, _ = _where()
    env = NodeDockerRunner(node_id, spec, connect()).prepare(_framework(name), variant)
    return {"ref": env.ref, "details": env.details, "error": env.error, "duration_s": env.duration_s}


def pull_on_node(ref: str) -> dict[str, Any]:
    """Make a registry image present on this node's engine; its id."""
    client = connect()
    try:
        return {"id": client.images.get(ref).id, "cached": True}
    except Exception as exc:
        if type(exc).__name__ != "ImageNotFound":
            raise
    repo, _, tag = ref.rpartition(":")
    return {"id": client.images.pull(repo, tag=tag).id, "cached": False}


def _node_env(runner: NodeDockerRunner, cell: Cell, image: str | None) -> Environment:
    if image is None:  # build on the node: a cached lookup unless this node's engine has not built it yet
        return runner.prepare(_framework(cell.framework), cell.variant)
    pulled = pull_on_node(image)
    return Environment(cell.image_key, image, {"tag": image, "id": pulled["id"]})


def _remove_cell_containers(client: Any, run_id: str, cell_id: str) -> int:
    selector = [f"{RUN_LABEL}={run_id}", f"{CELL_LABEL}={cell_id}"]
    removed = 0
    for c in client.containers.list(all=True, filters={"label": selector}, ignore_removed=True):
        with contextlib.suppress(Exception):
            c.remove(force=True)
            removed += 1
    return removed


def remove_cell_on_node(run_id: str, cell_id: str) -> int:
    """Kill and remove the cell's containers on this node's engine (Ctrl-C); how many there were."""
    return _remove_cell_containers(connect(), run_id, cell_id)


def _remove_earlier_attempts(client: Any, run_id: str, cell_id: str) -> None:
    """A retried cell's first container may outlive its dead worker on this engine: it is not ours any more."""
    _remove_cell_containers(client, run_id, cell_id)
    with contextlib.suppress(Exception):
        remove_orphans(client)  # and whatever other dead orchestrators or workers left on this engine


def run_cell_on_node(spec: NodeSpec, cell: Cell, image: str | None, params_text: str, timeout_s: float
                     ) -> dict[str, Any]:
    """The cell task: the container on this node, its Outcome as a dict (result JSON text included)."""
    import ray

    from orchestrator.pipeline import precise_now

    node_id, ip = _where()
    client = connect()
    _remove_earlier_attempts(client, spec.run_id, cell.cell_id)
    runner = NodeDockerRunner(node_id, spec, client)
    gpu = str(ray.get_gpu_ids()[0]) if spec.device == "gpu" else None
    placement = f"{ip}/{node_id[:8]}" + (f"/gpu{gpu}" if gpu is not None else "")
    env = _node_env(runner, cell, image)
    started_at = precise_now()
    if env.error is not None:
        failed = Outcome(None, False, False, None, env.error[-4000:], 0.0,
                         error=f"image build failed on node {placement}: {env.error.splitlines()[0]}")
        return {**dataclasses.asdict(failed), "placement": placement, "started_at": started_at}
    cell_dir = Path(tempfile.mkdtemp(prefix="lstm-bench-cell-"))
    box: dict[str, Outcome] = {}
    try:
        (cell_dir / PARAMS_FILE).write_text(params_text)
        io_dir(cell_dir).mkdir()
        worker = threading.Thread(target=lambda: box.update(o=runner.run(cell, env, cell_dir, gpu, timeout_s)))
        worker.start()
        try:
            # Joined in short steps: ray.cancel() raises KeyboardInterrupt here only between bytecodes.
            while worker.is_alive():
                worker.join(POLL_S)
        except KeyboardInterrupt:
            runner.abort()  # kills the container; run() then removes it
            worker.join(ABORT_GRACE_S)
            raise
        outcome = box["o"]
        return {**dataclasses.asdict(outcome), "placement": placement, "started_at": started_at}
    finally:
        with contextlib.suppress(OSError):
            remove_tree(cell_dir)  # iterative: a workload's 3000-deep tree cannot stop the task


# ---------------------------------------------------------------------------------------------- the driver


class RayRunner:
    name = "ray"

    def __init__(self, spec: NodeSpec, address: str, retries: int = 2, registry: str | None = None,
                 root: Path = PROJECT_ROOT) -> None:
        self.spec = spec
        self.address = address
        self.retries = max(0, retries)
        self.registry = registry.rstrip("/") if registry else None
        self.root = root
        self.resource = "GPU" if spec.device == "gpu" else SLOT_RESOURCE
        self.nodes: list[dict[str, Any]] = []
        self.capacity = 0
        self._aborted = threading.Event()

    @classmethod
    def from_args(cls, args: Any, matrix: Any, run_id: str) -> RayRunner:
        spec = NodeSpec(run_id, matrix.device, matrix.memory, matrix.pids_limit, parse_build_args(args.build_args),
                        matrix.build_timeout_s)
        address = args.ray_address or os.environ.get("RAY_ADDRESS") or "auto"
        return cls(spec, address, getattr(args, "ray_retries", 2), matrix.registry)

    # ------------------------------------------------------------------ preflight
    def runtime_env(self) -> dict[str, Any]:
        env_vars = {k: os.environ[k] for k in (SESSION_ENV,) if os.environ.get(k)}
        return {"working_dir": str(self.root), "excludes": EXCLUDES, "env_vars": env_vars}

    def preflight(self) -> dict[str, Any]:
        ray = _ray()
        _check_reachable(self.address)
        try:
            ray.init(address=self.address, runtime_env=self.runtime_env(), logging_level=logging.ERROR,
                     log_to_driver=False, namespace="lstm-bench")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise OrchestrationError(f"cannot connect to the Ray cluster at {self.address}: {_first_line(exc)}"
                                     ) from None
        live = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(self.resource, 0) > 0]
        self.capacity = int(sum(n["Resources"][self.resource] for n in live))
        if not self.capacity:
            how = "GPUs" if self.resource == "GPU" else f"ray start --resources='{{\"{SLOT_RESOURCE}\": 2}}'"
            raise OrchestrationError(f"no node of the Ray cluster at {self.address} offers {self.resource!r} "
                                     f"(CPU runs need nodes started with {how})")
        probes = [self._on(n["NodeID"], probe_node).remote() for n in live]
        try:
            self.nodes = ray.get(probes, timeout=PROBE_TIMEOUT_S)
        except Exception as exc:
            raise OrchestrationError(f"a Ray node cannot run cells: {_first_line(_cause(exc))}") from None
        if self.spec.device == "gpu":
            bad = [n["ip"] for n in self.nodes if not n["nvidia_runtime"]]
            if bad:
                raise OrchestrationError(f"GPU run, but the Docker engine of node(s) {', '.join(bad)} has no NVIDIA "
                                         "runtime (install the NVIDIA Container Toolkit there)")
        return {
            "engine": "ray",
            "ray_version": ray.__version__,
            "address": self.address,
            "resource": self.resource,
            "capacity": self.capacity,
            "images": f"registry {self.registry}" if self.registry else "built on each node",
            "retries": self.retries,
            "nodes": self.nodes,
        }

    def slots(self) -> list[str]:
        """As many cells in flight as the cluster has slots; Ray places each (the record says where)."""
        return [f"ray{i}" for i in range(self.capacity)]

    def _on(self, node_id: str, fn: Any) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return _remote(fn).options(num_cpus=0, max_retries=0,
                                      scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))

    def _one_node_per_engine(self) -> list[dict[str, Any]]:
        return list({n["engine_id"]: n for n in reversed(self.nodes)}.values())

    # ------------------------------------------------------------------ images
    def prepare(self, framework: Framework, variant: str | None, on_line: Any = None) -> Environment:
        ray = _ray()
        key = (framework.name, variant)
        started = time.monotonic()
        nodes = self._one_node_per_engine()
        if self.registry:
            ref, error = self._push(framework, variant, on_line)
            if error:
                return Environment(key, None, {}, error=error)
            calls = [self._on(n["node_id"], pull_on_node).remote(ref) for n in nodes]
        else:
            ref = None
            calls = [self._on(n["node_id"], build_on_node).remote(self.spec, framework.name, variant) for n in nodes]
        if on_line:
            on_line(f"{'pulling' if ref else 'building'} on {len(nodes)} Docker engine(s)")
        engines: dict[str, Any] = {}
        for node, call in zip(nodes, calls, strict=True):
            where = f"node {node['ip']}/{node['node_id'][:8]}"
            try:
                got = ray.get(call)
            except Exception as exc:
                return Environment(key, None, {}, error=f"{where}: {_first_line(_cause(exc))}")
            if got.get("error"):
                return Environment(key, None, {}, error=f"{where}: {got['error']}")
            engines[node["engine_id"][:12]] = {"node": node["node_id"][:8], **(got.get("details") or got)}
        first = next(iter(engines.values()))
        tag = ref or first.get("tag")
        details = {"strategy": "registry" if ref else "build-on-node", "tag": tag, "id": first.get("id"),
                   "cached": all(e.get("cached") for e in engines.values()), "engines": engines}
        return Environment(key, tag, details, None, time.monotonic() - started)

    def _push(self, framework: Framework, variant: str | None, on_line: Any) -> tuple[str, str | None]:
        """Build with the driver's engine and push to the registry; (reference, error)."""
        local = DockerRunner(self.spec.run_id, self.spec.device, self.spec.memory, self.spec.pids_limit,
                             self.spec.build_args, self.spec.build_timeout_s, root=self.root)
        env = local.prepare(framework, variant, on_line)
        if env.error or env.ref is None:
            return "", env.error or "build failed"
        digest = env.ref.rpartition(":")[2]
        repo = f"{self.registry}/{image_repo(framework.name, variant)}"
        try:
            local.client.images.get(env.ref).tag(repo, tag=digest)
            for chunk in local.client.images.push(repo, tag=digest, stream=True, decode=True):
                if "error" in chunk:
                    return "", f"push to {repo}:{digest} failed: {chunk['error']}"
        except Exception as exc:
            return "", f"push to {repo}:{digest} failed: {_first_line(exc)}"
        return f"{repo}:{digest}", None

    # ------------------------------------------------------------------ cells
    def _submit(self, cell: Cell, env: Environment, params_text: str, timeout_s: float) -> Any:
        slot = {"num_gpus": 1} if self.resource == "GPU" else {"resources": {SLOT_RESOURCE: 1}}
        # Retries are ours (below), so that the record can say what was lost and where.
        task = _remote(run_cell_on_node).options(num_cpus=0, max_retries=0, retry_exceptions=False, **slot)
        image = env.ref if self.registry else None
        return task.remote(self.spec, cell, image, params_text, timeout_s)

    def run(self, cell: Cell, env: Environment, cell_dir: Path, slot: str | None, timeout_s: float) -> Outcome:
        ray = _ray()
        started = time.monotonic()
        params_text = (cell_dir / PARAMS_FILE).read_text()
        # A node may hang rather than die; past this the cell is given up as crashed.
        deadline_s = timeout_s + self.spec.build_timeout_s + 600
        lost: list[str] = []
        for _attempt in range(self.retries + 1):
            if self._aborted.is_set():
                break
            ref = self._submit(cell, env, params_text, timeout_s)
            try:
                answer = self._await(ray, ref, started + deadline_s, cell.cell_id)
            except ray.exceptions.TaskCancelledError:
                break
            except _retryable(ray) as exc:
                if self._aborted.is_set():
                    break
                lost.append(_first_line(exc))
                continue
            except ray.exceptions.GetTimeoutError:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                return self._failed(started, f"no answer from the Ray cluster within {deadline_s:g} s", lost)
            except ray.exceptions.RayError as exc:
                if self._aborted.is_set():
                    break
                return self._failed(started, f"ray task failed: {_first_line(_cause(exc))}", lost)
            if self._aborted.is_set():
                break  # answered after Ctrl-C: whatever it says, we killed it or meant to; --resume runs it again
            return self._outcome(answer, cell_dir, lost)
        if self._aborted.is_set():
            return Outcome(None, False, False, None, "", time.monotonic() - started, error="aborted")
        return self._failed(started, f"lost its Ray worker or node {len(lost)} time(s), never finished", lost)

    def _await(self, ray: Any, ref: Any, deadline: float, cell_id: str) -> dict[str, Any]:
        while True:
            ready, _ = ray.wait([ref], timeout=POLL_S)
            if ready:
                return ray.get(ref)
            if self._aborted.is_set():
                self._stop(ray, ref, cell_id)
                raise ray.exceptions.TaskCancelledError()
            if time.monotonic() > deadline:
                raise ray.exceptions.GetTimeoutError()

    def _stop(self, ray: Any, ref: Any, cell_id: str) -> None:
        """After Ctrl-C: the task ends (politely, else forced) and none of the cell's containers is left anywhere."""
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)  # KeyboardInterrupt in the task: it kills its container (best effort)
        forced_at = time.monotonic() + ABORT_GRACE_S
        while True:
            self._sweep(ray, cell_id)  # a task that ignored the cancel cannot keep a container running
            ready, _ = ray.wait([ref], timeout=SWEEP_EVERY_S)
            if ready:
                break
            if time.monotonic() > forced_at:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)  # kills the worker process; its container may stay: swept below
                with contextlib.suppress(Exception):
                    ray.wait([ref], timeout=SWEEP_TIMEOUT_S)
                break
        self._sweep(ray, cell_id)  # the task has ended: nothing can start a container for this cell any more

    def _sweep(self, ray: Any, cell_id: str) -> None:
        calls = [self._on(n["node_id"], remove_cell_on_node).remote(self.spec.run_id, cell_id)
                 for n in self._one_node_per_engine()]
        with contextlib.suppress(Exception):  # a dead node's engine is not ours to clean any more
            ray.wait(calls, num_returns=len(calls), timeout=SWEEP_TIMEOUT_S)

    @staticmethod
    def _failed(started: float, why: str, lost: list[str]) -> Outcome:
        history = "".join(f"\nattempt {i + 1}: {reason}" for i, reason in enumerate(lost))
        return Outcome(None, False, False, None, history.strip(), time.monotonic() - started, error=why + history)

    @staticmethod
    def _outcome(answer: dict[str, Any], cell_dir: Path, lost: list[str]) -> Outcome:
        if lost:  # kept with the log, which a failed cell's record shows
            notes = "".join(f"[lstm-bench] attempt {i + 1} lost: {r}\n" for i, r in enumerate(lost))
            answer = {**answer, "log_tail": notes + (answer.get("log_tail") or "")}
        return Outcome(**answer)

    def abort(self) -> None:
        self._aborted.set()  # each run() stops its own task and removes its cell's containers (_stop)


def _check_reachable(address: str) -> None:
    """Fail fast when nothing listens at the cluster's address: ray.init would retry for many minutes."""
    hostport: str | None = address.removeprefix("ray://")
    if address == "auto":
        try:  # where `ray start` recorded the cluster; not public API, hence the guard
            from ray._private.services import canonicalize_bootstrap_address

            hostport = canonicalize_bootstrap_address("auto")
        except Exception:
            hostport = None  # ray.init says itself, at once, that it found no cluster
    if not hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise OrchestrationError(f"cannot connect to the Ray cluster at {address}: nothing answers at "
                                 f"{hostport} ({exc})") from None


def _cause(exc: BaseException) -> BaseException:
    """The exception raised inside a task, rather than Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
