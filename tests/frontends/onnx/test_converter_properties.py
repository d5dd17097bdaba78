"""Differential property tests, one per converter: hypothesis draws the operator's
attributes across its spec (pads, strides, dilations, groups, auto_pad, ceil_mode,
count_include_pad, LRN size/alpha/beta/bias, axes as attribute or input by opset, Pad
modes, Gemm transposes and scales, Split/Slice forms) and the converter's output is
compared with onnxruntime and with onnx's reference evaluator on random inputs.

The converters run eagerly (``build_module``: the module torch.export would trace), so each
example costs milliseconds; tracing is covered by the importer and corpus tests.
"""

import numpy as np
import onnx
import onnxruntime as ort
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgecc.onnx_import.importer import build_module
from edgecc.onnx_import.self_check import relative_error

TOLERANCE = 1e-5  # one float32 op: both runtimes round alike to a few ulps of the max


def _examples(k: float = 1.0) -> settings:
    return settings(max_examples=max(int(settings.default.max_examples * k), 2))


def _run(fn):
    try:
        return fn()
    except Exception:  # the runtime refuses this configuration (or has a bug on it)
        return None


def _check(tmp_path, node, x_shape, opset, inits=(), seed=0, reference=True):
    """``node`` (reading ``x`` and ``inits``) through edgecc, onnxruntime and the reference
    evaluator. edgecc must match onnxruntime wherever onnxruntime runs the node (the import
    check holds imports to it), and the reference evaluator where onnxruntime refuses the
    node or agrees with the reference; a configuration neither runs is not drawn again."""
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = str(tmp_path / f"{node.op_type}.onnx")
    onnx.save(model, path)
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32)
    ort_out = _run(lambda: ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                   .run(None, {"x": x}))
    ref_out = _run(lambda: ReferenceEvaluator(model).run(None, {"x": x})) if reference else None
    assume(ort_out is not None or ref_out is not None or not reference)
    module, _, _ = build_module(path)
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    if ort_out is not None:
        for g, o in zip(got, ort_out):
            assert relative_error(g, o) <= TOLERANCE, f"vs onnxruntime: {relative_error(g, o)}"
    if ref_out is not None and (ort_out is None or all(
            relative_error(o, r) <= 10 * TOLERANCE for o, r in zip(ort_out, ref_out))):
        for g, r in zip(got, ref_out):
            assert relative_error(g, r) <= 10 * TOLERANCE, f"vs reference: {relative_error(g, r)}"
    return got, x


def _pads(draw, kernel, dilations=None):
    """Explicit pads, begin and end drawn apart, each below the kernel."""
    limit = [k - 1 for k in kernel]
    return [draw(st.integers(0, max(lim, 0))) for lim in limit] + \
        [draw(st.integers(0, max(lim, 0))) for lim in limit]


@st.composite
def conv_cases(draw):
    rank = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2, 4]))
    cin, cout = group * draw(st.integers(1, 2)), group * draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dil = [draw(st.integers(1, 2)) for _ in range(rank)]
    size = [draw(st.integers(max(k * d, 3), 9)) for k, d in zip(kernel, dil)]
    auto = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto.startswith("SAME"):
        dil = [1] * rank  # onnxruntime: "Dilation not supported for SAME_*"
    attrs = dict(kernel_shape=kernel, strides=strides, dilations=dil, group=group)
    if auto == "NOTSET":
        attrs["pads"] = _pads(draw, kernel, dil)
    else:
        attrs["auto_pad"] = auto
    bias = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    inits = [("w", rng.standard_normal((cout, cin // group, *kernel)).astype(np.float32))]
    if bias:
        inits.append(("b", rng.standard_normal(cout).astype(np.float32)))
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"], **attrs)
    return node, [1, cin, *size], inits


@given(conv_cases())
@_examples(2)
def test_conv(tmp_path_factory, case):
    node, shape, inits = case
    _check(tmp_path_factory.mktemp("c"), node, shape, 11, inits)


@st.composite
def conv_transpose_cases(draw):
    rank = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2]))
    cin, cout = group * draw(st.integers(1, 2)), group * draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dil = [draw(st.integers(1, 2)) for _ in range(rank)]
    out_pad = [draw(st.integers(0, max(min(s, d) - 1, 0))) for s, d in zip(strides, dil)]
    attrs = dict(kernel_shape=kernel, strides=strides, dilations=dil, group=group,
                 output_padding=out_pad, pads=_pads(draw, kernel, dil))
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    inits = [("w", rng.standard_normal((cin, cout // group, *kernel)).astype(np.float32))]
    size = [draw(st.integers(2, 6)) for _ in range(rank)]
    return helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs), [1, cin, *size], inits


@given(conv_transpose_cases())
@_examples(1)
def test_conv_transpose(tmp_path_factory, case):
    node, shape, inits = case
    _check(tmp_path_factory.mktemp("c"), node, shape, 11, inits)


@st.composite
def pool_cases(draw, op):
    rank = draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dil = [draw(st.integers(1, 2)) for _ in range(rank)] if op == "MaxPool" else [1] * rank
    size = [draw(st.integers(max(k * d, 2), 10)) for k, d in zip(kernel, dil)]
    auto = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    attrs = dict(kernel_shape=kernel, strides=strides, ceil_mode=draw(st.integers(0, 1)))
    if op == "MaxPool":
        attrs["dilations"] = dil
    else:
        attrs["count_include_pad"] = draw(st.integers(0, 1))
    if auto == "NOTSET":
        attrs["pads"] = _pads(draw, kernel, dil)
    else:
        attrs["auto_pad"] = auto
        if auto.startswith("SAME"):  # a stride over the kernel makes SAME's pad negative
            attrs["strides"] = [min(s, k) for s, k in zip(strides, kernel)]
        if op == "MaxPool" and auto.startswith("SAME"):
            # onnxruntime sizes SAME padding without the dilation (one window short of
            # ceil(in / stride)); its Conv refuses the combination outright.
            attrs["dilations"] = [1] * rank
    return helper.make_node(op, ["x"], ["y"], **attrs), [1, 2, *size]


@given(pool_cases("MaxPool"))
@_examples(2)
def test_max_pool(tmp_path_factory, case):
    node, shape = case
    _check(tmp_path_factory.mktemp("p"), node, shape, 12)


@given(pool_cases("AveragePool"))
@_examples(2)
def test_average_pool(tmp_path_factory, case):
    node, shape = case
    _check(tmp_path_factory.mktemp("p"), node, shape, 11)


def _lrn_spec(x, size, alpha, beta, bias):
    """ONNX's LRN, from the operator's text: the window of channel c is
    [c - floor((size-1)/2), c + ceil((size-1)/2)] (onnxruntime takes odd sizes only, and the
    reference evaluator's LRN normalises only the first channel of a 1x1 image)."""
    c = x.shape[1]
    out = np.empty_like(x, dtype=np.float64)
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c - 1, i + -(-(size - 1) // 2))
        sq = (x[:, lo:hi + 1].astype(np.float64) ** 2).sum(1)
        out[:, i] = x[:, i] / (bias + alpha / size * sq) ** beta
    return out


@given(st.integers(1, 8), st.floats(1e-5, 1e-1), st.floats(0.25, 1.5), st.floats(0.5, 3.0),
       st.integers(1, 9))
@_examples(1)
def test_lrn(tmp_path_factory, size, alpha, beta, bias, channels):
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)
    (got,), x = _check(tmp_path_factory.mktemp("l"), node, [1, channels, 3, 4], 13, reference=False)
    assert relative_error(got, _lrn_spec(x, size, alpha, beta, bias)) <= TOLERANCE


@st.composite
def reduce_cases(draw):
    op = draw(st.sampled_from(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2",
                               "ReduceL1", "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd"]))
    opset = draw(st.sampled_from([11, 13, 18]))
    rank = draw(st.integers(1, 4))
    axes = sorted(set(draw(st.lists(st.integers(-rank, rank - 1), max_size=rank))),
                  key=lambda a: a % rank)
    axes = list({a % rank: a for a in axes}.values())
    attrs = {"keepdims": draw(st.integers(0, 1))}
    as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    inputs, inits = ["x"], []
    if as_input:
        if axes or draw(st.booleans()):
            inputs.append("axes")
            inits.append(("axes", np.array(axes, np.int64)))
        if not axes:
            attrs["noop_with_empty_axes"] = draw(st.integers(0, 1))
    elif axes:
        attrs["axes"] = axes
    shape = [draw(st.integers(1, 4)) for _ in range(rank)]
    return helper.make_node(op, inputs, ["y"], **attrs), shape, opset, inits


@given(reduce_cases())
@_examples(2)
def test_reduce(tmp_path_factory, case):
    node, shape, opset, inits = case
    _check(tmp_path_factory.mktemp("r"), node, shape, opset, inits)


@st.composite
def pad_cases(draw):
    opset = draw(st.sampled_from([2, 11, 13, 18, 19]))
    mode = draw(st.sampled_from(["constant", "reflect", "edge"] + (["wrap"] if opset >= 19 else [])))
    rank = draw(st.integers(2, 4))
    shape = [draw(st.integers(2, 4)) for _ in range(rank)]
    lo = 0 if mode != "constant" else -1
    pads = [draw(st.integers(lo, d - 1)) for d in shape] + [draw(st.integers(lo, d - 1)) for d in shape]
    if mode in ("reflect", "edge", "wrap"):  # torch pads only the trailing spatial axes
        pads = [0, 0] + pads[2:rank] + [0, 0] + pads[rank + 2:]
    attrs, inputs, inits = {"mode": mode}, ["x"], []
    value = draw(st.floats(-2, 2, width=32))
    if opset < 11:
        attrs["pads"] = pads
        if mode == "constant":
            attrs["value"] = value
    else:
        inputs.append("pads")
        inits.append(("pads", np.array(pads, np.int64)))
        if mode == "constant":
            inputs.append("v")
            inits.append(("v", np.array(value, np.float32)))
    return helper.make_node("Pad", inputs, ["y"], **attrs), shape, opset, inits


@given(pad_cases())
@_examples(2)
def test_pad(tmp_path_factory, case):
    node, shape, opset, inits = case
    _check(tmp_path_factory.mktemp("p"), node, shape, opset, inits)


@st.composite
def gemm_cases(draw):
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    ta, tb = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c_shape = draw(st.sampled_from([None, (), (n,), (1, n), (m, 1), (m, n)]))
    inits = [("b", b)]
    inputs = ["x", "b"]
    if c_shape is not None:
        inits.append(("c", rng.standard_normal(c_shape).astype(np.float32)))
        inputs.append("c")
    attrs = dict(transA=ta, transB=tb, alpha=draw(st.sampled_from([1.0, 0.5, -2.0])),
                 beta=draw(st.sampled_from([1.0, 0.0, 3.0])))
    return helper.make_node("Gemm", inputs, ["y"], **attrs), [k, m] if ta else [m, k], inits


@given(gemm_cases())
@_examples(1)
def test_gemm(tmp_path_factory, case):
    node, shape, inits = case
    _check(tmp_path_factory.mktemp("g"), node, shape, 13, inits)


@given(st.integers(1, 4), st.floats(1e-6, 1e-2), st.sampled_from([9, 14, 15]), st.integers(0, 99))
@_examples(1)
def test_batch_normalization(tmp_path_factory, channels, eps, opset, seed):
    rng = np.random.default_rng(seed)
    inits = [("s", rng.uniform(0.5, 2, channels).astype(np.float32)),
             ("b", rng.standard_normal(channels).astype(np.float32)),
             ("m", rng.standard_normal(channels).astype(np.float32)),
             ("v", rng.uniform(0.1, 2, channels).astype(np.float32))]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=eps)
    _check(tmp_path_factory.mktemp("b"), node, [2, channels, 3, 3], opset, inits, seed=seed)


@st.composite
def split_cases(draw):
    opset = draw(st.sampled_from([11, 13, 18]))
    rank = draw(st.integers(1, 3))
    axis = draw(st.integers(-rank, rank - 1))
    shape = [draw(st.integers(2, 6)) for _ in range(rank)]
    length = shape[axis]
    cut = sorted(set(draw(st.lists(st.integers(1, length - 1), min_size=1, max_size=3))))
    sizes = [b - a for a, b in zip([0] + cut, cut + [length])]
    outputs = [f"y{i}" for i in range(len(sizes))]
    attrs, inputs, inits = {"axis": axis}, ["x"], []
    form = draw(st.sampled_from(["sizes", "even"]))
    if form == "even":
        # n outputs of ceil(length / n) each, the last smaller: n must leave it non-empty
        n = draw(st.sampled_from([k for k in range(1, length + 1)
                                  if -(-length // k) * (k - 1) < length]))
        outputs = [f"y{i}" for i in range(n)]
        if opset >= 18:
            attrs["num_outputs"] = n
        elif length % n:
            outputs = [f"y{i}" for i in range(1)]
    elif opset >= 13:
        inputs.append("split")
        inits.append(("split", np.array(sizes, np.int64)))
    else:
        attrs["split"] = sizes
    return helper.make_node("Split", inputs, outputs, **attrs), shape, opset, inits


@given(split_cases())
@_examples(1)
def test_split(tmp_path_factory, case):
    node, shape, opset, inits = case
    _check(tmp_path_factory.mktemp("s"), node, shape, opset, inits)


@st.composite
def slice_cases(draw):
    opset = draw(st.sampled_from([9, 10, 13]))
    rank = draw(st.integers(1, 3))
    shape = [draw(st.integers(1, 6)) for _ in range(rank)]
    axes = draw(st.permutations(list(range(rank))))[:draw(st.integers(1, rank))]
    big = 2**62
    starts, ends, steps = [], [], []
    for a in axes:
        d = shape[a]
        step = 1 if opset < 10 else draw(st.sampled_from([1, 1, 2, -1, -2]))
        starts.append(draw(st.sampled_from([0, 1, -1, d, -d - 3, big, -big])))
        ends.append(draw(st.sampled_from([0, 1, -1, d, d + 5, -d - 3, big, -big])))
        steps.append(step)
    axes = [a - rank if draw(st.booleans()) else a for a in axes]
    if opset < 10:
        node = helper.make_node("Slice", ["x"], ["y"], starts=starts, ends=ends, axes=axes)
        return node, shape, opset, []
    inits = [("s", np.array(starts, np.int64)), ("e", np.array(ends, np.int64)),
             ("a", np.array(axes, np.int64)), ("t", np.array(steps, np.int64))]
    return helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"]), shape, opset, inits


@given(slice_cases())
@_examples(2)
def test_slice(tmp_path_factory, case):
    node, shape, opset, inits = case
    _check(tmp_path_factory.mktemp("s"), node, shape, opset, inits)


@given(st.integers(1, 3), st.integers(-3, 2), st.integers(1, 3), st.sampled_from([4, 11, 13]))
@_examples(1)
def test_concat(tmp_path_factory, rank, axis, parts, opset):
    axis = max(min(axis, rank - 1), -rank)
    shape = [2, 3, 2][:rank]
    rng = np.random.default_rng(parts)
    inits = [(f"c{i}", rng.standard_normal([s + i if (d == axis % rank) else s
                                            for d, s in enumerate(shape)]).astype(np.float32))
             for i in range(parts)]
    node = helper.make_node("Concat", ["x"] + [k for k, _ in inits], ["y"], axis=axis)
    _check(tmp_path_factory.mktemp("c"), node, shape, opset, inits)


@st.composite
def resize_cases(draw):
    mode = draw(st.sampled_from(["nearest", "linear"]))
    coord = draw(st.sampled_from(["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]))
    nearest = draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor"]))
    if mode == "nearest" and not ((coord == "asymmetric" and nearest == "floor") or
                                  (coord in ("half_pixel", "pytorch_half_pixel") and nearest != "floor")):
        coord, nearest = "asymmetric", "floor"  # the forms the converter takes (others refused)
    if mode == "linear" and coord == "asymmetric":
        coord = "half_pixel"
    scale = [1.0, 1.0] + [float(draw(st.sampled_from([2, 3]))) for _ in range(2)]
    attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest)
    inits = [("roi", np.array([], np.float32)), ("scales", np.array(scale, np.float32))]
    return helper.make_node("Resize", ["x", "roi", "scales"], ["y"], **attrs), inits


@given(resize_cases(), st.integers(2, 5))
@_examples(1)
def test_resize(tmp_path_factory, case, size):
    node, inits = case
    _check(tmp_path_factory.mktemp("r"), node, [1, 2, size, size + 1], 13, inits)
