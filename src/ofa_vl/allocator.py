"""Keep freed memory in the process, so large tensors are not page-faulted in on every pass.

glibc's malloc serves every block over its mmap threshold (at most 32 MB) with a fresh ``mmap``
and hands it back to the OS on ``free``. A CPU forward pass allocates such blocks all the time
(OFA-base's encoder bias is 40 MB per layer in fp32, the ResNet's activations at batch 8 are over
100 MB), so each pass faults every page of them in again: on a 2-core AVX-512 EPYC, cloning a
40 MB tensor took 10.4 ms that way and 1.6 ms from memory the process kept. This is the tuning
Intel's PyTorch guide gets from preloading jemalloc or tcmalloc, done with glibc's own ``mallopt``.

The cost: the process keeps its peak heap (freed memory is reused, not returned). The ``ofa``
command calls :func:`keep_freed_memory` for every command; ``OFA_VL_KEEP_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_BYTES = 2**31 - 1  # the largest trim threshold (an int): freed memory stays in the process


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and never trim it (glibc ``mallopt``), for this process.

    Returns whether it took effect: False off Linux/glibc (another allocator, nothing to do) or
    when ``OFA_VL_KEEP_MEMORY=0``.
    """
    if os.environ.get("OFA_VL_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: mallopt is not glibc's
        return False
    # M_MMAP_MAX = 0: no block is mmap'ed (mallopt caps the mmap threshold itself at 32 MB)
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
