"""One regression test per ONNX importer bug found by the classic-CNN corpus
(``test_classic_cnns.py``) and the converter property tests (``test_converter_properties.py``),
each a fixed case compared with onnxruntime (or ONNX's operator text where onnxruntime
refuses the node)."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgecc
from edgecc.onnx_import.converter import numpy_to_torch
from edgecc.onnx_import.self_check import relative_error
from tests.frontends.onnx.onnx_files import save_graph as _save




def _one_node(tmp_path, node, shape, opset=13, inits=()):
    """``node`` on input ``x`` of ``shape``: (edgecc's output, onnxruntime's, x)."""
    path = _save([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                 [numpy_helper.from_array(v, k) for k, v in inits], tmp_path / "m.onnx", opset)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    program = edgecc.load(path, import_check=False)
    try:
        ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    except Exception:
        ref = None
    return program(torch.from_numpy(x))[0], ref, x


@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_average_pool_asymmetric_pads_exclude_the_pads(tmp_path, ceil_mode):
    """Bug: AveragePool with begin != end pads applied them up front and then counted them
    (count_include_pad forced on), though count_include_pad=0 says to divide by the real
    inputs only. torch.onnx writes ceil-mode average pools this way at opset 9 (no
    ceil_mode attribute there): GoogLeNet's and Inception-v2's were 1.5% and 5% off."""
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[5, 5],
                            strides=[3, 3], pads=[0, 1, 3, 2], ceil_mode=ceil_mode)
    path = _save([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 11, 11])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [],
                 tmp_path / "m.onnx", opset=11)
    program = edgecc.load(path, import_check=False)
    x = np.random.default_rng(2).standard_normal((1, 2, 11, 11)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert relative_error(program(torch.from_numpy(x))[0], ref) < 1e-6


def test_scalar_constant_stays_a_scalar(tmp_path):
    """Bug: numpy_to_torch used np.ascontiguousarray, which makes a 0-d array 1-d, so a
    Gather by a scalar Constant index kept the axis it must drop (torch.onnx's opset-11
    LocalResponseNorm: Shape -> Gather(scalar) -> Unsqueeze -> Concat failed to import)."""
    assert numpy_to_torch(np.array(3, np.int64)).dim() == 0
    const = helper.make_node("Constant", [], ["i"], value=numpy_helper.from_array(np.array(1, np.int64)))
    gather = helper.make_node("Gather", ["x", "i"], ["y"], name="pick", axis=1)
    path = _save([const, gather], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [], tmp_path / "m.onnx")
    program = edgecc.load(path)
    assert program.output_specs[0].shape == (2, 4)


def test_if_on_the_input_rank_is_inlined(tmp_path):
    """Not supported before: torch.onnx's opset-11 LocalResponseNorm guards on the input's
    rank with If(Equal(Gather(Shape(x)), 3)); a condition known at import selects the
    branch (inlined), as the Shape arithmetic stays symbolic."""
    consts = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array(0, np.int64))),
              helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2, np.int64)))]
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [*consts, helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "k"], ["b"], axis=0),
             helper.make_node("Equal", ["b", "two"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="guard", then_branch=then_g, else_branch=else_g)]
    path = _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [], tmp_path / "m.onnx")
    program = edgecc.load(path, input_shapes={"x": [2, 3]})  # the check: agrees with onnxruntime
    x = torch.randn(2, 3)
    assert torch.equal(program(x)[0], torch.relu(x))
    program = edgecc.load(path, input_shapes={"x": [4, 3]})
    assert torch.equal(program(x.repeat(2, 1))[0], -x.repeat(2, 1))


def test_pool_pads_over_half_the_kernel(tmp_path):
    """Bug: torch's pooling takes pads up to half the kernel, ONNX any pad below it:
    MaxPool(kernel 3, pads 2) failed to import."""
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3], pads=[2, 2])
    got, ref, _ = _one_node(tmp_path, node, [1, 2, 3])
    assert relative_error(got, ref) == 0


def test_ceil_mode_pool_with_pads_up_front_keeps_onnx_length(tmp_path):
    """Bug: with the pads applied up front, torch's ceil mode added a last window starting
    in the end padding (one column more than ONNX, NaN in it for AveragePool)."""
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], pads=[1, 2],
                            strides=[2], ceil_mode=1)
    got, ref, _ = _one_node(tmp_path, node, [1, 2, 3], opset=11)
    assert got.shape == ref.shape and relative_error(got, ref) < 1e-6


def test_lrn_even_window_follows_onnx(tmp_path):
    """Bug: an even LRN window took torch's channels [c - size/2, c + size/2 - 1]; ONNX's
    is [c - (size/2 - 1), c + size/2]. onnxruntime refuses even sizes, so the operator's
    formula is the reference."""
    node = helper.make_node("LRN", ["x"], ["y"], size=2, alpha=0.5, beta=1.0, bias=1.0)
    got, ref, x = _one_node(tmp_path, node, [1, 4, 1, 1])
    assert ref is None
    x = x.reshape(4).astype(np.float64)
    want = [x[c] / (1 + 0.5 / 2 * (x[c:c + 2] ** 2).sum()) for c in range(4)]
    np.testing.assert_allclose(got.reshape(4).numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_pad_modes_on_leading_axes(tmp_path, mode):
    """Bug: reflect/edge pads of the first two axes were dropped without a word (torch pads
    only the trailing ones)."""
    pads = np.array([1, 0, 0, 2, 1, 0], np.int64)
    node = helper.make_node("Pad", ["x", "p"], ["y"], mode=mode)
    got, ref, _ = _one_node(tmp_path, node, [3, 3, 2], inits=[("p", pads)])
    assert got.shape == ref.shape and relative_error(got, ref) == 0


@pytest.mark.parametrize("start, end, step", [(0, 0, -1), (-1, -100, -2), (100, 0, -1)])
def test_slice_negative_steps_clamp_as_onnx(tmp_path, start, end, step):
    """Bug: Slice with a negative step mis-clamped starts/ends past the axis (an empty
    slice raised 'start out of range')."""
    inits = [(n, np.array([v], np.int64)) for n, v in (("s", start), ("e", end), ("a", 0), ("t", step))]
    node = helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])
    got, ref, _ = _one_node(tmp_path, node, [4, 2], inits=inits)
    assert got.shape == ref.shape and relative_error(got, ref) == 0


def test_reduce_noop_with_empty_axes_keeps_the_elementwise_part(tmp_path):
    """Bug: ReduceL1 / ReduceSumSquare with noop_with_empty_axes and no axes returned x;
    onnxruntime and the reference evaluator return |x| and x*x."""
    for op in ("ReduceL1", "ReduceSumSquare"):
        node = helper.make_node(op, ["x"], ["y"], noop_with_empty_axes=1)
        got, ref, _ = _one_node(tmp_path, node, [2, 3], opset=18)
        assert relative_error(got, ref) < 1e-7


def test_conv_transpose_asymmetric_pads(tmp_path):
    """Was refused: ConvTranspose with begin != end pads (the unpadded result, cropped)."""
    w = np.random.default_rng(4).standard_normal((2, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[0, 1, 2, 0])
    got, ref, _ = _one_node(tmp_path, node, [1, 2, 4, 4], inits=[("w", w)])
    assert got.shape == ref.shape and relative_error(got, ref) < 1e-6
