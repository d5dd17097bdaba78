"""``--threads N`` read from the command line before TVM starts (its thread pool is sized at
its first use, before argparse runs), with TVM_NUM_THREADS / OMP_NUM_THREADS set to it: what
the per-kernel benches that take ``--threads`` (``bench/x86_fp32_knob.py``,
``bench/x86_fp32_mnv2_32.py``) do first."""

from __future__ import annotations

import os
import sys


def threads_before_tvm(default: int = 2) -> int:
    """The ``--threads N`` / ``--threads=N`` of ``sys.argv`` (else ``default``), exported for
    TVM's and OpenMP's pools."""
    threads = default
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            threads = int(sys.argv[i + 1])
        elif a.startswith("--threads="):
            threads = int(a.split("=", 1)[1])
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
