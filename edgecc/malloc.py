"""glibc heap tuning for compiling large models (bounded memory, issue 20).

glibc serves allocations below its mmap threshold from the heap, and that threshold grows
(up to 32 MiB) each time a larger mmapped block is freed. Quantizing an LLM allocates and
frees weight-sized temporaries layer after layer; once the threshold has grown they come
from the heap, whose freed space glibc keeps (fragmented) instead of giving it back, so
the process's resident memory climbs past what is alive. A fixed threshold of 1 MiB
(``mallopt(M_MMAP_THRESHOLD)``, which also turns the growth off) sends every such
temporary to its own mapping, returned to the OS when freed: measured with
``bench/memory.py`` on a 123M-parameter Llama (w8a8, hidden 1024, 8 layers), peak RSS
3.21x -> 2.62x the fp32 weight bytes (1.47 -> 1.20 GiB), everything else the same.

:func:`bound_heap` is called by ``edgecc.compile`` once the model is loaded, for models of
at least :data:`MIN_WEIGHT_BYTES` (small models keep glibc's defaults: many small mmaps
cost page faults for nothing). ``EDGECC_MMAP_THRESHOLD`` (bytes; ``0``: leave glibc alone)
overrides the value; a ``MALLOC_MMAP_THRESHOLD_`` in the environment (glibc's own
setting) is respected as it is. Not glibc (macOS, musl): nothing is done.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc malloc.h
DEFAULT_THRESHOLD = 1 << 20
MIN_WEIGHT_BYTES = 256 << 20

_applied: int | None = None


def bound_heap(weight_bytes: int) -> int | None:
    """Set glibc's mmap threshold for a model of ``weight_bytes``; returns the threshold
    now in force by edgecc (None: not changed). Idempotent."""
    global _applied
    if _applied is not None:
        return _applied
    if weight_bytes < MIN_WEIGHT_BYTES or not sys.platform.startswith("linux"):
        return None
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    try:
        value = int(os.environ.get("EDGECC_MMAP_THRESHOLD", DEFAULT_THRESHOLD))
    except ValueError:
        return None
    if value <= 0:
        return None
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return None
    del gnu
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, value) != 1:
        return None
    _applied = value
    return value


__all__ = ["bound_heap"]
