"""What this machine has room for: the memory available to this process, read from the
kernel (Linux /proc and the cgroup's limit); None where the system does not say;
`release_memory`, which gives back what the process freed; and `compute_turn`, which
takes turns at the cores so that many sessions in one server share them instead of
thrashing, the interactive ones first; `load_per_core`, how busy the machine is."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from pruneviz.errors import Cancelled

_CGROUP = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory(device: torch.device | None = None) -> int | None:
    """Bytes this process can still allocate before the kernel refuses or kills it: the
    system's MemAvailable, or less if a cgroup (a container's limit) leaves less. On a
    CUDA `device`: the device's free memory, as its driver reports it."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    found: list[int] = []
    meminfo = Path("/proc/meminfo")
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    limit, used = _read_int(_CGROUP / "memory.max"), _read_int(_CGROUP / "memory.current")
    if limit is not None and used is not None:
        found.append(max(0, limit - used))
    return min(found) if found else None


def load_per_core() -> float | None:
    """The 1-minute load average (threads running or waiting to run) per core this process
    may use, or None where the system does not say. Above 1, threads queue for the cores
    and timings slow down; a measurement's own threads count about 1 per core."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not on this system
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return load / cores if cores else None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_memory() -> None:
    """Give the heap memory this process freed back to the system. glibc keeps what a
    forward pass's activations freed for reuse, so a server's resident size would only
    grow with every measurement; call this after one. Does nothing where the C library
    has no `malloc_trim`."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# -- taking turns at the cores ------------------------------------------------------------------
# torch runs each forward pass on all the cores (its intra-op threads). Two threads that
# run passes at once each start a full team of threads, so N sessions of one server would
# run N x cores threads on the same cores: every pass slows down, the interactive ones
# (a slider move, waited for by a person) as much as the background ones (a refinement
# on the whole evaluation set, a latency measurement). Instead the passes of one process
# take turns, one at a time, each on all the cores; a thread marked as background
# (`as_background`) takes its turn only when no interactive pass is waiting. A turn is one
# batch or one timed pass, so a waiting slider move is served within one of those. A
# bonus for honesty: a timed pass never overlaps another pass of this process.


class _Turns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._interactive_waiting = 0
        self.last_interactive = float("-inf")  # when the last interactive pass asked
        self._local = threading.local()

    def mark_background(self, background: bool = True,
                        stop: Callable[[], bool] | None = None) -> None:
        self._local.background = background
        self._local.stop = stop

    def _stopped(self) -> bool:
        stop = getattr(self._local, "stop", None)
        return stop is not None and stop()

    def is_background(self) -> bool:
        return bool(getattr(self._local, "background", False))

    @contextmanager
    def turn(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth:  # this thread already has the cores (a pass inside a pass)
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        background = self.is_background()
        with self._cond:
            if background:
                while self._busy or self._interactive_waiting:
                    # A background pass may wait long behind many interactive ones: it
                    # looks at its stop flag meanwhile, so stopping it never waits.
                    if self._stopped():
                        raise Cancelled("stopped while waiting for the cores")
                    self._cond.wait(STOP_CHECK_S)
            else:
                self.last_interactive = time.monotonic()
                self._interactive_waiting += 1
                try:
                    while self._busy:
                        self._cond.wait()
                finally:
                    self._interactive_waiting -= 1
            self._busy = True
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._cond:
                self._busy = False
                self._cond.notify_all()


STOP_CHECK_S = 0.05  # how often a waiting background pass asks whether to stop
_TURNS = _Turns()


def compute_turn() -> contextlib.AbstractContextManager[None]:
    """Wait for this thread's turn at the cores and hold it for one pass (a batch or a
    timed forward): interactive threads before background ones, one pass at a time."""
    return _TURNS.turn()


def wait_for_quiet(quiet: float, stop: Callable[[], bool]) -> bool:
    """Wait until no interactive pass has asked for the cores for `quiet` seconds (the
    tabs' slider moves have paused); False if `stop` said so first. Background work that
    can wait (a plan's slow figures) starts only then: while a class keeps moving sliders
    it would take the interpreter from their page runs, which then take long enough for
    more plans to settle and be measured, until every move waits (benchmarks/classroom.py,
    16 tabs)."""
    while True:
        since = time.monotonic() - _TURNS.last_interactive
        if since >= quiet:
            return True
        if stop():
            return False
        time.sleep(min(quiet - since, STOP_CHECK_S))


def as_background(stop: Callable[[], bool] | None = None) -> None:
    """Mark the calling thread as background work: its passes wait while an interactive
    one is waiting (a refinement, a long job running in the server's process). While it
    waits, `stop` is asked every `STOP_CHECK_S`; when it says so, `Cancelled` is raised."""
    _TURNS.mark_background(stop=stop)
