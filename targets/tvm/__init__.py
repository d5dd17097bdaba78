"""The TVM Relax layer shared by the targets that compile through Apache TVM (``host``,
``arm64``, ``npu``): lowering a ``Program`` to Relax (``lowering``, ``converters``,
``quant_lowering``, ``integer_lowering`` with the ``int8_gemm`` kernels), the CPU
``pipeline`` with edgecc's default ``schedule`` and ``fast_math``, MetaSchedule ``tuning``,
the support table (``partition``), the in-process VM ``runner``, and ``TvmTarget``, the
base class those targets share (``target_base``).

This package is shared machinery, not a target: targets import it, it imports no target.
``tvm`` itself is imported inside functions only, so listing targets works without it.
"""

import os

# TVM binds its thread pool's threads to cores when the pool is made (TVM_BIND_THREADS unset
# or 1), the *calling* thread included: with one worker (TVM_NUM_THREADS=1, or its default of
# half the CPUs on a 2-CPU machine) it pinned the caller -- the user's main thread -- to CPU 0
# for good, and every thread started from it afterwards (the x86 kernels' pool workers) too.
# Two such processes on a 2-core machine then shared one core (the test suite ran at less
# than half speed). edgecc sizes the pool itself (runner.use_threads) and leaves placement to
# the OS, as onnxruntime does; a user who wants binding sets TVM_BIND_THREADS=1 first.
os.environ.setdefault("TVM_BIND_THREADS", "0")

from edgecc.targets.tvm.target_base import TvmTarget  # noqa: E402

__all__ = ["TvmTarget"]
