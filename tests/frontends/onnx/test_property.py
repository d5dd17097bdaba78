"""Property test: hypothesis builds small ONNX graphs (random operators, shapes and
attributes within each operator's spec); edgecc's import must agree with
onnx.reference.ReferenceEvaluator and with onnxruntime on random inputs.

The generator draws only valid models; a test of its own checks that (onnx's full checker
and strict shape inference accept every drawn model, and the declared output shape is the
inferred one), so a generator bug fails there rather than as an importer mismatch."""

import numpy as np
import onnx
import onnxruntime as ort
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import edgecc

UNARY = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Erf", "Floor", "Ceil", "Softplus", "Sin",
         "Cos", "HardSwish", "Selu"]
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min"]
KINDS = ["unary", "binary", "attr_act", "softmax", "transpose", "reshape", "reduce",
         "concat", "slice", "clip", "gather", "cumsum", "unsqueeze_squeeze", "flatten"]


@st.composite
def onnx_graphs(draw):
    rank = draw(st.integers(2, 4))
    shape = [draw(st.integers(1, 4)) for _ in range(rank)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    nodes, inits = [], []
    cur, counter = "x", [0]

    def fresh(prefix="t"):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def const(name, array):
        inits.append(numpy_helper.from_array(array, name))
        return name

    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(KINDS))
        out = fresh()
        r = len(shape)
        if kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [cur], [out]))
        elif kind == "binary":
            bshape = [draw(st.sampled_from([1, d])) for d in shape][draw(st.integers(0, r - 1)):]
            value = np.random.default_rng(draw(st.integers(0, 99))).uniform(0.5, 2.0, bshape)
            c = const(fresh("c"), value.astype(np.float32))
            op = draw(st.sampled_from(BINARY))
            nodes.append(helper.make_node(op, [cur, c] if draw(st.booleans()) or op == "Div"
                                          else [c, cur], [out]))
        elif kind == "attr_act":
            op = draw(st.sampled_from(["LeakyRelu", "Elu", "HardSigmoid"]))
            alpha = draw(st.floats(0.05, 1.5))
            attrs = {"alpha": alpha}
            if op == "HardSigmoid":
                attrs["beta"] = draw(st.floats(0.0, 1.0))
            nodes.append(helper.make_node(op, [cur], [out], **attrs))
        elif kind == "softmax":
            op = draw(st.sampled_from(["Softmax", "LogSoftmax"]))
            nodes.append(helper.make_node(op, [cur], [out], axis=draw(st.integers(-r, r - 1))))
        elif kind == "transpose":
            perm = draw(st.permutations(list(range(r))))
            nodes.append(helper.make_node("Transpose", [cur], [out], perm=list(perm)))
            shape = [shape[p] for p in perm]
        elif kind == "reshape":
            new = [int(np.prod(shape[:1])), -1] if r > 1 else [-1]
            c = const(fresh("s"), np.array(new, dtype=np.int64))
            nodes.append(helper.make_node("Reshape", [cur, c], [out]))
            if r > 1:  # a rank-1 input keeps its shape
                shape = [shape[0], int(np.prod(shape[1:]))]
        elif kind == "reduce":
            op = draw(st.sampled_from(["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"]))
            axes = sorted(set(draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r))))
            keep = draw(st.integers(0, 1))
            if keep == 0 and len(axes) == r:
                keep = 1
            c = const(fresh("a"), np.array(axes, dtype=np.int64))  # opset 18: axes input
            nodes.append(helper.make_node(op, [cur, c], [out], keepdims=keep))
            shape = [1 if (i in axes) else d for i, d in enumerate(shape)] if keep else \
                [d for i, d in enumerate(shape) if i not in axes]
        elif kind == "concat":
            axis = draw(st.integers(0, r - 1))
            nodes.append(helper.make_node("Concat", [cur, cur], [out], axis=axis))
            shape = [d * 2 if i == axis else d for i, d in enumerate(shape)]
        elif kind == "slice":
            axis = draw(st.integers(0, r - 1))
            start = draw(st.integers(0, shape[axis] - 1))
            end = draw(st.integers(start + 1, shape[axis]))
            cs = [const(fresh("c"), np.array([v], dtype=np.int64)) for v in (start, end, axis)]
            nodes.append(helper.make_node("Slice", [cur, *cs], [out]))
            shape = [end - start if i == axis else d for i, d in enumerate(shape)]
        elif kind == "clip":
            lo = draw(st.floats(-2, 0))
            hi = draw(st.floats(0.1, 3))
            cs = [const(fresh("c"), np.array(v, dtype=np.float32)) for v in (lo, hi)]
            nodes.append(helper.make_node("Clip", [cur, *cs], [out]))
        elif kind == "gather":
            axis = draw(st.integers(0, r - 1))
            idx = draw(st.lists(st.integers(-shape[axis], shape[axis] - 1), min_size=1, max_size=3))
            c = const(fresh("i"), np.array(idx, dtype=np.int64))
            nodes.append(helper.make_node("Gather", [cur, c], [out], axis=axis))
            shape = [len(idx) if i == axis else d for i, d in enumerate(shape)]
        elif kind == "cumsum":
            c = const(fresh("a"), np.array(draw(st.integers(0, r - 1)), dtype=np.int64))
            nodes.append(helper.make_node("CumSum", [cur, c], [out],
                                          reverse=draw(st.integers(0, 1)),
                                          exclusive=draw(st.integers(0, 1))))
        elif kind == "unsqueeze_squeeze":
            axis = draw(st.integers(0, r))
            mid = fresh()
            c = const(fresh("a"), np.array([axis], dtype=np.int64))
            nodes.append(helper.make_node("Unsqueeze", [cur, c], [mid]))
            nodes.append(helper.make_node("Squeeze", [mid, c], [out]))
        elif kind == "flatten":
            axis = draw(st.integers(0, r))
            nodes.append(helper.make_node("Flatten", [cur], [out], axis=axis))
            shape = [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))]
        cur = out
    outputs = [helper.make_tensor_value_info(cur, TensorProto.FLOAT, list(shape))]
    graph = helper.make_graph(nodes, "random", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    x = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(
        [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]).astype(np.float32)
    return model, x


@settings(max_examples=settings.default.max_examples * 10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(onnx_graphs())
def test_generator_draws_only_valid_models(case):
    model, x = case
    onnx.checker.check_model(model, full_check=True)  # includes strict shape inference
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    (out,) = inferred.graph.output
    declared = model.graph.output[0].type.tensor_type
    assert out.type.tensor_type.elem_type == declared.elem_type == TensorProto.FLOAT
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == \
        [d.dim_value for d in declared.shape.dim]
    computed = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in inferred.graph.value_info}
    assert all(all(d > 0 for d in dims) for dims in computed.values())  # no empty tensors
    assert list(x.shape) == [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


@settings(max_examples=settings.default.max_examples * 3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(onnx_graphs())
def test_imported_graph_matches_reference_and_onnxruntime(tmp_path_factory, case):
    model, x = case
    path = str(tmp_path_factory.mktemp("g") / "m.onnx")
    onnx.save(model, path)
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    runtime = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = edgecc.load(path)(torch.from_numpy(x))[0].numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got, runtime, atol=1e-4, rtol=1e-4)
