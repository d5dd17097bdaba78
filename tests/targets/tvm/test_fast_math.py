"""The polynomial exp / erf / tanh / softmax / gelu kernels: error against float64 numpy
within the bound fast_math.py states, and only float32 ops are rewritten."""

import math

import numpy as np
import pytest

from edgecc.targets.tvm.fast_math import fast_math

BOUND = 1e-5  # absolute for erf / tanh / gelu-derived values in [-1, 1]; relative for exp


def _run(op_name, x):
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    v = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [v]):
        with bb.dataflow():
            op = {"erf": relax.op.erf, "tanh": relax.op.tanh, "exp": relax.op.exp,
                  "gelu": relax.op.nn.gelu,
                  "softmax": lambda t: relax.op.nn.softmax(t, axis=-1)}[op_name]
            out = bb.emit_output(op(v))
        bb.emit_func_output(out)
    mod = fast_math()(bb.get())
    text = mod.script()
    exe = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy(), text


@pytest.mark.parametrize("op", ["erf", "tanh", "exp", "gelu", "softmax"])
def test_fast_math_error_bound(op):
    x = np.linspace(-9, 9, 4001, dtype=np.float32).reshape(1, -1)
    got, text = _run(op, x)
    assert "fast_" in text  # the polynomial kernel replaced the libm call
    xd = x.astype(np.float64)
    erf = np.vectorize(math.erf)
    want = {"erf": erf(xd), "tanh": np.tanh(xd), "exp": np.exp(xd),
            "gelu": xd * 0.5 * (1 + erf(xd / math.sqrt(2))),
            "softmax": np.exp(xd - xd.max()) / np.exp(xd - xd.max()).sum()}[op]
    if op == "exp":
        err = np.max(np.abs(got - want) / want)
    elif op == "gelu":
        err = np.max(np.abs(got - want) / np.maximum(1.0, np.abs(xd)))
    elif op == "softmax":
        err = np.max(np.abs(got - want) / want.max())
    else:
        err = np.max(np.abs(got - want))
    assert err <= BOUND, f"{op}: {err:.3g}"


def test_other_dtypes_are_left_alone():
    x = np.linspace(-3, 3, 64, dtype=np.float16).reshape(1, -1)
    got, text = _run("erf", x)
    assert "fast_" not in text
    np.testing.assert_allclose(got.astype(np.float64),
                               np.vectorize(math.erf)(x.astype(np.float64)), atol=2e-3)
