"""edgecc.quant: the quantization semantics, checked against ONNX's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgecc import quant as Q

ONNX_TYPES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
              "int4": TensorProto.INT4, "uint4": TensorProto.UINT4}


def onnx_qdq(x, scale, zp, dtype, axis, block):
    attrs = {"axis": axis}
    if block:
        attrs["block_size"] = block
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        initializer=[
            helper.make_tensor("s", TensorProto.FLOAT, list(scale.shape),
                               scale.flatten().tolist()),
            helper.make_tensor("z", ONNX_TYPES[dtype], list(zp.shape),
                               zp.flatten().tolist()),
        ])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(model).run(None, {"x": x.numpy()})[0]


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int4", "uint4"])
@pytest.mark.parametrize("granularity", ["tensor", "axis", "block"])
def test_quantize_dequantize_match_onnx(dtype, granularity):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 64, generator=g) * 3
    fmt = Q.qformat(dtype)
    shape, axis, block = {"tensor": ((), 0, 0), "axis": ((6,), 0, 0),
                          "block": ((6, 4), 1, 16)}[granularity]
    scale = torch.rand(shape, generator=g) * 0.2 + 0.01
    zp = torch.randint(fmt.qmin // 2, fmt.qmax // 2 + 1, shape, generator=g)
    zp = zp.to(fmt.zero_point_dtype)
    ours = Q.dequantize(Q.quantize(x, scale, zp, axis, block, fmt.qmin, fmt.qmax, dtype),
                        scale, zp, axis, block, dtype, torch.float32)
    np.testing.assert_array_equal(ours.numpy(), onnx_qdq(x, scale, zp, dtype, axis, block))
    fq = Q.fake_quantize(x, scale, zp, axis, block, fmt.qmin, fmt.qmax, dtype)
    assert torch.equal(fq, ours)


def test_round_half_to_even_and_saturation():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 1000.0, -1000.0])
    q = Q.quantize(x, torch.tensor(1.0), torch.tensor(0, dtype=torch.int8), 0, 0, -128, 127,
                   "int8")
    assert q.tolist() == [0, 2, 2, 0, -2, 127, -128]


@settings(max_examples=settings.default.max_examples * 3, deadline=None)
@given(st.lists(st.integers(-8, 7), min_size=2, max_size=40).filter(lambda v: len(v) % 2 == 0))
def test_int4_packing_round_trips(values):
    q = torch.tensor(values, dtype=torch.int16)
    packed = Q.pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.numel() == len(values) // 2
    assert Q.unpack_int4(packed, signed=True).tolist() == values
    # element 2i in the low nibble, as ONNX packs INT4
    assert int(packed[0]) & 0xF == values[0] & 0xF


def test_odd_last_dim_int4_is_refused():
    with pytest.raises(ValueError, match="even last dimension"):
        Q.pack_int4(torch.zeros(3, dtype=torch.int16))


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "float16", "bfloat16"])
def test_float_formats_round_like_torch_casts(dtype):
    x = torch.randn(1000) * 50
    storage = Q.qformat(dtype).storage
    lim = torch.finfo(storage).max
    ref = (x / 0.5).clamp(-lim, lim).to(storage).float() * 0.5
    fq = Q.fake_quantize(x, torch.tensor(0.5), torch.tensor(0.0), 0, 0, 0, 0, dtype)
    assert torch.equal(fq, ref)


def test_straight_through_gradient_is_clipped():
    x = torch.tensor([-300.0, -1.2, 0.3, 2.6, 300.0], requires_grad=True)
    y = Q.fake_quantize(x, torch.tensor(1.0), torch.tensor(0, dtype=torch.int8), 0, 0,
                        -128, 127, "int8")
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_lsq_scale_gradient_matches_finite_difference():
    # d/ds of sum(fake_quant(x; s)) is piecewise constant; check it against the LSQ formula
    # written out independently.
    x = torch.tensor([0.26, -0.74, 3.1, 40.0, -41.0])
    s = torch.tensor(0.2, requires_grad=True)
    Q.fake_quantize(x, s, torch.tensor(0, dtype=torch.int8), 0, 0, -128, 127,
                    "int8").sum().backward()
    xs = x / 0.2
    expected = torch.where(xs.abs() <= 127.5, torch.round(xs) - xs,
                           torch.where(xs < 0, torch.tensor(-128.0), torch.tensor(127.0)))
    expected = torch.where(xs > 127, torch.tensor(127.0), expected)
    expected = torch.where(xs < -128, torch.tensor(-128.0), expected)
    assert s.grad.item() == pytest.approx(expected.sum().item(), rel=1e-5)


def test_block_scale_gradient_has_the_scale_shape():
    x = torch.randn(4, 64)
    s = (torch.rand(4, 2) * 0.1 + 0.01).requires_grad_()
    Q.fake_quantize(x, s, torch.zeros(4, 2, dtype=torch.int8), 1, 32, -8, 7,
                    "int4").pow(2).sum().backward()
    assert s.grad.shape == (4, 2) and torch.isfinite(s.grad).all()


def test_scale_from_range_covers_the_range():
    lo, hi = torch.tensor([-1.0, 0.5]), torch.tensor([3.0, 2.0])
    s, z = Q.scale_from_range(lo, hi, "uint8", symmetric=False)
    q = Q.quantize(torch.stack([lo, hi], 1).T.contiguous(), s, z.to(torch.uint8), 1, 0, 0, 255,
                   "uint8")
    assert q[0, 0] == 0 and q[1, 0] == 255  # lo -> qmin, hi -> qmax
    assert z[1] == 0  # a range not containing 0 is widened to include it
    s, z = Q.scale_from_range(lo, hi, "int8", symmetric=True, qmin=-127, qmax=127)
    assert torch.allclose(s, torch.tensor([3.0, 2.0]) / 127) and (z == 0).all()


def test_quantized_ops_survive_export():
    class M(torch.nn.Module):
        def forward(self, x):
            p = Q.params_from_scale("int8", torch.tensor(0.1))
            return p.dequantize(p.quantize(x))

    ep = torch.export.export(M(), (torch.randn(3),))
    names = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"edgecc.quantize.default", "edgecc.dequantize.default"} <= names
