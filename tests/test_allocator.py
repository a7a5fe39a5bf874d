"""mlw_lib.allocator: a large tensor comes from malloc's heap, not from a fresh mmap."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Bytes held in mmapped chunks (glibc's mallinfo2().hblkhd) while a 64 MiB tensor is alive.
PROBE = """
import ctypes, sys
import torch
from mlw_lib.allocator import keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # once per process, then remembered
before = mallinfo2().hblkhd
tensor = torch.ones(2**24)
print(mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_serves_large_tensors_from_the_heap() -> None:
    def mmapped(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    assert mmapped("default") >= 2**26  # glibc's default: a fresh mmap of the 64 MiB
    assert mmapped("keep") < 2**26
