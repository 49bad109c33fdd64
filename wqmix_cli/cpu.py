"""CPU settings for training: torch threads and the C allocator."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping
from typing import Any

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the OS does not say (Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def default_threads(jobs: int = 1) -> int:
    """Half of one job's share of the available cores (``jobs`` runs in parallel on this
    machine): on 2 cores, two torch threads beside env stepping (or JAX's own threads) wait
    on each other and run the small ops of an update several times slower."""
    return max(1, job_cores(jobs) // 2)


def job_cores(jobs: int = 1) -> int:
    """One job's share of the available cores when ``jobs`` runs share this machine."""
    return max(1, available_cores() // max(jobs, 1))


def parallel_jobs(launcher: Mapping[str, Any]) -> int:
    """How many runs a Hydra launcher config starts at once on this machine: joblib's
    ``n_jobs`` (-1: one per core); 1 for the others (one at a time, or on other machines)."""
    n_jobs = launcher.get("n_jobs") if "joblib" in str(launcher.get("_target_", "")) else None
    if n_jobs is None:
        return 1
    return available_cores() if n_jobs < 0 else int(n_jobs)


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    An update allocates and frees tens of megabytes of activations; by default every
    buffer above 128 KiB is a fresh ``mmap`` whose pages fault in again on first touch,
    which made a CPU update about 20% slower. Returns False where there is no glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        settings = ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
        return all(libc.mallopt(param, value) == 1 for param, value in settings)
    except (OSError, AttributeError):
        return False
