"""MIL types as numpy dtypes, and the per-op rounding that emulates a program's precision.

Every op's results are cast to the dtype its MIL output type names: an fp16 program thus
rounds to fp16 after each op, as Core ML's CPU fp16 path does at op boundaries. Inside an op
the interpreter computes in fp32 (or fp64 where numpy does), so it does NOT emulate the
accumulation order or precision of the Neural Engine or GPU.

Sub-byte types (int4, uint1 .. uint6) are held in int8/uint8 arrays, as coremltools holds them.
"""

from __future__ import annotations

import numpy as np


def var_dtype(var) -> np.dtype | None:
    """The numpy dtype of a MIL var's elements, or None for non-tensor types (strings, lists)."""
    from coremltools.converters.mil.mil import types

    builtin = var.dtype
    if builtin is None or types.is_str(builtin):
        return None
    try:
        return np.dtype(types.nptype_from_builtin(builtin))
    except (TypeError, KeyError, ValueError):
        return None


def to_compute(value):
    """fp16 arrays widened to fp32 for computing (results are rounded back by ``to_var_type``)."""
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(np.float32)
    if isinstance(value, np.float16):
        return np.float32(value)
    return value


def to_var_type(value, var):
    """``value`` as the MIL var's dtype (the per-op rounding of an fp16 program)."""
    dtype = var_dtype(var)
    if dtype is None or isinstance(value, (str, list, tuple)):
        return value
    return np.asarray(value).astype(dtype, copy=False)
