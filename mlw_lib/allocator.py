"""Keep freed tensor memory in the process instead of handing it back to the OS (glibc).

glibc's malloc serves a large allocation (above a threshold that adapts up to 32 MiB) with a
fresh `mmap` and unmaps it on free, so a training step that allocates the same large tensors
every time (a transformer batch's attention scores: 64 x 4 x 256 x 256 floats = 64 MiB) pays
for page faults and zeroing of that memory at every step, in kernel time. Raising the mmap and
trim thresholds makes malloc reuse the freed memory instead. On Linux with glibc only;
elsewhere `keep_freed_memory` changes nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc <malloc.h>)
THRESHOLD = 2**30  # bytes: allocations below stay on the heap; heap memory below is kept
_done: list[bool] = []  # [True] once this process has been set up (or could not be)


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds to `THRESHOLD` (once per process); True if set.
    Peak memory stays what it was, but the process keeps it until it exits."""
    if not _done:
        try:
            mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
            ok = all(mallopt(p, THRESHOLD) == 1 for p in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
        except (OSError, AttributeError, TypeError):  # no C library, or not glibc
            ok = False
        if not ok:
            log.info("malloc tuning is not available here (needs glibc); large tensors use mmap")
        _done.append(ok)
    return _done[0]
