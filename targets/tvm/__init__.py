"""The TVM Relax layer shared by the targets that compile through Apache TVM (``host``,
``arm64``, ``npu``): lowering a ``Program`` to Relax (``lowering``, ``converters``,
``quant_lowering``, ``integer_lowering`` with the ``int8_gemm`` kernels), the CPU
``pipeline`` with edgecc's default ``schedule`` and ``fast_math``, MetaSchedule ``tuning``,
the support table (``partition``), the in-process VM ``runner``, and ``TvmTarget``, the
base class those targets share (``target_base``).

This package is shared machinery, not a target: targets import it, it imports no target.
``tvm`` itself is imported inside functions only, so listing targets works without it.
"""

from edgecc.targets.tvm.target_base import TvmTarget

__all__ = ["TvmTarget"]
