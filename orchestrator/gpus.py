"""Which GPUs the host has, as the ids a cell is given: `CUDA_VISIBLE_DEVICES` (local runner) or
`DeviceRequest(device_ids=[...])` (Docker).

Ways to ask, first answer wins:
1. NVML through nvidia-ml-py (`import pynvml`), when it is installed: no subprocess, UUIDs, MIG devices;
2. `nvidia-smi -L` on this host;
3. `nvidia-smi -L` inside a throw-away container of an image the engine already has, given every GPU: the NVIDIA
   Container Toolkit mounts nvidia-smi into it. This is the only way that sees the engine's GPUs when the driver is
   not installed on the orchestrator's machine, and it goes first when DOCKER_HOST names another machine, because
   then the local tools would describe the wrong host.
A cell is given a device's UUID (`GPU-...`, or `MIG-...` for a MIG instance), never an index: NVML numbers GPUs in
PCI bus order, CUDA fastest first, and a container numbers only what it was given, so an index names different GPUs
to different readers. CUDA_VISIBLE_DEVICES and the container toolkit both take UUIDs. A GPU in MIG mode is not a
slot; each of its MIG devices is (index "GPU:MIG", as nvidia-smi and the toolkit's CDI names write it). A GPU NVML
cannot read (NO_PERMISSION when a cgroup hides it, GPU_IS_LOST) is left out and said why (`Discovery.problems`).
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
_MIG_LINE = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: ([^)]+)\)$")
PROBE_TIMEOUT_S = 60
# An inherited CUDA_VISIBLE_DEVICES entry that is a CUDA ordinal we could not tie to an NVML device keeps this prefix
# in its slot id: the cell still gets exactly that entry, and nothing samples or names a GPU it may not be on.
CUDA_ORDINAL = "cuda:"


@dataclass(frozen=True)
class Gpu:
    index: str  # NVML's index ("2"), or "GPU:MIG" ("2:0") for a MIG device
    name: str
    uuid: str | None = None
    parent: str | None = None  # a MIG device's GPU (NVML index)

    @property
    def id(self) -> str:
        """What a cell is given: the UUID when known, else the index."""
        return self.uuid or self.index


@dataclass(frozen=True)
class Discovery:
    """The GPUs found, and how; `gpus is None` means no way of asking worked (not the same as 'none found')."""

    gpus: list[Gpu] | None
    source: str
    problems: tuple[str, ...] = ()  # GPUs seen but unusable, and why ("GPU 1: Insufficient Permissions")


def parse_nvidia_smi_list(text: str) -> list[Gpu]:
    """Devices from `nvidia-smi -L` output: whole GPUs, or for a GPU in MIG mode its MIG devices (indented lines)."""
    gpus: list[Gpu] = []
    parent: Gpu | None = None
    for line in text.splitlines():
        m = _GPU_LINE.match(line.rstrip())
        if m:
            parent = Gpu(m.group(1), m.group(2).strip(), m.group(3))
            gpus.append(parent)
            continue
        mig = _MIG_LINE.match(line.rstrip())
        if mig and parent is not None:
            with contextlib.suppress(ValueError):
                gpus.remove(parent)  # a GPU in MIG mode runs nothing itself: its MIG devices do
            gpus.append(Gpu(f"{parent.index}:{mig.group(2)}", f"{parent.name} MIG {mig.group(1)}", mig.group(3),
                            parent.index))
    return gpus


def from_nvml() -> Discovery | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no usable driver here
        return None
    try:
        gpus: list[Gpu] = []
        problems: list[str] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            try:
                found, problem = _nvml_devices(pynvml, i)
            except pynvml.NVMLError as exc:  # NO_PERMISSION (a cgroup hides it), GPU_IS_LOST, ...
                found, problem = [], f"GPU {i}: {exc} (NVML)"
            gpus.extend(found)
            if problem:
                problems.append(problem)
        return Discovery(gpus, "nvml", tuple(problems))
    except pynvml.NVMLError:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _nvml_devices(nv: Any, i: int) -> tuple[list[Gpu], str | None]:
    """GPU i as slots: itself, or its MIG devices when MIG mode is on."""
    handle = nv.nvmlDeviceGetHandleByIndex(i)
    name, uuid = _text(nv.nvmlDeviceGetName(handle)), _text(nv.nvmlDeviceGetUUID(handle))
    if not mig_enabled(nv, handle):
        return [Gpu(str(i), name, uuid)], None
    migs = []
    for m in range(nv.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, m)
        except nv.NVMLError:  # NOT_FOUND: an empty MIG slot
            continue
        migs.append(Gpu(f"{i}:{m}", _text(nv.nvmlDeviceGetName(mig)), _text(nv.nvmlDeviceGetUUID(mig)), str(i)))
    if not migs:
        return [], f"GPU {i}: MIG mode is on but it has no MIG devices (create some: nvidia-smi mig -cgi ... -C)"
    return migs, None


def mig_enabled(nv: Any, handle: Any) -> bool:
    try:
        return bool(nv.nvmlDeviceGetMigMode(handle)[0] == nv.NVML_DEVICE_MIG_ENABLE)
    except nv.NVMLError:  # NOT_SUPPORTED: a GPU without MIG
        return False


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

    def listed(way: Callable[[], list[Gpu] | None], source: str) -> Callable[[], Discovery | None]:
        def ask() -> Discovery | None:
            found = way()
            return None if found is None else Discovery(found, source)

        return ask

    def container() -> list[Gpu] | None:
        if client_factory is None:
            return None
        try:
            return from_container(client_factory())
        except Exception:
            return None

    ways: list[Callable[[], Discovery | None]] = [
        from_nvml, listed(from_nvidia_smi, "nvidia-smi"), listed(container, "container"),
    ]
    if engine_is_remote():
        ways.insert(0, ways.pop())
    for way in ways:
        found = way()
        if found is not None:
            return found
    return Discovery(None, "none")


def _asked(found: Discovery) -> str:
    return f"asked {found.source}" + "".join(f"; {p}" for p in found.problems)


def select(wanted: str | tuple[int, ...] | list[int], found: Discovery) -> list[str]:
    """The slot ids (UUIDs when known): `wanted` is "all" or NVML indices, a MIG-mode GPU's index meaning its MIG
    devices; explicit ones must exist when known."""
    if wanted == "all":
        if found.gpus is None:
            # Nothing could be asked (no driver tools, no probe image): let the engine decide about GPU 0.
            return ["0"]
        if not found.gpus:
            raise InputError(f"no usable GPU found ({_asked(found)}); use --device cpu")
        return [g.id for g in found.gpus]
    indices = [str(g) for g in wanted]
    if found.gpus is None:
        return indices
    chosen = {i: [g.id for g in found.gpus if i in (g.index, g.parent)] for i in indices}
    missing = [i for i, ids in chosen.items() if not ids]
    if missing:
        have = ", ".join(g.index for g in found.gpus) or "none"
        raise InputError(f"GPU {', '.join(missing)} not found; usable: GPU {have} ({_asked(found)})")
    return [gpu_id for ids in chosen.values() for gpu_id in ids]


def visible(found: Discovery, cuda_visible: str | None, pci_order: bool) -> Discovery:
    """The devices an inherited CUDA_VISIBLE_DEVICES (a batch scheduler's allocation) leaves this process.

    UUID entries are matched (CUDA takes a unique prefix); a number is CUDA's ordinal among the devices this process
    can open, which is NVML's order only when CUDA_DEVICE_ORDER=PCI_BUS_ID (`pci_order`) or every GPU is the same
    model (CUDA's "fastest first" then falls back to PCI order). An entry that cannot be tied to an NVML device stays
    a slot of its own, `cuda:<entry>`: the cell still gets exactly that entry, and nothing names or samples a GPU it
    may not be on.
    """
    if cuda_visible is None:
        return found
    whole = [g for g in found.gpus or [] if g.parent is None]
    same_model = len({g.name for g in found.gpus or []}) <= 1  # MIG devices count: CUDA lists them too
    out: list[Gpu] = []
    for entry in (e.strip() for e in cuda_visible.split(",")):
        if not entry or entry.startswith("-"):
            break  # CUDA stops at the first invalid entry ("-1" hides every GPU)
        if entry.isdigit():
            k = int(entry)
            if found.gpus is not None and (pci_order or same_model) and k < len(whole):
                out.append(whole[k])
            else:
                out.append(Gpu(f"{CUDA_ORDINAL}{entry}", f"CUDA device {entry}"))
            continue
        matches = [g for g in found.gpus or [] if g.uuid and g.uuid.startswith(entry)]
        out.append(matches[0] if len(matches) == 1 else Gpu(entry, entry, entry))
    if not out:
        raise InputError(f"CUDA_VISIBLE_DEVICES={cuda_visible!r} (inherited) hides every GPU; unset it or use "
                         "--device cpu")
    return Discovery(out, f"{found.source}, within CUDA_VISIBLE_DEVICES={cuda_visible}", found.problems)
