"""keep_freed_memory: a large tensor comes from the heap, not a fresh mmap (glibc's mallinfo2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys, torch
from ofa_vl.allocator import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
took = keep_freed_memory() if sys.argv[1] == "keep" else False
before = libc.mallinfo2().hblkhd
x = torch.empty(64 << 20, dtype=torch.uint8)
print(took, libc.mallinfo2().hblkhd - before)
"""


def probe(mode: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
    """(whether keep_freed_memory took effect, bytes newly mmap'ed by a 64 MB tensor)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    )
    took, mapped = done.stdout.split()
    return took == "True", int(mapped)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_large_tensors_come_from_the_heap() -> None:
    took, mapped = probe("default")
    assert not took and mapped >= 64 << 20  # glibc's default: a fresh mapping, faulted in
    took, mapped = probe("keep")
    assert took and mapped == 0
    took, mapped = probe("keep", env={**os.environ, "OFA_VL_KEEP_MEMORY": "0"})
    assert not took and mapped >= 64 << 20  # the opt-out
