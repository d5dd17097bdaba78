"""Concatenation and strided slices between int8 layers go to the NPU through their BYOC
patterns: Ethos-U keeps a channel split / concat block in one Vela region with nothing on
the CPU; generic-int8 runs them as C kernels equal to the simulator bit for bit."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

import edgecc
from edgecc.targets.npu.bundle import load_regions
from edgecc.targets.npu.simulator import simulate
from tests.targets.npu.test_npu_target import _calib, _max_steps

pytest.importorskip("tvm")
pytest.importorskip("ethosu.vela")

SHAPE = (1, 3, 8, 8)


class SplitConcat(nn.Module):
    """Channel split into two branches, concatenated back; then an H-strided slice."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, 1, 1)
        self.a, self.b = nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 8, 1)
        self.c2 = nn.Conv2d(16, 8, 1)
        self.c3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        y = torch.cat([torch.relu(self.a(x[:, :8])), self.b(x[:, 8:])], 1)
        return self.c3(self.c2(y)[:, :, ::2])


def _compile(device, out):
    torch.manual_seed(0)
    calib = _calib(SHAPE, 4)
    return edgecc.compile(SplitConcat().eval(), target=f"npu:{device}", example_inputs=calib[0],
                          calibration=calib, pipeline="quantize{scheme=w8a8},fuse,dce",
                          output_dir=str(out))


def _close_to_fake_quant(res):
    """The slices and the concat requantize with TFLite's integer QUANTIZE (<= 1 LSB from
    the fake-quant program's float rounding), which the next convolutions amplify: measured
    3.0 output steps at most over 8 inputs (both devices: the same integer arithmetic),
    SQNR to the fake-quant program 43.7 dB against the quantization's own 36.8 dB."""
    ver = res.report["verification"]
    assert ver["passed"] and ver["sqnr_db"] > ver["quantization_sqnr_db"]
    assert _max_steps(res, SHAPE) <= 3.001


def _on_npu(res):
    per_op = res.report["lowering"]["npu"]["per_op"]
    moves = [d for d in per_op if d["op"] in ("cat", "slice")]
    assert len(moves) == 4 and all(d["device"] == "npu" for d in moves), moves
    assert res.report["lowering"]["npu"]["npu_op_share"] == 1.0


def test_ethos_u55_split_and_concat_in_one_vela_region(tmp_path):
    res = _compile("ethos-u55-128", tmp_path / "u55")
    _on_npu(res)
    (region,) = res.report["lowering"]["vela"]["regions"]
    assert region["ops"].count("strided_slice") == 3 and region["ops"].count("concat") == 1
    assert region["cpu_operators"] == [] and res.report["lowering"]["vela"]["npu_cycles"] > 0
    _close_to_fake_quant(res)


def test_generic_int8_split_and_concat_kernels_equal_the_simulator(tmp_path):
    import tvm

    from edgecc.targets.npu.runner import from_region, to_region

    res = _compile("generic-int8", tmp_path / "generic")
    _on_npu(res)
    _close_to_fake_quant(res)
    lib = tvm.runtime.load_module(os.path.join(res.output_dir, "model.so"))
    rng = np.random.default_rng(2)
    kinds = set()
    for region, entry in load_regions(res.output_dir):
        kinds |= {op.kind for op in region.ops}
        (out_shape,) = entry["boundary_outputs"]
        xs = [rng.integers(-128, 128, s, dtype=np.int8) for s in entry["boundary_inputs"]]
        y = tvm.runtime.tensor(np.zeros(out_shape, np.int8))
        lib.get_function(entry["symbol"], True)(*(tvm.runtime.tensor(x) for x in xs), y)
        feeds = {n: to_region(x, region.tensors[n].shape) for n, x in zip(region.inputs, xs)}
        (sim,) = simulate(region, feeds).values()
        assert np.array_equal(y.numpy(), from_region(sim, tuple(out_shape))), region.name
    assert {"concat", "strided_slice"} <= kinds
