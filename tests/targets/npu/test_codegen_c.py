"""The C codegen's kernels equal the integer simulator bit for bit: every region recipe of
``regions.py`` in one C++ translation unit, compiled once (g++ through TVM's export), each
function called on random int8 inputs."""

import numpy as np
import pytest

from edgecc.targets.npu.codegen_c import module_source
from edgecc.targets.npu.region import RegionBuilder
from edgecc.targets.npu.simulator import simulate
from tests.targets.npu import regions

tvm = pytest.importorskip("tvm")


def _mul_avgpool(rng):
    """mul of two activations, average pool (SAME, padding excluded), requantize."""
    b = RegionBuilder("mul_avgpool")
    s1, s2 = rng.uniform(0.02, 0.1), rng.uniform(0.02, 0.1)
    x1 = b.input("x1", (1, 7, 6, 8), s1, int(rng.integers(-20, 21)))
    x2 = b.input("x2", (1, 7, 6, 8), s2, int(rng.integers(-20, 21)))
    sm = s1 * s2 * 74 * 74 / 40  # a typical product spans ~40 output steps
    m = b.mul(x1, x2, sm, int(rng.integers(-20, 21)))
    p = b.avg_pool2d(m, 3, 2, padding="SAME")
    return b.build([b.quantize(p, sm * rng.uniform(0.3, 1.0), int(rng.integers(-20, 21)))])


RECIPES = {"conv": regions.conv, "depthwise": regions.depthwise, "fc": regions.fully_connected,
           "add": regions.add, "batch_matmul": regions.batch_matmul, "flatten": regions.flatten,
           "mul_avgpool": _mul_avgpool, "mean": regions.mean, "activations": regions.activations,
           "slice_concat": regions.slice_concat,
           "softmax": lambda r: regions.softmax(r, shape=(3, 5, 40), scale=0.02),
           "maxpool_same": lambda r: regions.pool(r, kind="max_pool2d", padding="SAME", kernel=3,
                                                  stride=2)}


def test_c_kernels_equal_the_simulator_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    built = {name: make(rng) for name, make in RECIPES.items()}
    symbols = {name: f"edgecc_test_{name}" for name in built}
    source = module_source([(r, symbols[n]) for n, r in built.items()])
    mod = tvm.get_global_func("runtime.CSourceModuleCreate")(source, "cc",
                                                             list(symbols.values()), [])
    path = str(tmp_path / "kernels.so")
    mod.export_library(path)
    lib = tvm.runtime.load_module(path)
    for name, region in built.items():
        for _ in range(3):
            ins = {n: rng.integers(-128, 128, region.tensors[n].shape, dtype=np.int8)
                   for n in region.inputs}
            (want,) = simulate(region, ins).values()
            # 4-D boundary tensors are NCHW (the Relax graph's layout)
            args = [x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x
                    for x in (ins[n] for n in region.inputs)]
            out_shape = want.shape if want.ndim != 4 else tuple(want.transpose(0, 3, 1, 2).shape)
            got = tvm.runtime.tensor(np.zeros(out_shape, np.int8))
            lib.get_function(symbols[name])(*(tvm.runtime.tensor(a) for a in args), got)
            got = got.numpy()
            got = got.transpose(0, 2, 3, 1) if got.ndim == 4 else got
            assert np.array_equal(got, want), name
            assert np.mean(np.abs(want.astype(int)) >= 127) < 0.5, name  # not all saturated
