"""CPU settings for training: torch threads and the C allocator."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def default_threads() -> int:
    """Half the CPU cores: on 2 cores, two torch threads beside env stepping (or JAX's own
    threads) wait on each other and run the small ops of an update several times slower."""
    return max(1, (os.cpu_count() or 2) // 2)


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
