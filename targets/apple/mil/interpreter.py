"""Run a MIL program (a saved ``.mlpackage``) with numpy, one op at a time.

Core ML does not execute off Apple OSes; this interpreter stands in for it on Linux so a
converted model can be compared with the program it came from.

    prog = load_program("model.mlpackage")
    outs = run_program(prog, {"x": x})              # {"out": ndarray}, by output name
    outs = run_mlpackage("model.mlpackage", {"x": x})
    weights = materialize_constexprs(prog)         # every constexpr_* result, bit-exact

Precision: every op's results are cast to their MIL type (fp16 programs round after each op);
inside an op the arithmetic is fp32/fp64 numpy. It does not emulate the Neural Engine's or the
GPU's accumulation, so fp16 results match a device only to fp16-level tolerances.

An op type the interpreter does not implement raises ``UnsupportedMILOpError`` naming the op
type and the op.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecc.errors import EdgeccError, InputSpecError

from . import constexpr, ops_math, ops_nn, ops_tensor
from .dtypes import to_compute, to_var_type, var_dtype
from .loader import load_program

__all__ = ["run_mlpackage", "run_program", "load_program", "materialize_constexprs",
           "UnsupportedMILOpError", "MILExecutionError", "SUPPORTED_OPS"]

# op type -> fn(values: dict[str, value], op) -> value | tuple of values.
# Inputs of these ops arrive widened to fp32; results are rounded to the MIL output types.
_COMPUTE_OPS = {**ops_math.OPS, **ops_nn.OPS, **ops_tensor.OPS}
# Decompression and (de)quantization see their inputs exactly as stored (bit-exact results).
_EXACT_OPS = constexpr.OPS
SUPPORTED_OPS = frozenset(_COMPUTE_OPS) | frozenset(_EXACT_OPS) | {"const"}


class UnsupportedMILOpError(EdgeccError):
    """The program holds a MIL op the interpreter does not implement."""


class MILExecutionError(EdgeccError):
    """An op failed while the interpreter ran it (names the op)."""


def run_mlpackage(path: str | Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Load a saved ``.mlpackage`` and run it on ``inputs``; outputs by name."""
    return run_program(load_program(path), inputs)


def run_program(program, inputs: dict[str, np.ndarray],
                function: str = "main") -> dict[str, np.ndarray]:
    """Run one function of a MIL program; returns ``{output name: ndarray}``."""
    if function not in program.functions:
        raise InputSpecError(f"the MIL program has no function '{function}': it has "
                             f"{', '.join(sorted(program.functions))}")
    func = program.functions[function]
    env = _bind_inputs(func, inputs)
    _run_block(func, env)
    return {var.name: env[var.name] for var in func.outputs}


def _bind_inputs(func, inputs: dict[str, np.ndarray]) -> dict:
    expected = dict(func.inputs)
    missing = sorted(set(expected) - set(inputs))
    extra = sorted(set(inputs) - set(expected))
    if missing or extra:
        raise InputSpecError(
            f"inputs do not match the Core ML model's: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}; it takes {sorted(expected)}")
    env = {}
    for name, var in expected.items():
        value = np.asarray(inputs[name])
        shape = var.shape
        if len(shape) != value.ndim or any(
                isinstance(d, (int, np.integer)) and d != s for d, s in zip(shape, value.shape)):
            raise InputSpecError(f"input '{name}' has shape {tuple(value.shape)}, the Core ML "
                                 f"model expects {tuple(shape)}")
        dtype = var_dtype(var)
        env[name] = value.astype(dtype) if dtype is not None else value
    return env


def _value_of(var, env):
    if var.name in env:
        return env[var.name]
    if var.val is not None:  # a const defined outside this block, e.g. by the loader
        return var.val
    raise MILExecutionError(f"MIL var '{var.name}' is used before it is defined")


def materialize_constexprs(program, function: str = "main") -> dict[str, np.ndarray]:
    """Every ``constexpr_*`` op's result, by output var name: the weights as Core ML
    decompresses them (bit-exact; compare with the weights the model was built from).

    Multi-output ops (``constexpr_sparse_blockwise_shift_scale``, ``constexpr_lut_to_sparse``)
    give one entry per output (the mask, then the nonzero values).
    """
    func = program.functions[function]
    env: dict = {}
    found = {}
    for op in func.operations:
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            _run_op(op, env)
            if op.op_type != "const":
                found.update({var.name: env[var.name] for var in op.outputs})
    return found


def _run_block(block, env: dict) -> None:
    for op in block.operations:
        _run_op(op, env)


def _run_op(op, env: dict) -> None:
    kind = op.op_type
    if kind == "const":
        out = op.outputs[0]
        env[out.name] = out.val
        return
    if kind in _EXACT_OPS:
        fn, widen = _EXACT_OPS[kind], False
    elif kind in _COMPUTE_OPS:
        fn, widen = _COMPUTE_OPS[kind], True
    else:
        raise UnsupportedMILOpError(
            f"MIL op '{kind}' (op '{op.name}') is not implemented by edgecc's Core ML "
            "interpreter, so this model cannot be run on Linux; add the op to "
            "edgecc.targets.apple.mil (ops_*.py)")
    values = {}
    for name, var in op.inputs.items():
        if isinstance(var, (list, tuple)):
            got = [_value_of(v, env) for v in var]
            values[name] = [to_compute(g) for g in got] if widen else got
        else:
            got = _value_of(var, env)
            values[name] = to_compute(got) if widen else got
    try:
        result = fn(values, op)
    except EdgeccError:
        raise
    except Exception as exc:
        raise MILExecutionError(f"MIL op '{kind}' (op '{op.name}') failed in the "
                                f"interpreter: {type(exc).__name__}: {exc}") from exc
    results = result if isinstance(result, tuple) else (result,)
    if len(results) != len(op.outputs):
        raise MILExecutionError(f"MIL op '{kind}' (op '{op.name}') gave {len(results)} "
                                f"results for {len(op.outputs)} outputs")
    for var, value in zip(op.outputs, results):
        value = to_var_type(value, var)
        _check_shape(op, var, value)
        env[var.name] = value


def _check_shape(op, var, value) -> None:
    """A result must have the shape coremltools' type inference gave its var (when static)."""
    shape = getattr(var, "shape", None)
    if shape is None or not isinstance(value, np.ndarray) or var_dtype(var) is None:
        return
    if not all(isinstance(d, (int, np.integer)) for d in shape):
        return
    if tuple(value.shape) != tuple(int(d) for d in shape):
        raise MILExecutionError(
            f"MIL op '{op.op_type}' (op '{op.name}') produced shape {tuple(value.shape)}, its "
            f"MIL type says {tuple(shape)}: an interpreter bug, please report it")
