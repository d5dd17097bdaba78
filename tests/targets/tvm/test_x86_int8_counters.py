"""``edgecc_x86_int8_counters``: the int8 kernels' path counters count only while it is set
(at load from ``EDGECC_KERNEL_COUNTERS=1``, which tests/conftest.py sets; off for users), and
switching them off changes no output bit."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

from edgecc.targets.tvm.x86_int8_counters_source import COUNTING
from tests.targets.tvm.test_x86_int8 import _avx2
from tests.targets.tvm.test_x86_int8_block import _build_blocks, _cases

pytestmark = pytest.mark.skipif(not _avx2(), reason="the x86 int8 kernels need AVX2")


def test_counters_off_change_no_output_and_count_nothing(tmp_path):
    from edgecc.targets.tvm import x86_int8_block

    # 16x16 and 8x8 blocks (banded at 2 threads), a 4x4 one (chained), batch 2 (three calls)
    shapes = [(1, 16, 96, 16, 16, 16, 1, True), (1, 32, 192, 32, 8, 8, 1, True),
              (1, 80, 480, 160, 4, 4, 1, False), (2, 5, 30, 7, 7, 5, 1, True)]
    xs, cases = _cases(np.random.default_rng(3), shapes)
    lib, vm, args = _build_blocks(tmp_path, xs, cases)
    flag = ctypes.c_int64.in_dll(ctypes.CDLL(str(tmp_path / "b.so")), COUNTING)
    assert os.environ.get("EDGECC_KERNEL_COUNTERS") == "1" and flag.value == 1  # read at load
    counter = lib.get_function(x86_int8_block.CALLS, query_imports=True)
    before = counter()
    on = [o.numpy() for o in vm["main"](*args)]
    assert counter() - before == len(cases)  # counting: every fused block call
    flag.value = 0
    try:
        before = counter()
        for _ in range(2):  # twice: the per-call flags are no longer taken
            off = [o.numpy() for o in vm["main"](*args)]
            for a, b in zip(on, off):
                np.testing.assert_array_equal(a, b)
        assert counter() == before  # off: nothing counted
    finally:
        flag.value = 1
    before = counter()
    vm["main"](*args)
    assert counter() - before == len(cases)  # on again


def test_a_w8a8_model_runs_the_same_without_counting(tmp_path):
    """MobileNetV2-32 w8a8 on the integer kernels (quantize, stem, depthwise, blocks, the
    classifier): counting off gives the same output bits on fresh inputs."""
    import torch
    import tvm

    import edgecc
    from edgecc.targets.tvm import x86_int8_block
    from examples.models import mobilenet_v2

    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    res = edgecc.compile(mobilenet_v2().eval(), "host", example_inputs=(x,),
                         calibration=[(torch.randn(1, 3, 32, 32),) for _ in range(4)],
                         pipeline="fold-batchnorm,quantize{scheme=w8a8},fuse,dce",
                         output_dir=str(tmp_path / "o"), progress=False,
                         target_options={"integer_kernels": True})
    inputs = [torch.randn(1, 3, 32, 32) for _ in range(3)]
    res.run(x)  # loaded
    lib = ctypes.CDLL(res._runner.library)
    flag = ctypes.c_int64.in_dll(lib, COUNTING)
    # the fused block calls run (the library the runner loaded: the same handle)
    blocks = tvm.runtime.load_module(res._runner.library).get_function(
        x86_int8_block.CALLS, query_imports=True)
    assert flag.value == 1
    before = blocks()
    on = [res.run(t)[0].clone() for t in inputs]
    assert blocks() - before == 3 * 16  # counting: MobileNetV2-32's 16 blocks a run
    flag.value = 0
    try:
        before = blocks()
        off = [res.run(t)[0].clone() for t in inputs]
        assert blocks() == before
    finally:
        flag.value = 1
    for a, b in zip(on, off):
        assert torch.equal(a, b)


@pytest.mark.parametrize("env, want", [(None, 0), ("1", 1), ("0", 0)])
def test_counters_default_from_the_environment(tmp_path, env, want):
    """A library loaded without ``EDGECC_KERNEL_COUNTERS`` (as users load it) counts nothing;
    ``=1`` turns counting on."""
    from edgecc.targets.tvm import x86_int8

    so = tmp_path / "k.so"
    subprocess.run(["g++", "-shared", "-o", str(so), x86_int8.compiled_object(),
                    f"-L{_ffi_libdir()}", "-ltvm_ffi"], check=True, capture_output=True)
    code = ("import ctypes, tvm_ffi; "
            f"print(ctypes.c_int64.in_dll(ctypes.CDLL({str(so)!r}), {COUNTING!r}).value)")
    environ = {k: v for k, v in os.environ.items() if k != "EDGECC_KERNEL_COUNTERS"}
    if env is not None:
        environ["EDGECC_KERNEL_COUNTERS"] = env
    out = subprocess.run([sys.executable, "-c", code], env=environ, check=True,
                         capture_output=True, text=True).stdout
    assert int(out.strip()) == want


def _ffi_libdir() -> str:
    import tvm_ffi.libinfo

    return os.path.dirname(tvm_ffi.libinfo.find_libtvm_ffi())
