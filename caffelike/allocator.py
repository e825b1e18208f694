"""Keep freed CPU memory in the process (glibc's malloc), so that each training iteration or
inference pass reuses the previous one's pages instead of faulting fresh ones in.

A training step frees and reallocates the same activation and gradient buffers every
iteration. With glibc's defaults, buffers above the dynamic mmap threshold are mapped and
unmapped each time and a free top of the heap is returned to the OS, so the next iteration
pays a page fault (and the kernel's zeroing) per 4 KiB touched: thousands per iteration on
the bench nets, a few to 25 % of a CPU step (pycaffe's forward at batch 16 about 10 %). :func:`keep_freed_memory` fixes the two
thresholds (``mallopt``) at the largest size glibc's own dynamic rule would reach, once per
process. Peak memory is unchanged (pages are kept, not added); the process's resident size
after training stays near its peak. ``CAFFELIKE_MALLOC_TUNING=0`` leaves malloc alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 256 << 20  # a whole step's freed buffers stay (glibc's dynamic rule: 64 MiB)

_done = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; False where that is not glibc
    (or the environment says no), True once set."""
    global _done
    if _done:
        return True
    if os.environ.get("CAFFELIKE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
