"""One sampling thread per running cell; it only reads, keeps samples in memory, and measures its own cost."""

from __future__ import annotations

import threading
import time
from typing import Protocol

Sample = dict[str, float | int]
# 0.2 s: five samples a second resolve a timed part of a second or more (shorter ones are interpolated), and the
# reads cost about 0.2% of one core (benchmarks/sampler_overhead.py measures it).
PERIOD_S = 0.2


class Source(Protocol):
    """Something to read on every tick. `read` returns named numbers; {} when the thing is gone (cell ended)."""

    name: str

    def read(self) -> Sample: ...


class Sampler:
    """Reads every source each `period_s` from `start()` to `stop()`, one sample at each end included.

    A source whose very first read fails is dropped and its reason kept in `unavailable` ("cell: ..."); a later
    failure (the container's cgroup vanished as it exited) only leaves that source's fields out of the sample.
    """

    def __init__(self, sources: list[Source] | None = None, period_s: float = PERIOD_S) -> None:
        self.period_s = period_s
        self.samples: list[Sample] = []
        self.unavailable: dict[str, str] = {}
        self.cpu_s = 0.0  # CPU time this thread spent reading: the sampler's own cost
        self._sources: list[Source] = []
        self._read_once: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for source in sources or []:
            self.add(source)

    def add(self, source: Source) -> None:
        with self._lock:
            self._sources.append(source)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="machine-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.period_s):
                break
        self.sample()

    def sample(self) -> None:
        started = time.thread_time()
        sample: Sample = {"t": time.time()}  # wall clock: the harness stamps its timed window with time.time()
        with self._lock:
            sources = list(self._sources)
        for source in sources:
            try:
                sample.update(source.read())
                self._read_once.add(source.name)
            except Exception as exc:
                if source.name not in self._read_once:
                    self.unavailable[source.name] = f"unavailable: {first_line(exc)}"
                    with self._lock:
                        self._sources.remove(source)
        self.samples.append(sample)
        self.cpu_s += time.thread_time() - started


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
