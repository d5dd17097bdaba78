"""Jetson acceptance on transformer configs and a 2:4-pruned CNN (agx-orin, JetPack 6.2,
TensorRT 10.3): BERT w8a8 and Llama w4a16 (blocked INT4 DequantizeLinear, opset 21) pass
onnx.checker, polygraphy lint and edgecc's TensorRT rules; the Q/DQ placement is read back
from the written graph; onnxruntime runs the exact model.onnx within one quantization step of
edgecc's fake-quant program (w4a16 has no activation step: float tolerance). The pruned CNN
keeps exactly 2:4 along the input-channel axis and the bundle asks TensorRT for sparse
kernels."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgecc
from edgecc.targets.jetson import checker
from tests.models import token_inputs, transformer

pytestmark = pytest.mark.slow


def _graph(path):
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return model, inits, producer, consumers


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ort_max_abs(path, program, samples):
    """Max-abs difference between onnxruntime (graph optimizations off: every Q/DQ runs as
    written) and edgecc's fake-quant program, per sample."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for x in samples:
        got = sess.run(None, {n: t.numpy() for n, t in zip(names, x)})[0]
        want = program.run(*x)[0].detach().numpy()
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def _fresh_tokens(n):
    torch.manual_seed(1234)
    return [token_inputs() for _ in range(n)]


@pytest.fixture(scope="module")
def transformer_builds(tmp_path_factory):
    # verify=False: compile's generic check is the CNN tests'; here the lowering's own
    # onnxruntime-vs-program check and the test's independent one on fresh batches count
    torch.manual_seed(0)
    calib = [token_inputs() for _ in range(2)]
    out = {}
    for name, precision, extra in (("bert", "int8", {}),
                                   ("llama", "w4a16", {"block_size": 32})):
        d = tmp_path_factory.mktemp(name) / "o"
        res = edgecc.compile(transformer(name), "jetson:agx-orin", example_inputs=calib[0],
                             calibration=calib, output_dir=str(d), verify=False,
                             target_options={"precision": precision, **extra})
        out[name] = (res, d)
    return out


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_transformer_onnx_checked_and_within_one_step(transformer_builds, name):
    res, out = transformer_builds[name]
    path = out / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    low = res.report["lowering"]
    assert low["device"] == "agx-orin" and low["tensorrt"] == "10.3.0"
    assert all(v["passed"] for v in low["polygraphy"].values())
    assert checker.check(onnx.load(str(path)), tensorrt="10.3.0", fp8=False) == []
    rep = low["onnxruntime_vs_fake_quant"]
    assert rep["passed"]
    # independently, on fresh token batches: within one activation step (w8a8) or float
    # tolerance (w4a16: weight-only, nothing quantizes an activation)
    step = rep["one_step"]
    tol = step if name == "bert" else 1e-4
    assert (step > 0) == (name == "bert")
    diff = _ort_max_abs(path, res.program, _fresh_tokens(2))
    assert diff <= tol, (diff, tol)


def test_bert_w8a8_placement_read_from_the_graph(transformer_builds):
    res, out = transformer_builds["bert"]
    model, inits, producer, consumers = _graph(out / "model.onnx")
    weighted, attention = [], []
    for mm in (n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")):
        w = producer.get(mm.input[1])
        if w is not None and w.op_type == "DequantizeLinear" and w.input[0] in inits:
            weighted.append((mm, w))
        else:
            attention.append(mm)
    assert len(weighted) == 12  # 2 layers x (q, k, v, out, up, down)
    for mm, w in weighted:
        data = inits[w.input[0]]
        assert data.data_type == TensorProto.INT8 and len(data.dims) == 2
        k, n = data.dims  # the DQ feeds the MatMul directly: [K, N], per-channel on N
        scale = numpy_helper.to_array(inits[w.input[1]])
        assert scale.dtype == np.float32 and scale.shape == (n,) and (scale > 0).all()
        assert _attrs(w)["axis"] == 1
        assert not numpy_helper.to_array(inits[w.input[2]]).any()
        x = producer[mm.input[0]]  # per-tensor int8 activation Q/DQ, zero point 0
        assert x.op_type == "DequantizeLinear"
        assert numpy_helper.to_array(inits[x.input[1]]).shape == ()
        assert numpy_helper.to_array(inits[x.input[2]]).dtype == np.int8
        assert not numpy_helper.to_array(inits[x.input[2]]).any()
        # no Q/DQ on the output: the bias Add (float) reads the MatMul directly
        for c in consumers[mm.output[0]]:
            assert c.op_type != "QuantizeLinear"
            if c.op_type == "Add":
                b = [i for i in c.input if i in inits]
                assert b and inits[b[0]].data_type == TensorProto.FLOAT
    # one Q per value (q, k, v share the Q/DQ of the hidden state)
    qs = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(qs) == len(set(qs)) == 8
    # attention's activation x activation MatMuls stay float, with the reason reported
    assert len(attention) == 4
    reasons = res.report["lowering"]["placement"]["float_reasons"]
    assert all("activation x activation" in reasons[mm.name] for mm in attention)


def test_llama_w4a16_blocked_int4_dequantize(transformer_builds):
    res, out = transformer_builds["llama"]
    model, inits, producer, _ = _graph(out / "model.onnx")
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 21
    assert not any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # weight-only
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    for dq in dqs:
        data = inits[dq.input[0]]
        assert data.data_type == TensorProto.INT4
        k, n = data.dims
        a = _attrs(dq)
        assert a["axis"] == 0 and a["block_size"] == 32  # blocks along K
        scale = numpy_helper.to_array(inits[dq.input[1]])
        assert scale.dtype == np.float32 and scale.shape == (k // 32, n)
        assert inits[dq.input[2]].data_type == TensorProto.INT4
        assert not any(inits[dq.input[2]].raw_data)  # symmetric: zero points 0
        users = [c for c in model.graph.node if dq.output[0] in c.input]
        assert [u.op_type for u in users] == ["MatMul"]  # the DQ feeds the MatMul directly
    low = res.report["lowering"]
    assert low["opset"] == 21 and low["placement"]["counts"]["int4 weight-only"] == 14


@pytest.fixture(scope="module")
def sparse_build(tmp_path_factory):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = torch.nn.Conv2d(16, 32, 3, padding=1)
            self.c3 = torch.nn.Conv2d(32, 32, 3, padding=1)
            self.fc = torch.nn.Linear(32, 32)

        def forward(self, x):
            y = torch.relu(self.c2(torch.relu(self.c1(x))))
            y = torch.relu(self.c3(y) + y)
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    calib = [(torch.randn(2, 3, 16, 16, generator=g),) for _ in range(2)]
    out = tmp_path_factory.mktemp("sparse") / "o"
    res = edgecc.compile(Net().eval(), "jetson:agx-orin", pipeline="prune{pattern=2:4}",
                         example_inputs=calib[0], calibration=calib, output_dir=str(out),
                         verify=False,
                         target_options={"precision": "int8", "sparsity": True})
    return res, out


def test_2_4_pruned_cnn_pattern_in_the_onnx_and_sparse_build(sparse_build):
    res, out = sparse_build
    model, inits, producer, _ = _graph(out / "model.onnx")
    checked = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        w = numpy_helper.to_array(inits[producer[node.input[1]].input[0]])
        assert w.dtype == np.int8
        # input-channel axis: Conv [O, I, kh, kw] 1; MatMul [K, N] 0; Gemm transB [N, K] 1
        axis = 1 if node.op_type == "Conv" or _attrs(node).get("transB") else 0
        w = np.moveaxis(w, axis, -1)
        if w.shape[-1] % 4:
            continue  # the first conv: 3 input channels have no 2:4 groups
        groups = (w.reshape(-1, w.shape[-1] // 4, 4) != 0).sum(-1)
        assert (groups <= 2).all(), node.name
        assert (groups == 2).mean() > 0.99  # exactly 2 of 4 kept (not merely sparser)
        checked += 1
    assert checked == 3
    low = res.report["lowering"]
    assert low["sparsity_2_4"]["sparse"] == 3 and low["sparsity_2_4"]["dense"] == 1
    assert low["onnxruntime_vs_fake_quant"]["passed"]
    cfg = json.loads((out / "engine_config.json").read_text())
    assert cfg["sparsity"] is True
    assert "--sparsity=enable" in (out / "trtexec.sh").read_text()
    src = (out / "build_engine.py").read_text()
    assert 'if cfg["sparsity"]:\n        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)' in src
    assert "2:4 sparse weights" in (out / "README.txt").read_text()
