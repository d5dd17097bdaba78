"""``edgecc_x86_quantize`` (x86_int8_quant_source): the activation quantize, alone and of a
global mean, equal bit for bit to the Relax ops it replaces (values on exact rounding ties
included), with the library's vector knob on and off; its counter grows per call; and the
integer lowering takes it for a model's input and its mean -> quantize (no TVM mean, divide
or clip left), with the same outputs as the build without it."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

import edgecc
from tests.targets.tvm.int8_cases import pooled_library
from tests.targets.tvm.test_x86_int8 import _Head, _avx2, _relax_tail

pytestmark = pytest.mark.skipif(not _avx2(), reason="needs an x86 CPU with AVX2")

QUANTS = ((0.37, -3.0, -128, 127), (0.011, 5.0, -100, 90), (0.05, 0.0, -128, 127))


def _operand(rng, shape, qs):
    """Normal values, a quarter of them on exact ties k·qs + qs/2 (the rounding's edge)."""
    x = (rng.standard_normal(shape) * 60 * qs).astype(np.float32)
    ties = ((rng.integers(-200, 200, shape) + 0.5) * qs).astype(np.float32)
    return np.where(rng.random(shape) < 0.25, ties, x).astype(np.float32)


def test_quantize_equals_the_relax_ops(tmp_path):
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8

    rng = np.random.default_rng(3)
    # (shape, cols): inputs (elementwise, a masked tail), means over 4x4 / 7x7 / 8x8 maps
    cases = (((1, 3, 15, 17), 1), ((1, 3, 48, 50), 1), ((1, 37, 4, 4), 16),
             ((2, 11, 7, 7), 49), ((1, 300, 8, 8), 64))  # 7200 rows: 2 pool items of 4096
    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", relax.TensorType(list(s), "float32")) for i, (s, _) in
          enumerate(cases)]
    outs, refs = [], []
    with bb.function("main", xs):
        with bb.dataflow():
            for (shape, cols), xv in zip(cases, xs):
                for quant in QUANTS:
                    out_shape = list(shape) if cols == 1 else list(shape[:2])
                    outs.append(x86_int8.emit_quantize(bb, xv, quant, cols, out_shape))
                    y = xv if cols == 1 else bb.emit(relax.op.mean(xv, [2, 3]))
                    refs.append(_relax_tail(bb, y, None, None, False, quant)[1])
            out = bb.emit_output(relax.Tuple(outs + refs))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / "q.so")
    lib, vm, so = pooled_library(module, path)
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_quant_vector")
    assert knob.value == 1  # on by default
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    calls = lib.get_function(x86_int8.QUANTIZE_CALLS, query_imports=True)
    args = [tvm.runtime.tensor(_operand(rng, s, 0.05)) for s, _ in cases]
    try:
        for on, pooled in ((1, 0), (1, -62), (0, 0)):  # -62: every job on the pool
            knob.value, shift.value = on, pooled
            before = calls()
            got = [o.numpy() for o in vm["main"](*args)]
            assert calls() - before == len(outs), on
            n = len(outs)
            for i in range(n):
                np.testing.assert_array_equal(got[i], got[n + i], err_msg=f"{on} {i}")
            assert len(np.unique(got[2])) > 50  # not saturated
    finally:
        knob.value, shift.value = 1, 0


def _build(model, x, calib, path, on):
    from edgecc.targets.tvm import integer_lowering, lowering, x86_int8

    program = edgecc.PassManager("quantize{scheme=w8a8},fuse,dce")(
        edgecc.trace(model, (x,)), context=edgecc.PassContext(calibration=calib)).program
    report: dict = {}
    integer_lowering.IntegerKernels.x86_quantize = on
    try:
        module = lowering.to_relax(program, integer_kernels=True, isa=x86_int8.ISA,
                                   report=report)
    finally:
        integer_lowering.IntegerKernels.x86_quantize = True
    lowering.build(module, lowering.llvm_target(None, 2), path)
    return module, report


def test_lowering_takes_the_input_and_mean_quantize(tmp_path):
    """MobileNetV2's head (conv, relu6, mean, fc): the input's quantize and the mean's run in
    edgecc_x86_quantize (counted in the report and by the kernel), the lowered module keeps
    no mean, divide or clip, and the outputs equal the build with TVM's kernels."""
    import tvm
    import tvm.relax

    from edgecc.targets.tvm import x86_int8

    torch.manual_seed(0)
    model = _Head().eval()
    x = torch.randn(1, 4, 6, 6)
    calib = [(torch.randn(1, 4, 6, 6),) for _ in range(4)]
    vms = {}
    for on in (True, False):
        path = str(tmp_path / f"m{int(on)}.so")
        module, report = _build(model, x, calib, path, on)
        main = module.script().split("def main")[1]
        if on:
            assert report.get("x86_quantize") == 1 and report.get("x86_quantize_mean") == 1, \
                report
            for op in ("R.mean(", "R.divide(", "R.clip("):
                assert op not in main, (op, main)
            assert main.count(f'"{x86_int8.QUANTIZE}"') == 2, main
        else:
            assert "x86_quantize" not in report and "R.mean(" in main, report
        lib = tvm.runtime.load_module(path)
        vms[on] = (lib, tvm.relax.VirtualMachine(lib, tvm.cpu()))
    calls = vms[True][0].get_function(x86_int8.QUANTIZE_CALLS, query_imports=True)
    for seed in range(4):
        torch.manual_seed(seed)
        fresh = tvm.runtime.tensor((torch.randn(1, 4, 6, 6) * (1 + seed)).numpy())
        before = calls()
        got = [vms[on][1]["main"](fresh) for on in (True, False)]
        assert calls() - before == 2
        got = [(g[0] if not hasattr(g, "numpy") else g).numpy() for g in got]
        np.testing.assert_array_equal(got[0], got[1])


class _Mid(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.sigmoid(x))


def test_other_quantizes_stay_tvm(tmp_path):
    """A quantize of an activation other than the input or a mean (here a sigmoid's) stays
    TVM's (fused with the op before it): no edgecc_x86_quantize call, one Relax divide."""
    from edgecc.targets.tvm import x86_int8

    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    module, report = _build(_Mid().eval(), x, [(torch.randn(1, 4, 8, 8),) for _ in range(4)],
                            str(tmp_path / "m.so"), True)
    main = module.script().split("def main")[1]
    assert "x86_quantize" not in report and report["x86_kernels"] == 1, report
    assert f'"{x86_int8.QUANTIZE}"' not in main and main.count("R.divide(") == 1, main
