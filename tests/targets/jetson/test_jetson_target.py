"""The jetson target: TensorRT-ready Q/DQ ONNX for orin-nano, placement read back from the
graph, onnxruntime within one quantization step, the bundle, and bad input refused before
any work."""

import json
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgecc
from edgecc.recipe import VerifyOptions
from edgecc.targets.jetson import checker
from edgecc.targets.jetson.presets import JetsonOptions, resolve
from tests.models import mobilenet_v2, resnet20

X = (1, 3, 32, 32)


ONE_SAMPLE = VerifyOptions(samples=1)  # compile's own check once: CI time (the lowering
# checks onnxruntime against the fake-quant program on 2 more samples)


def _calib(n=2, shape=(2, 3, 32, 32)):
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(shape, generator=g),) for _ in range(n)]


@pytest.fixture(scope="module", params=["resnet20", "mobilenet_v2"])
def compiled(request, tmp_path_factory):
    model = {"resnet20": resnet20, "mobilenet_v2": mobilenet_v2}[request.param]()
    out = tmp_path_factory.mktemp(request.param) / "o"
    res = edgecc.compile(model, "jetson:orin-nano", example_inputs=(torch.randn(2, 3, 32, 32),),
                         calibration=_calib(), target_options={"precision": "int8"},
                         output_dir=str(out), verify_options=ONE_SAMPLE)
    return request.param, res, out


def _graph(path):
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    return model, inits, producer


def test_onnx_checked_and_verified(compiled):
    _, res, out = compiled
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    low = res.report["lowering"]
    assert low["tensorrt"] == "10.3.0" and low["jetpack"] == "6.2" and low["gpu"] == "sm_87"
    assert all(v["passed"] for v in low["polygraphy"].values())
    step = low["onnxruntime_vs_fake_quant"]
    assert step["passed"] and 0 < max(step["max_abs_per_output"]) <= step["one_step"]
    assert res.report["verification"]["passed"]
    assert any("engine build" in s for s in res.report["not_verified"])
    assert checker.check(onnx.load(str(out / "model.onnx")), tensorrt="10.3.0", fp8=False) == []


def test_qdq_placement_read_from_the_graph(compiled):
    name, res, out = compiled
    model, inits, producer = _graph(out / "model.onnx")
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        w = producer[conv.input[1]]  # per-channel int8 weights on axis 0, DQ feeding directly
        assert w.op_type == "DequantizeLinear" and w.input[0] in inits
        data = inits[w.input[0]]
        assert data.data_type == TensorProto.INT8
        scale = numpy_helper.to_array(inits[w.input[1]])
        assert scale.dtype == np.float32 and scale.shape == (data.dims[0],)
        assert next(a.i for a in w.attribute if a.name == "axis") == 0
        assert not numpy_helper.to_array(inits[w.input[2]]).any()
        x = producer[conv.input[0]]  # per-tensor activation Q/DQ on the input
        assert x.op_type == "DequantizeLinear"
        assert numpy_helper.to_array(inits[x.input[1]]).shape == ()
        assert not numpy_helper.to_array(inits[x.input[2]]).any()
        if len(conv.input) > 2:  # float bias
            assert conv.input[2] in inits and inits[conv.input[2]].data_type == TensorProto.FLOAT
        # a Q/DQ on a conv's output only as the input of the next weighted op or the
        # residual input of an Add (ModelOpt), never for the conv itself
        for q in consumers.get(conv.output[0], []):
            if q.op_type == "QuantizeLinear":
                dq = consumers[q.output[0]][0]
                assert {c.op_type for c in consumers[dq.output[0]]} <= {"Conv", "Gemm",
                                                                        "MatMul", "Add"}
    # one shared Q/DQ per value (fan-out)
    qs = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(qs) == len(set(qs))
    # the classifier (N = 10 < 16) stays float, with the reason reported
    gemms = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    assert gemms and all(producer.get(g.input[1]) is None for g in gemms)
    reasons = res.report["lowering"]["placement"]["float_reasons"]
    assert any("small GEMM" in r for r in reasons.values())
    # residual Adds: the skip input is quantized, the conv branch is not
    adds = [n for n in model.graph.node if n.op_type == "Add"
            and all(i not in inits for i in n.input)]
    assert adds
    for add in adds:
        kinds = [producer[i].op_type if i in producer else "input" for i in add.input]
        assert sorted(kinds) == ["Conv", "DequantizeLinear"], (add.name, kinds)


def test_bundle(compiled):
    _, res, out = compiled
    names = set(os.listdir(out))
    assert {"model.onnx", "build_engine.py", "trtexec.sh", "run_engine.py", "README.txt",
            "engine_config.json", "reference.npz", "manifest.json"} <= names
    cfg = json.loads((out / "engine_config.json").read_text())
    assert cfg["tensorrt"] == "10.3.0" and cfg["quantized"] and not cfg["sparsity"]
    sh = (out / "trtexec.sh").read_text()
    assert "--stronglyTyped" in sh and "--int8 --fp16" in sh and "--useDLACore" not in sh
    src = (out / "build_engine.py").read_text()
    compile(src, "build_engine.py", "exec")
    assert "STRONGLY_TYPED" in src and "EXPLICIT_BATCH" in src and "SPARSE_WEIGHTS" in src
    ref = np.load(out / "reference.npz")
    x = torch.from_numpy(ref["input:x"])
    np.testing.assert_allclose(res.program.run(x)[0].numpy(), ref["output:output"],
                               atol=1e-5)
    assert "TensorRT 10.3.0" in (out / "README.txt").read_text()


def test_options_refuse_impossible_requests():
    bad = {
        "no fp8 support": dict(device="agx-orin", precision="fp8"),
        "has no DLA": dict(device="orin-nano", dla=True),
        "AGX Thor T5000 has no DLA": dict(device="agx-thor", dla=True),
        "no 2:4 sparse": dict(device="xavier-nx", sparsity=True),
        "TensorRT 11 does not support JetPack 6.2": dict(device="agx-orin", jetpack="6.2",
                                                         tensorrt="11"),
        "unknown JetPack '6.5'": dict(device="agx-orin", jetpack="6.5"),
        "does not support the Jetson AGX Xavier": dict(device="agx-xavier", jetpack="6.2"),
        "needs TensorRT >= 10": dict(device="agx-orin", jetpack="6.0", precision="w4a16"),
        "JetPack 6.2 ships TensorRT 10.3.0, not 10.7": dict(device="agx-orin", jetpack="6.2",
                                                            tensorrt="10.7"),
        "block_size must be a positive even number": dict(precision="w4a16", block_size=3),
    }
    for match, kw in bad.items():
        with pytest.raises(ValueError, match=match):
            JetsonOptions(**kw)
    assert resolve(JetsonOptions(device="agx-orin", jetpack="7.2", tensorrt="11")).tensorrt \
        == "11.4.1"
    assert resolve(JetsonOptions(device="agx-xavier")).opset == 17


def test_bad_request_fails_before_any_work(tmp_path):
    for opts, match in (({"device": "agx-orin", "precision": "fp8"}, "no fp8"),
                        ({"device": "orin-nano", "dla": True}, "has no DLA"),
                        ({"device": "orin-nano", "jetpack": "6.2", "tensorrt": "8.6"},
                         "JetPack 6.2 ships TensorRT 10.3.0, not 8.6")):
        with pytest.raises(edgecc.EdgeccError, match=match) as info:
            edgecc.compile(torch.nn.Linear(32, 32), "jetson", example_inputs=(torch.randn(4, 32),),
                           target_options=opts, output_dir=str(tmp_path / "o"))
        assert len(str(info.value).splitlines()) == 1
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option", ["activation_symmetric", "weight_symmetric"])
def test_asymmetric_quantization_asked_for_fails_before_any_work(tmp_path, option):
    out = tmp_path / "o"
    with pytest.raises(edgecc.EdgeccError, match=rf"quantize\{{{option}=false\}}: TensorRT "
                       rf"runs symmetric quantization only .*drop {option}=false") as info:
        edgecc.compile(torch.nn.Linear(32, 32), "jetson:agx-orin",
                       pipeline=f"quantize{{scheme=w8a8,{option}=false}}",
                       example_inputs=(torch.randn(4, 32),), calibration=[(torch.randn(4, 32),)],
                       target_options={"precision": "int8"}, output_dir=str(out))
    assert len(str(info.value).splitlines()) == 1
    assert not out.exists()


def test_asymmetric_qdq_in_the_onnx_is_refused(tmp_path):
    # an asymmetric QDQ written by hand is what the checker refuses, with the node named
    w = numpy_helper.from_array(np.ones((4, 4), np.int8), "w")
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    z = numpy_helper.from_array(np.array(3, np.int8), "z")
    g = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"], name="w_dq"),
         helper.make_node("MatMul", ["x", "wf"], ["y"], name="mm"),
         helper.make_node("NonMaxSuppressionV9", ["y"], ["z2"], name="odd", domain="")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("z2", TensorProto.FLOAT, None)], [w, s, z])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    problems = [str(p) for p in checker.check(model, tensorrt="10.3.0", fp8=False)]
    assert any("'w_dq'" in p and "non-zero zero point" in p for p in problems)
    assert any("'odd'" in p and "not in TensorRT's ONNX operator" in p for p in problems)


def test_checker_rules_on_hand_written_qdq():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s4", "z4"], ["xq"], axis=1, name="act_q"),
        helper.make_node("DequantizeLinear", ["xq", "s4", "z4"], ["xd"], axis=1, name="act_dq"),
        helper.make_node("DequantizeLinear", ["w", "s3", "zw"], ["wd"], axis=0, name="w_dq"),
        helper.make_node("DequantizeLinear", ["b", "sb"], ["bd"], name="b_dq"),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["y"], name="conv"),
        helper.make_node("Add", ["y", "w8"], ["out"], name="raw_int8"),
    ]
    inits = [numpy_helper.from_array(np.full(4, 0.1, np.float32), "s4"),
             numpy_helper.from_array(np.zeros(4, np.int8), "z4"),
             numpy_helper.from_array(np.ones((4, 4, 1, 1), np.int8), "w"),
             numpy_helper.from_array(np.full(3, 0.1, np.float32), "s3"),
             numpy_helper.from_array(np.zeros(3, np.int8), "zw"),
             numpy_helper.from_array(np.ones(4, np.int32), "b"),
             numpy_helper.from_array(np.array(0.01, np.float32), "sb"),
             numpy_helper.from_array(np.ones((1, 4, 8, 8), np.int8), "w8")]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info(
        "out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    text = "\n".join(str(p) for p in checker.check(model, tensorrt="10.3.0", fp8=False))
    assert "'act_q'" in text and "per-channel activation scales" in text
    assert "'w_dq'" in text and "3 scales for axis 0 of length 4" in text
    assert "'b_dq'" in text and "INT32 quantization" in text
    assert "'conv'" in text and "quantized bias" in text
    assert "'raw_int8'" in text and "does not feed a DequantizeLinear" in text


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return self.c2(torch.relu(self.c1(x))).mean((2, 3))


@pytest.fixture(scope="module")
def trt11_fp16_dynamic(tmp_path_factory):
    """fp16 for TensorRT 11 (JetPack 7.2, agx-orin): an fp16 ONNX, a dynamic batch, and
    external data forced on (threshold 0 MB)."""
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=8)
    out = tmp_path_factory.mktemp("trt11") / "o"
    res = edgecc.compile(SmallCNN().eval(), "jetson:agx-orin",
                         example_inputs=(torch.randn(2, 3, 16, 16),),
                         dynamic_shapes=({0: batch},), output_dir=str(out),
                         verify_options=ONE_SAMPLE,
                         target_options={"jetpack": "7.2", "tensorrt": "11",
                                         "profile_opt": 4, "external_data_mb": 0})
    return res, out


def test_fp16_onnx_for_strongly_typed_tensorrt_11(trt11_fp16_dynamic):
    res, out = trt11_fp16_dynamic
    low = res.report["lowering"]
    assert low["tensorrt"] == "11.4.1" and low["onnx_float_type"] == "float16"
    model = onnx.load(str(out / "model.onnx"))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    inits = {i.name: i for i in model.graph.initializer}
    assert convs and all(inits[c.input[1]].data_type == TensorProto.FLOAT16 for c in convs)
    # fp32 at the boundary (Casts inside), the fp16 model within its stated bound
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    check = low["onnxruntime_vs_fake_quant"]
    assert check["passed"] and "fp16" in check["bound"]
    assert 0 < max(check["max_abs_per_output"]) <= check["tolerance"]
    cfg = json.loads((out / "engine_config.json").read_text())
    assert cfg["onnx_float_type"] == "float16" and cfg["fp16"]
    assert "model.onnx is fp16 inside" in (out / "README.txt").read_text()
    assert res.report["verification"]["passed"]


def test_external_data_past_the_threshold(trt11_fp16_dynamic):
    res, out = trt11_fp16_dynamic
    assert res.report["lowering"]["external_data"]
    assert (out / "model.onnx.data").stat().st_size > 0
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    external = [i.name for i in model.graph.initializer
                if i.data_location == TensorProto.EXTERNAL]
    assert external  # the conv weights live in model.onnx.data
    assert "model.onnx.data" in {a["path"] for a in res.report["artifacts"]}
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)


def test_optimization_profile_per_dynamic_input(trt11_fp16_dynamic):
    res, out = trt11_fp16_dynamic
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert not dim.HasField("dim_value")  # the batch stays dynamic in the ONNX
    name = model.graph.input[0].name
    prof = json.loads((out / "engine_config.json").read_text())["profiles"]
    assert prof == {name: {"min": [1, 3, 16, 16], "opt": [4, 3, 16, 16],
                           "max": [8, 3, 16, 16]}}
    sh = (out / "trtexec.sh").read_text()
    assert (f"--minShapes={name}:1x3x16x16" in sh and f"--optShapes={name}:4x3x16x16" in sh
            and f"--maxShapes={name}:8x3x16x16" in sh)


FAKE_TENSORRT = '''
import json, os
__version__ = os.environ["FAKE_TRT_VERSION"]
LOG = []
class Logger:
    VERBOSE = INFO = 0
    def __init__(self, *a): pass
class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1
class BuilderFlag:
    FP16, INT8, SPARSE_WEIGHTS, GPU_FALLBACK = "FP16", "INT8", "SPARSE_WEIGHTS", "GPU_FALLBACK"
class MemoryPoolType:
    WORKSPACE = "WORKSPACE"
class DeviceType:
    DLA = "DLA"
class _Config:
    def set_memory_pool_limit(self, pool, size): LOG.append(["pool", pool, size])
    def set_flag(self, flag): LOG.append(["flag", flag])
    def add_optimization_profile(self, p): LOG.append(["profile", p.shapes])
class _Profile:
    def __init__(self): self.shapes = {}
    def set_shape(self, name, lo, opt, hi): self.shapes[name] = [list(lo), list(opt), list(hi)]
class Builder:
    def __init__(self, logger): pass
    def create_network(self, flags): LOG.append(["network_flags", flags]); return object()
    def create_builder_config(self): return _Config()
    def create_optimization_profile(self): return _Profile()
    def build_serialized_network(self, net, cfg):
        json.dump(LOG, open(os.environ["FAKE_TRT_LOG"], "w")); return b"plan"
class OnnxParser:
    def __init__(self, net, logger): pass
    def parse_from_file(self, path): return os.path.exists(path)
'''


@pytest.mark.parametrize("version,quantized,fp16_onnx,sparsity,expect", [
    ("8.5.2", True, False, False, {"network_flags": 1, "flags": {"FP16", "INT8"}}),
    ("10.3.0", True, False, True, {"network_flags": 2, "flags": {"SPARSE_WEIGHTS"}}),
    ("10.3.0", False, False, False, {"network_flags": 0, "flags": {"FP16"}}),
    ("11.4.1", False, True, False, {"network_flags": 0, "flags": set()}),
])
def test_build_engine_branches_on_the_tensorrt_major(trt11_fp16_dynamic, tmp_path, version,
                                                     quantized, fp16_onnx, sparsity, expect):
    """build_engine.py against a stand-in ``tensorrt`` module that records the builder
    calls: weak typing + INT8/FP16 flags on 8.x, STRONGLY_TYPED (+ SPARSE_WEIGHTS) on 10.x,
    no typing flag at all on 11.x; the optimization profile per dynamic input on all."""
    import shutil
    import subprocess
    import sys

    _, out = trt11_fp16_dynamic
    work = tmp_path / "bundle"
    shutil.copytree(out, work)
    cfg = json.loads((work / "engine_config.json").read_text())
    cfg.update(quantized=quantized, sparsity=sparsity, tensorrt=version,
               onnx_float_type="float16" if fp16_onnx else "float32")
    (work / "engine_config.json").write_text(json.dumps(cfg))
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "tensorrt.py").write_text(FAKE_TENSORRT)
    log = tmp_path / "log.json"
    env = {**os.environ, "PYTHONPATH": str(fake), "FAKE_TRT_VERSION": version,
           "FAKE_TRT_LOG": str(log)}
    r = subprocess.run([sys.executable, str(work / "build_engine.py")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (work / "model.plan").read_bytes() == b"plan"
    calls = json.loads(log.read_text())
    assert next(c[1] for c in calls if c[0] == "network_flags") == expect["network_flags"]
    assert {c[1] for c in calls if c[0] == "flag"} == expect["flags"]
    assert ["pool", "WORKSPACE", 2048 << 20] in calls
    (profile,) = [c[1] for c in calls if c[0] == "profile"]
    assert list(profile.values()) == [[[1, 3, 16, 16], [4, 3, 16, 16], [8, 3, 16, 16]]]
    assert ("strongly typed" in r.stdout) == (version != "8.5.2" and (quantized or fp16_onnx))


def test_engine_built_here_only_with_tensorrt_and_a_gpu(trt11_fp16_dynamic):
    from edgecc.targets.jetson.engine import tensorrt_here

    res, out = trt11_fp16_dynamic
    version, why = tensorrt_here()
    eng = res.report["lowering"]["engine"]
    if version is None:
        assert eng == {"built": False, "reason": why}
        assert any("engine build" in s for s in res.report["not_verified"])
        pytest.skip(f"engine build and GPU execution not run: {why}")
    assert eng["built"] and eng["passed"], eng  # a Jetson or a workstation with TensorRT
    assert (out / "model.plan").exists()


def test_operator_tensorrt_cannot_parse_fails_the_compile(tmp_path):
    # LayerNormalization: TensorRT 8.6 added it; JetPack 5.1 ships TensorRT 8.5.2
    out = tmp_path / "o"
    with pytest.raises(edgecc.EdgeccError, match=r"TensorRT 8\.5\.2 would refuse the model: "
                       r"node '.*' \(LayerNormalization\): .*added in TensorRT 8\.6") as info:
        edgecc.compile(torch.nn.LayerNorm(16).eval(), "jetson:agx-orin",
                       example_inputs=(torch.randn(2, 16),), output_dir=str(out),
                       target_options={"jetpack": "5.1"})
    assert len(str(info.value).splitlines()) == 1
    assert not out.exists()


def test_activation_scales_are_amax_over_127():
    """TensorRT's (and ModelOpt's) convention: +amax is representable. ReLU6 saturates at 6
    on this calibration data, so the second layer's input scale is exactly 6 / 127 (edgecc's
    quantize alone gives 6 / 127.5, where 6 rounds to 128 and clips)."""
    from edgecc.pass_base import PassContext
    from edgecc.pass_manager import PassManager
    from edgecc.pipeline_text import PassStep
    from edgecc.quant import is_quantize
    from edgecc.targets.jetson import JetsonTarget
    from edgecc.targets.jetson.placement import JetsonQDQPlacement, PlacementOptions

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU6(),
                                torch.nn.Linear(32, 32)).eval()
    with torch.no_grad():
        model[0].weight.mul_(20)  # saturate the ReLU6
    prog = edgecc.trace(model, (torch.randn(8, 32),))
    calib = [(torch.randn(8, 32),) for _ in range(2)]
    ctx = PassContext(calibration=calib, target=JetsonTarget())
    PassManager("quantize{scheme=w8a8}")(prog, context=ctx)
    PassManager([PassStep(JetsonQDQPlacement, PlacementOptions())])(prog, context=ctx)
    acts = [n for n in prog.nodes("call_function")
            if is_quantize(n) and not prog.is_constant(n.args[0])]
    assert len(acts) == 2
    assert float(prog.tensor(acts[1].args[1])) == pytest.approx(6 / 127, rel=1e-6)
    # placing again changes nothing
    PassManager([PassStep(JetsonQDQPlacement, PlacementOptions())])(prog, context=ctx)
    assert float(prog.tensor(acts[1].args[1])) == pytest.approx(6 / 127, rel=1e-6)
