"""What this machine has room for: the memory available to this process, read from the
kernel (Linux /proc and the cgroup's limit); None where the system does not say. And
`release_memory`, which gives back what the process freed."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from pathlib import Path

import torch

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
