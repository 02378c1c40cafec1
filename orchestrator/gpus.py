"""Which GPUs the Docker engine's host has, as the ids `DeviceRequest(device_ids=[...])` takes.

Ways to ask, first answer wins:
1. NVML through nvidia-ml-py (`import pynvml`), when it is installed: no subprocess, exact indices;
2. `nvidia-smi -L` on this host;
3. `nvidia-smi -L` inside a throw-away container of an image the engine already has, given every GPU: the NVIDIA
   Container Toolkit mounts nvidia-smi into it. This is the only way that sees the engine's GPUs when the driver is
   not installed on the orchestrator's machine, and it goes first when DOCKER_HOST names another machine, because
   then the local tools would describe the wrong host.
Indices are NVML's (the order nvidia-smi prints), which is what the container toolkit's device ids mean; they do not
follow CUDA_VISIBLE_DEVICES. MIG instances are not slots here: one whole GPU per cell.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InputError

_GPU_LINE = re.compile(r"^GPU (\d+): (.+?)(?: \(UUID: ([^)]+)\))?$")
PROBE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Gpu:
    index: str
    name: str
    uuid: str | None = None


@dataclass(frozen=True)
class Discovery:
    """The GPUs found, and how; `gpus is None` means no way of asking worked (not the same as 'none found')."""

    gpus: list[Gpu] | None
    source: str


def parse_nvidia_smi_list(text: str) -> list[Gpu]:
    """Whole GPUs from `nvidia-smi -L` output; MIG lines (indented) are skipped."""
    gpus = []
    for line in text.splitlines():
        m = _GPU_LINE.match(line.rstrip())
        if m:
            gpus.append(Gpu(m.group(1), m.group(2).strip(), m.group(3)))
    return gpus


def from_nvml() -> list[Gpu] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no usable driver here
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            gpus.append(Gpu(str(pynvml.nvmlDeviceGetIndex(handle)), _text(name), _text(uuid)))
        return gpus
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def from_nvidia_smi() -> list[Gpu] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:  # e.g. "couldn't communicate with the NVIDIA driver"
        return None
    return parse_nvidia_smi_list(proc.stdout)


def probe_image(client: Any) -> str | None:
    """A local image to run the probe in: the project's own first (known to start), else any tagged one."""
    tags = sorted(t for image in client.images.list() for t in image.tags)
    ours = [t for t in tags if t.startswith("lstm-bench/")]
    return (ours or tags or [None])[0]


def from_container(client: Any) -> list[Gpu] | None:
    import docker

    from orchestrator.runners.docker import MANAGED, SESSION_ENV, SESSION_LABEL

    image = probe_image(client)
    if image is None:
        return None
    labels = {MANAGED: "true", "lstm-bench.purpose": "gpu-probe"}
    if os.environ.get(SESSION_ENV):
        labels[SESSION_LABEL] = os.environ[SESSION_ENV]
    container = None
    try:
        container = client.containers.create(
            image,
            entrypoint=["nvidia-smi", "-L"],
            command=[],
            environment={"NVIDIA_DRIVER_CAPABILITIES": "utility"},
            # count=-1 is every GPU: right for listing them, never for running a cell on one.
            device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])],
            network_mode="none",
            labels=labels,
            detach=True,
        )
        container.start()
        code = int(container.wait(timeout=PROBE_TIMEOUT_S)["StatusCode"])
        if code != 0:
            return None
        return parse_nvidia_smi_list(container.logs(stdout=True, stderr=False).decode(errors="replace"))
    except Exception:  # no NVIDIA runtime: start() fails with 'could not select device driver'
        return None
    finally:
        if container is not None:
            with contextlib.suppress(Exception):
                container.remove(force=True)


def engine_is_remote() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    return host.startswith(("tcp://", "ssh://", "http://", "https://"))


def discover(client_factory: Callable[[], Any] | None = None) -> Discovery:
    """Ask in order (see the module docstring); the container probe needs a Docker client from client_factory."""

    def container() -> list[Gpu] | None:
        if client_factory is None:
            return None
        try:
            return from_container(client_factory())
        except Exception:
            return None

    ways: list[tuple[str, Callable[[], list[Gpu] | None]]] = [
        ("nvml", from_nvml),
        ("nvidia-smi", from_nvidia_smi),
        ("container", container),
    ]
    if engine_is_remote():
        ways.insert(0, ways.pop())
    for source, way in ways:
        found = way()
        if found is not None:
            return Discovery(found, source)
    return Discovery(None, "none")


def select(wanted: str | tuple[int, ...] | list[int], found: Discovery) -> list[str]:
    """The GPU ids to use as slots: `wanted` is "all" or explicit indices; explicit ones must exist when known."""
    if wanted == "all":
        if found.gpus is None:
            # Nothing could be asked (no driver tools, no probe image): let the engine decide about GPU 0.
            return ["0"]
        if not found.gpus:
            raise InputError(f"no GPUs found on the Docker engine's host (asked {found.source}); use --device cpu")
        return [g.index for g in found.gpus]
    ids = [str(g) for g in wanted]
    if found.gpus is not None:
        known = {g.index for g in found.gpus}
        missing = [i for i in ids if i not in known]
        if missing:
            have = ", ".join(sorted(known, key=int)) or "none"
            raise InputError(f"GPU {', '.join(missing)} not found; the host has GPU {have} (asked {found.source})")
    return ids
