"""Random operands for the x86 int8 / AMX kernel tests: int8 tensors and requantizing
epilogues drawn from one generator (so a test's draws, and its cases, stay as written)."""

from __future__ import annotations

import numpy as np


def random_int8(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def random_requant(rng: np.random.Generator, n: int):
    """A requantizing ``x86_int8.Epilogue`` for ``n`` channels (31-bit multipliers, shifts
    36-41, clamp [-100, 120], output zero point 3)."""
    from edgecc.targets.tvm import x86_int8

    shift = rng.integers(36, 42, n).astype(np.int64)
    return x86_int8.Epilogue(
        off=rng.integers(-5000, 5000, n).astype(np.int32), requant=True,
        mult=rng.integers(2 ** 30, 2 ** 31, n).astype(np.int64),
        add=(np.int64(1) << (shift - 1)) + rng.integers(-2 ** 38, 2 ** 38, n),
        shift=shift, lo=-100, hi=120, zy=3)


def full_range(e):
    """``e`` with the whole int8 range as its clamp (no activation): the unclamped outputs."""
    import dataclasses

    return dataclasses.replace(e, lo=-128 - e.zy, hi=127 - e.zy)


def build_and_load(module, path: str):
    """``module`` built for this CPU (2 threads) into ``path`` and loaded: (library, VM)."""
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import lowering

    lowering.build(module, lowering.llvm_target(None, 2), path)
    lib = tvm.runtime.load_module(path)
    return lib, relax.VirtualMachine(lib, tvm.cpu())


def w8a8_program(model):
    """``model`` (seeded before the call) traced on a seeded 1x3x32x32 input and quantized
    w8a8 on 4 random calibration batches: (program, input)."""
    import torch

    import edgecc

    torch.manual_seed(1)
    x = torch.randn(1, 3, 32, 32)
    calib = [(torch.randn(1, 3, 32, 32),) for _ in range(4)]
    program = edgecc.PassManager("fold-batchnorm,quantize{scheme=w8a8},fuse,dce")(
        edgecc.trace(model, (x,)), context=edgecc.PassContext(calibration=calib)).program
    return program, x


def pooled_library(module, path: str, threads: int = 2):
    """``build_and_load`` with the kernels' pool set to ``threads`` (the pooled bands
    need a second thread): (library, VM, the library as ``ctypes.CDLL``)."""
    import ctypes

    lib, vm = build_and_load(module, path)
    so = ctypes.CDLL(path)
    so.edgecc_pool_configure.argtypes = [ctypes.c_int32, ctypes.c_int32]
    so.edgecc_pool_configure(-1, threads)
    return lib, vm, so


def calls_library(emit, xs, ws, eps, calls, path: str, pool_threads: int | None = 2):
    """One library with an ``emit`` call (``x86_int8.emit_conv`` / ``emit_depthwise``) per
    input ``xs[i]``, weight ``ws[i]``, epilogue ``eps[i]`` and ``calls[i]`` = (input zero
    point, stride, pad, dilation), built into ``path`` and loaded; the kernels' pool set to
    ``pool_threads`` (None: as loaded): (library, VM, the library as ``ctypes.CDLL``)."""
    import ctypes

    from tvm import relax

    from edgecc.targets.tvm import x86_int8

    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(list(x.shape), "int8"))
              for i, x in enumerate(xs)]
    with bb.function("main", params):
        with bb.dataflow():
            outs = [emit(bb, p, w, c[0], list(c[1]), list(c[2]), list(c[3]), e)
                    for p, w, c, e in zip(params, ws, calls, eps)]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    lib, vm = build_and_load(module, path)
    so = ctypes.CDLL(path)  # the library TVM loaded (same path: same handle)
    if pool_threads is not None:  # the kernels' pool (bands / splits need 2 threads)
        so.edgecc_pool_configure.argtypes = [ctypes.c_int32, ctypes.c_int32]
        so.edgecc_pool_configure(-1, pool_threads)
    return lib, vm, so


def conv_cases_library(rng: np.random.Generator, cases, path: str):
    """One library with an ``x86_int8.emit_conv`` call per case ``(x shape, w shape, input
    zero point, stride, pad, dilation)`` on random operands drawn from ``rng`` (inputs, then
    weights, then epilogues), built into ``path`` and loaded with the kernels' pool at 2
    threads: (xs, ws, epilogues, library, VM, the library as ``ctypes.CDLL``)."""
    from edgecc.targets.tvm import x86_int8

    xs = [random_int8(rng, *c[0]) for c in cases]
    ws = [random_int8(rng, *c[1]) for c in cases]
    eps = [random_requant(rng, c[1][0]) for c in cases]
    lib, vm, so = calls_library(x86_int8.emit_conv, xs, ws, eps, [c[2:] for c in cases], path)
    return xs, ws, eps, lib, vm, so


POOL, SERIAL = -62, 63  # edgecc_x86_serial_work_log2: every job on the pool / every job serial


def runs_knob_on_and_off(so, vm, args, knob: str, calls, expected: int) -> list:
    """``vm["main"](*args)`` twice at each of knob ``knob`` (int64) 1 then 0 and the pool
    shift SERIAL then POOL; asserts ``calls()`` (the path's counter) grew by ``2 * expected``
    per setting with the knob on and not at all with it off, and that the knob defaults to 1.
    Returns every run's outputs (numpy), for comparing with the reference."""
    import ctypes

    value = ctypes.c_int64.in_dll(so, knob)
    assert value.value == 1  # on by default
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    runs = []
    try:
        for on in (1, 0):
            value.value = on
            for pool in (SERIAL, POOL):
                shift.value = pool
                before = calls()
                for _ in range(2):  # pooled: the bands land on either thread in turn
                    runs.append([o.numpy() for o in vm["main"](*args)])
                assert calls() - before == 2 * on * expected, (on, pool)
    finally:
        value.value, shift.value = 1, 0
    return runs
