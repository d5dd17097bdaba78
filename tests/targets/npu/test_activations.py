"""Table activations on the NPU end to end: a small CNN with hardswish, sigmoid, tanh and
leaky_relu keeps every activation on the NPU (Ethos-U: one Vela region with nothing left on
the CPU; generic-int8: C table kernels in the artifact, equal to the simulator bit for bit)."""

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
TABLE_OPS = {"hardswish", "sigmoid", "tanh", "leaky_relu"}


class ActivationsCnn(nn.Module):
    """MobileNetV3-style activations between convolutions, then global pool and classifier."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.c3, self.c4 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = nn.functional.hardswish(self.c1(x))
        x = torch.sigmoid(self.c2(x))
        x = torch.tanh(self.c3(x))
        x = nn.functional.leaky_relu(self.c4(x), 0.1)
        return self.fc(x.mean((2, 3)))


def _compile(device, out):
    torch.manual_seed(0)
    calib = _calib(SHAPE, 4)
    return edgecc.compile(ActivationsCnn().eval(), target=f"npu:{device}",
                          example_inputs=calib[0], calibration=calib,
                          pipeline="quantize{scheme=w8a8},fuse,dce", output_dir=str(out))


def _tables_on_npu(res):
    per_op = res.report["lowering"]["npu"]["per_op"]
    acts = [d for d in per_op if d["op"] in TABLE_OPS]
    assert {d["op"] for d in acts} == TABLE_OPS
    assert all(d["device"] == "npu" and "table" in d["reason"] for d in acts), acts


def test_ethos_u55_keeps_the_activations_in_one_vela_region(tmp_path):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    res = _compile("ethos-u55-128", tmp_path / "u55")
    _tables_on_npu(res)
    npu = res.report["lowering"]["npu"]
    assert npu["npu_mac_share"] == 1.0
    vela = res.report["lowering"]["vela"]
    (region,) = vela["regions"]
    assert {"hard_swish", "logistic", "tanh", "leaky_relu"} <= set(region["ops"])
    assert region["cpu_operators"] == [] and vela["npu_cycles"] > 0
    assert res.report["verification"]["passed"]
    assert _max_steps(res, SHAPE) <= 1.001  # measured 1.0 step over 8 inputs
    rng = np.random.default_rng(0)
    for region, _ in load_regions(res.output_dir):
        with open(os.path.join(res.output_dir, "npu", f"{region.name}.tflite"), "rb") as f:
            it = litert.Interpreter(model_content=f.read(),
                                    experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
        inputs = {n: rng.integers(-128, 128, region.tensors[n].shape, dtype=np.int8)
                  for n in region.inputs}
        for d in it.get_input_details():
            it.set_tensor(d["index"], inputs[d["name"]])
        it.invoke()
        ref = it.get_tensor(it.get_output_details()[0]["index"])
        (sim,) = simulate(region, inputs, fully_connected_rounding="single").values()
        assert np.array_equal(ref, sim), region.name


def test_generic_int8_table_kernels_equal_the_simulator(tmp_path):
    import tvm

    from edgecc.targets.npu.runner import from_region, to_region

    res = _compile("generic-int8", tmp_path / "generic")
    _tables_on_npu(res)
    assert res.report["verification"]["passed"]
    assert _max_steps(res, SHAPE) <= 1.001  # measured 1.0 step over 8 inputs
    lib = tvm.runtime.load_module(os.path.join(res.output_dir, "model.so"))
    rng = np.random.default_rng(1)
    kinds = set()
    for region, entry in load_regions(res.output_dir):
        kinds |= {op.kind for op in region.ops}
        fn = lib.get_function(entry["symbol"], True)
        (out_shape,) = entry["boundary_outputs"]
        xs = [rng.integers(-128, 128, s, dtype=np.int8) for s in entry["boundary_inputs"]]
        y = tvm.runtime.tensor(np.zeros(out_shape, np.int8))
        fn(*(tvm.runtime.tensor(x) for x in xs), y)
        feeds = {n: to_region(x, region.tensors[n].shape) for n, x in zip(region.inputs, xs)}
        (sim,) = simulate(region, feeds).values()
        assert np.array_equal(y.numpy(), from_region(sim, tuple(out_shape))), region.name
    assert {"hard_swish", "logistic", "tanh", "leaky_relu"} <= kinds
