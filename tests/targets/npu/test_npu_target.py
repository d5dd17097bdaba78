"""-t npu end to end: partition by the description, Vela for Ethos-U, C for generic-int8,
verification against the fake-quant program, the deployability report and bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import edgecc
from edgecc.errors import UnknownNameError
from edgecc.targets.npu.bundle import load_regions
from edgecc.targets.npu.simulator import simulate

pytest.importorskip("tvm")
pytest.importorskip("ethosu.vela")

PIPELINE = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, expand, stride):
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2ish(nn.Module):
    """Stem, three inverted residual blocks (one strided), global pool, classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(16, 16, 4, 1),
                                    InvertedResidual(16, 24, 4, 2),
                                    InvertedResidual(24, 24, 4, 1))
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def _model():
    torch.manual_seed(0)
    m = MobileNetV2ish()
    for mod in m.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _calib(shape=(1, 3, 32, 32), n=8):
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(*shape, generator=g),) for _ in range(n)]


def _output_step(program) -> float:
    """The scale of the quantize that makes the program's (single) output."""
    out = next(n for n in program.graph.nodes if n.op == "output")
    dq = out.args[0][0] if isinstance(out.args[0], (tuple, list)) else out.args[0]
    return float(program.tensor(dq.args[1]).reshape(-1)[0])


def _max_steps(res, shape, samples=4) -> float:
    step = _output_step(res.program)
    worst = 0.0
    for seed in range(samples):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(100 + seed))
        got = res.run(x)
        got = got[0] if isinstance(got, (tuple, list)) else got
        ref = res.program.run(x)
        ref = ref[0] if isinstance(ref, (tuple, list)) else ref
        worst = max(worst, float((got - ref).abs().max()) / step)
    return worst


@pytest.fixture(scope="module")
def u55(tmp_path_factory):
    out = tmp_path_factory.mktemp("u55") / "out"
    x = torch.randn(1, 3, 32, 32)
    return edgecc.compile(_model(), target="npu:ethos-u55-128", example_inputs=(x,),
                          calibration=_calib(), pipeline=PIPELINE, output_dir=str(out))


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    out = tmp_path_factory.mktemp("generic") / "out"
    x = torch.randn(1, 3, 32, 32)
    return edgecc.compile(_model(), target="npu", target_options={"device": "generic-int8"},
                          example_inputs=(x,), calibration=_calib(), pipeline=PIPELINE,
                          output_dir=str(out))


def test_mobilenet_on_ethos_u55_has_the_macs_on_the_npu_compiled_by_vela(u55):
    lowering = u55.report["lowering"]
    npu = lowering["npu"]
    assert npu["device"] == "ethos-u55-128"
    assert npu["npu_mac_share"] >= 0.90, npu
    assert sum(d["macs"] for d in npu["per_op"] if d["device"] == "npu") == npu["npu_macs"]
    cpu = [d for d in npu["per_op"] if d["device"] == "cpu"]
    assert all(d["reason"] for d in cpu)
    assert [d["device"] for d in npu["per_op"] if d["op"] == "add"] == ["npu", "npu"]
    vela = lowering["vela"]
    # connected NPU layers are one Vela region (MergeCompositeFunctions): the composites of
    # the BYOC partition, one per NPU op of the fx classification, in fewer regions
    assert 0 < len(vela["regions"]) < npu["npu_ops"]
    composites = [c for r in npu["regions"] for c in r["composites"]]
    assert len(composites) == npu["npu_ops"]
    assert npu["byoc"]["agrees_with_fx_classification"] and npu["byoc"]["declined"] == []
    for region in vela["regions"]:  # every region wholly on the NPU, with a stream
        assert region["cpu_operators"] == []
        assert region["performance"]["cpu_ops"] == 0
        assert region["command_stream_bytes"] > 0 and region["performance"]["npu_cycles"] > 0
    assert vela["npu_cycles"] == sum(r["performance"]["npu_cycles"] for r in vela["regions"])
    files = {a["path"] for a in u55.report["artifacts"]}
    for region in vela["regions"]:
        stem = "npu/" + region["region"]
        assert {f"{stem}.tflite", f"{stem}_vela.tflite", f"{stem}.h"} <= files
    assert any("FVP" in line for line in u55.report["not_verified"])
    assert u55.report["verification"]["passed"]


def test_ethos_u55_output_within_one_quantization_step_of_the_fake_quant_program(u55):
    assert _max_steps(u55, (1, 3, 32, 32)) <= 1.001  # one step (float32 dequantize noise)


def test_ethos_u55_regions_simulator_equals_litert(u55):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    rng = np.random.default_rng(0)
    compared = 0
    for region, _ in load_regions(u55.output_dir):
        with open(os.path.join(u55.output_dir, "npu", f"{region.name}.tflite"), "rb") as f:
            tflite = f.read()
        it = litert.Interpreter(model_content=tflite,
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
        for _ in range(2):
            inputs = {n: rng.integers(-128, 128, region.tensors[n].shape, dtype=np.int8)
                      for n in region.inputs}
            for d in it.get_input_details():
                it.set_tensor(d["index"], inputs[d["name"]])
            it.invoke()
            ref = it.get_tensor(it.get_output_details()[0]["index"])
            # LiteRT's reference FULLY_CONNECTED rounds once (simulator.py's docstring)
            (sim,) = simulate(region, inputs, fully_connected_rounding="single").values()
            assert np.array_equal(ref, sim), region.name
            compared += 1
    assert compared >= 2  # one region: the global mean (TFLite MEAN) joins the two halves
    kinds = {op.kind for region, _ in load_regions(u55.output_dir) for op in region.ops}
    assert {"pad", "conv2d", "depthwise_conv2d", "add", "mean", "fully_connected"} <= kinds


def test_generic_int8_artifact_regions_equal_the_simulator_bit_for_bit(generic):
    import tvm

    npu = generic.report["lowering"]["npu"]
    assert npu["codegen"] == "c" and npu["npu_mac_share"] >= 0.90
    from edgecc.targets.npu.runner import from_region, to_region

    lib = tvm.runtime.load_module(os.path.join(generic.output_dir, "model.so"))
    rng = np.random.default_rng(1)
    checked, kinds = 0, set()
    for region, entry in load_regions(generic.output_dir):
        fn = lib.get_function(entry["symbol"], True)
        assert fn is not None, entry["symbol"]
        (out_shape,) = entry["boundary_outputs"]
        for _ in range(3):
            xs = [rng.integers(-128, 128, shape, dtype=np.int8)
                  for shape in entry["boundary_inputs"]]  # NCHW, as the Relax graph calls it
            y = tvm.runtime.tensor(np.zeros(out_shape, np.int8))
            fn(*(tvm.runtime.tensor(x) for x in xs), y)
            feeds = {n: to_region(x, region.tensors[n].shape) for n, x in zip(region.inputs, xs)}
            (sim,) = simulate(region, feeds).values()
            assert np.array_equal(y.numpy(), from_region(sim, tuple(out_shape))), region.name
            checked += y.numpy().size
        kinds |= {op.kind for op in region.ops}
    assert checked > 0
    assert kinds == {"conv2d", "depthwise_conv2d", "fully_connected", "add", "pad"}
    assert generic.report["not_verified"] == []
    assert generic.report["verification"]["passed"]
    assert _max_steps(generic, (1, 3, 32, 32)) <= 1.001  # one step (float32 dequantize noise)


def test_byoc_partition_has_composite_functions_with_codegen_attributes(generic, u55):
    """The artifact's split is TVM Relax BYOC's: FuseOpsByPattern made composite functions
    (``Composite`` attribute) wrapped in functions with a ``Codegen`` attribute, one region
    per such function, and what is left of main calls them by symbol."""
    from tvm import relax

    from edgecc.targets.npu import byoc
    from edgecc.targets.npu.lower import exported_decisions, relax_partition
    from edgecc.targets.npu.presets import resolve

    for res, device, merge in ((generic, "generic-int8", False), (u55, "ethos-u55-128", True)):
        desc = resolve(device)
        exported, _ = exported_decisions(res.program, desc)
        parted = relax_partition(exported, desc, merge, lambda regions: [])
        outer = {gv.name_hint: f for gv, f in parted.partitioned.functions.items()
                 if f.attrs is not None and "Codegen" in f.attrs}
        assert {str(f.attrs["Codegen"]) for f in outer.values()} == {byoc.codegen_name(desc)}
        composites = [str(b.value.attrs["Composite"]) for f in outer.values()
                      for block in f.body.blocks for b in block.bindings
                      if isinstance(b.value, relax.Function)]
        assert composites and all(c.startswith(byoc.codegen_name(desc) + ".")
                                  for c in composites)
        assert (len(composites) > len(outer)) == merge  # MergeCompositeFunctions merged
        # the regions of the bundle are these functions, with the same symbols
        bundle = [entry["symbol"] for _, entry in load_regions(res.output_dir)]
        assert sorted(bundle) == sorted(str(f.attrs["global_symbol"]) for f in outer.values())
        script = parted.module.script(show_meta=False)
        assert script.count("R.call_dps_packed(") == len(outer)
        assert "R.nn.conv2d" not in script  # every convolution went to the NPU


class BigKernel(nn.Module):
    def __init__(self):
        super().__init__()
        self.big = nn.Conv2d(3, 8, 9, stride=4, padding=4)
        self.dw = nn.Conv2d(8, 8, 3, stride=4, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.pw(self.dw(torch.relu(self.big(x))))


def _quantized(model, shape):
    """The program as ``-t npu`` lowers it: the pipeline, then the NPU's legalization."""
    from edgecc.pass_base import PassContext
    from edgecc.pipeline_text import PassStep
    from edgecc.registry import default_target_registry
    from edgecc.targets.npu.legalize import QuantizeLayerOutputs

    ctx = PassContext(calibration=_calib(shape, 4),
                      target=default_target_registry().get("npu")())
    prog = edgecc.trace(model.eval(), (torch.randn(*shape),))
    prog = edgecc.PassManager(PIPELINE)(prog, context=ctx).program
    legalize = [PassStep(QuantizeLayerOutputs, QuantizeLayerOutputs.Options())]
    return edgecc.PassManager(legalize)(prog, context=ctx).program


def _convs_by_kernel(program, device):
    """{(kernel, groups): decision} for the program's convolutions on ``device``."""
    from edgecc.targets.npu import partition
    from edgecc.targets.npu.presets import resolve

    decisions = {d.node: d for d in partition.classify_program(program, resolve(device))}
    out = {}
    for node in program.nodes("call_function"):
        if node.name in decisions and decisions[node.name].op in ("conv_act", "convolution"):
            w = node.args[1].meta["val"].shape
            out[(int(w[-1]), int(node.args[8]))] = decisions[node.name]
    return out


def test_oversized_kernel_and_stride_go_to_the_cpu_with_the_constraint_named():
    torch.manual_seed(0)
    prog = _quantized(BigKernel(), (1, 3, 32, 32))
    generic = _convs_by_kernel(prog, "generic-int8")
    big, dw, pw = generic[(9, 1)], generic[(3, 8)], generic[(1, 1)]
    assert big.device == "cpu" and "ops.conv2d.kernel_height" in big.reason, big.reason
    assert "kernel height 9 outside [1, 7]" in big.reason
    assert dw.device == "cpu" and "ops.depthwise_conv2d.stride" in dw.reason, dw.reason
    assert pw.device == "npu"
    u55 = _convs_by_kernel(prog, "ethos-u55-128")
    assert u55[(3, 8)].device == "cpu"
    assert "ops.depthwise_conv2d.stride" in u55[(3, 8)].reason
    assert u55[(1, 1)].device == "npu"


USER_NPU = """\
name: my-tiny-npu
summary: a user's NPU, 3x3 kernels at most, written in a test
codegen: c
memory: {sram_bytes: 65536, clock_hz: 200000000}
quantization:
  activations: {dtype: int8, granularity: per-tensor, zero_point: any}
  weights: {dtype: int8, granularity: per-channel, symmetric: true}
  bias: {dtype: int32, bits: 32}
ops:
  conv2d: {dtypes: [int8], kernel_height: [1, 3], kernel_width: [1, 3], stride: [1, 2]}
  fully_connected: {dtypes: [int8]}
  relu: {dtypes: [int8]}
patterns:
  - {name: conv2d, root: conv2d, fuse: [bias, relu]}
"""


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 5, padding=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.c2(torch.relu(self.c1(x)))
        return self.fc(y.mean((2, 3)))


def test_user_written_description_works_end_to_end(tmp_path):
    path = tmp_path / "my-npu.yaml"
    path.write_text(USER_NPU)
    torch.manual_seed(0)
    res = edgecc.compile(Tiny().eval(), target="npu",
                         target_options={"description": str(path)},
                         example_inputs=(torch.randn(1, 3, 8, 8),),
                         calibration=_calib((1, 3, 8, 8), 4), pipeline=PIPELINE,
                         output_dir=str(tmp_path / "out"))
    npu = res.report["lowering"]["npu"]
    assert npu["device"] == "my-tiny-npu"
    by_op = {d["node"]: d for d in npu["per_op"]}
    five = [d for d in by_op.values() if "ops.conv2d.kernel_height" in d["reason"]]
    assert len(five) == 1 and five[0]["device"] == "cpu"
    assert sum(d["device"] == "npu" for d in by_op.values()) == 2  # c1 and fc
    assert res.report["verification"]["passed"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["lowering"]["npu"]["npu_ops"] == 2
    assert _max_steps(res, (1, 3, 8, 8)) <= 1.001  # one step (float32 dequantize noise)


def test_unknown_device_is_one_line_with_a_suggestion(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UnknownNameError) as e:
        edgecc.compile(Tiny().eval(), target="npu:ethos-u55-12",
                       example_inputs=(torch.randn(1, 3, 8, 8),), pipeline=PIPELINE,
                       output_dir=str(out))
    msg = str(e.value)
    assert "\n" not in msg and "did you mean 'ethos-u55-128'" in msg, msg
    assert not out.exists()


def test_inspect_reports_deployability_before_compression(tmp_path, capsys):
    from edgecc.cli import main

    path = tmp_path / "mnv2.pt2"
    torch.export.save(torch.export.export(_model(), (torch.randn(1, 3, 32, 32),)), str(path))
    assert main(["inspect", str(path), "-t", "npu", "--target-option",
                 "device=ethos-u55-128", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["deployability"]
    assert report["device"] == "ethos-u55-128" and report["assumed_quantization"]
    assert report["npu_mac_share"] >= 0.90
    assert all(d["reason"] for d in report["per_op"])
    assert main(["inspect", str(path), "-t", "npu:generic-int8"]) == 0
    assert "MACs" in capsys.readouterr().out


@pytest.mark.parametrize("pipeline, says", [
    ("quantize{scheme=w4a16}", "int4"),
    ("quantize{scheme=w8a8,weight_granularity=per-group,group_size=4}", "per-group"),
])
def test_quantization_the_npu_cannot_represent_is_one_line_and_writes_nothing(
        tmp_path, pipeline, says):
    out = tmp_path / "out"
    with pytest.raises(edgecc.EdgeccError) as e:
        edgecc.compile(Tiny().eval(), target="npu:generic-int8",
                       example_inputs=(torch.randn(1, 3, 8, 8),), pipeline=pipeline,
                       calibration=_calib((1, 3, 8, 8), 2), output_dir=str(out))
    msg = str(e.value)
    assert "\n" not in msg and says in msg and "npu" in msg, msg
    assert not out.exists()


def test_bert_config_on_generic_int8_linears_and_attention_on_the_npu_fallbacks_with_reasons(
        tmp_path):
    pytest.importorskip("transformers")
    from tests.models import transformer

    g = torch.Generator().manual_seed(3)

    def tokens():
        return (torch.randint(0, 128, (1, 16), generator=g), torch.ones(1, 16, dtype=torch.long))

    res = edgecc.compile(transformer("bert"), target="npu:generic-int8",
                         example_inputs=tokens(), calibration=[tokens() for _ in range(4)],
                         pipeline="quantize{scheme=w8a8},fuse,dce",
                         output_dir=str(tmp_path / "out"))
    npu = res.report["lowering"]["npu"]
    per_op = npu["per_op"]
    # q/k/v/o and both feed-forward linears of 2 layers; the FFN's fused gelu was split off
    # (npu-split-activations) and runs on the NPU as a 256-entry int8 table (ops.gelu)
    linears = [d for d in per_op if d["op"] == "linear"]
    assert len(linears) == 12 and all(d["device"] == "npu" for d in linears)
    gelu = [d for d in per_op if d["op"] == "gelu"]
    assert len(gelu) == 2 and all(d["device"] == "npu" and "table" in d["reason"] for d in gelu)
    norms = [d for d in per_op if "layer_norm" in d["op"]]
    assert norms and all(d["device"] == "cpu" and d["reason"] for d in norms)
    # attention: Q.K^T and P.V as int8 batch matmuls on the NPU (npu-decompose-attention),
    # the softmax between them too (TFLite's int8 softmax as C, == the simulator)
    assert not [d for d in per_op if "attention" in d["op"]]
    matmuls = [d for d in per_op if d["op"] == "matmul"]
    assert len(matmuls) == 4 and all(d["device"] == "npu" and d["macs"] for d in matmuls)
    softmax = [d for d in per_op if "softmax" in d["op"]]
    assert len(softmax) == 2 and all(d["device"] == "npu" for d in softmax)  # ops.softmax
    # 12 linears, 4 matmuls, 2 gelus, 1 softmax function: both layers' softmaxes are the same
    # function (equal input quantization: masked logits span 12), called twice
    assert npu["byoc"]["functions"] == 19 and npu["byoc"]["agrees_with_fx_classification"]
    assert npu["npu_mac_share"] == 1.0, npu["npu_mac_share"]
    assert res.report["verification"]["passed"]
    # the artifact's batch-matmul regions (3-D at the boundary) equal the simulator bit for bit
    import tvm

    lib = tvm.runtime.load_module(str(tmp_path / "out" / "model.so"))
    rng = np.random.default_rng(0)
    bmm = [(r, e) for r, e in load_regions(str(tmp_path / "out"))
           if [op.kind for op in r.ops] == ["batch_matmul"]]
    assert len(bmm) == 4
    for region, entry in bmm:
        ins = {n: rng.integers(-128, 128, region.tensors[n].shape, dtype=np.int8)
               for n in region.inputs}
        (want,) = simulate(region, ins).values()
        got = tvm.runtime.tensor(np.zeros(want.shape, np.int8))
        lib.get_function(entry["symbol"], True)(
            *(tvm.runtime.tensor(ins[n]) for n in region.inputs),
            got)
        assert np.array_equal(got.numpy(), want), region.name


def test_merged_vela_regions_compute_what_one_op_regions_do_in_fewer_cycles(u55, tmp_path):
    x = torch.randn(1, 3, 32, 32)
    single = edgecc.compile(_model(), target="npu:ethos-u55-128", example_inputs=(x,),
                            target_options={"merge_regions": False}, calibration=_calib(),
                            pipeline=PIPELINE, output_dir=str(tmp_path / "out"), verify=False)
    npu = single.report["lowering"]["npu"]
    assert len(single.report["lowering"]["vela"]["regions"]) == npu["npu_ops"]
    for seed in range(3):
        x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(single.run(x)[0], u55.run(x)[0])
    assert u55.report["lowering"]["vela"]["npu_cycles"] < \
        single.report["lowering"]["vela"]["npu_cycles"]


class ResidualRelu(nn.Module):
    """A ResNet basic block: relu(x + conv(relu(conv(x))))."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = torch.relu(x + self.c2(torch.relu(self.c1(x))))
        return self.fc(y.mean((2, 3)))


def test_residual_add_with_relu_is_one_npu_add_region(tmp_path):
    torch.manual_seed(0)
    res = edgecc.compile(ResidualRelu().eval(), target="npu:ethos-u55-128",
                         example_inputs=(torch.randn(1, 3, 8, 8),),
                         calibration=_calib((1, 3, 8, 8), 4), pipeline=PIPELINE,
                         output_dir=str(tmp_path / "out"))
    npu = res.report["lowering"]["npu"]
    by_op = {d["op"]: d for d in npu["per_op"]}
    assert by_op["add"]["device"] == by_op["relu"]["device"] == "npu"
    assert "fused into the add region" in by_op["relu"]["reason"]
    assert len(npu["regions"]) == 1  # stem, block, add, global mean and classifier
    assert res.report["verification"]["passed"]
    assert _max_steps(res, (1, 3, 8, 8)) <= 1.001  # one step (float32 dequantize noise)


@pytest.mark.slow
def test_generic_int8_with_an_arm64_cpu_part_runs_under_qemu_and_equals_the_host(
        generic, tmp_path):
    """cpu=arm64:cortex-a76: model.so cross-compiled for aarch64 (CPU part and the regions'
    C code), run by the bundle's deploy runner under qemu-aarch64; the int8 output equals
    the host artifact's bit for bit (the same integer regions; the float CPU ops between
    them happen to round alike on both here), and the fake-quant program within a step."""
    from edgecc.targets.arm import emulation

    if not emulation.ready():
        pytest.skip(emulation.why_not_ready())
    # verify=False: the comparison below is the verification, in one emulator launch
    res = edgecc.compile(_model(), target="npu:generic-int8",
                         target_options={"cpu": "arm64:cortex-a76"},
                         example_inputs=(torch.randn(1, 3, 32, 32),), calibration=_calib(),
                         pipeline=PIPELINE, output_dir=str(tmp_path / "out"), verify=False)
    arch = open(os.path.join(res.output_dir, "model.so"), "rb").read(20)[18]
    assert arch == 183  # ELF e_machine EM_AARCH64
    xs = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(s))
          for s in range(3)]
    step = _output_step(res.program)
    runner = res.target.load(res.output_dir, res.report)
    for x, (got,) in zip(xs, runner.run_many([(x,) for x in xs])):
        host = generic.run(x)
        assert torch.equal(got, host)
        assert float((got - res.program.run(x)[0]).abs().max()) <= step * 1.001


def test_cpu_option_bad_values_are_one_line():
    from edgecc.targets.npu.target import NpuOptions

    with pytest.raises(ValueError, match="unknown arm64 preset 'cortex-a7'"):
        NpuOptions(device="generic-int8", cpu="arm64:cortex-a7")
    with pytest.raises(ValueError, match="generic-int8"):
        NpuOptions(device="ethos-u55-128", cpu="arm64")


def test_description_forbidding_zero_points_makes_quantize_symmetric(tmp_path):
    """quantization.activations.zero_point: zero (a description, no code): every activation
    quantize of the compiled program has zero point 0, the layer outputs legalization adds
    too, and the NPU regions take it."""
    from edgecc.quant import is_quantize

    path = tmp_path / "symmetric-npu.yaml"
    path.write_text(USER_NPU.replace("zero_point: any", "zero_point: zero")
                    .replace("name: my-tiny-npu", "name: symmetric-npu"))
    torch.manual_seed(0)
    res = edgecc.compile(Tiny().eval(), target="npu", target_options={"description": str(path)},
                         example_inputs=(torch.randn(1, 3, 8, 8),),
                         calibration=_calib((1, 3, 8, 8), 4), pipeline=PIPELINE,
                         output_dir=str(tmp_path / "out"))
    quantizes = [n for n in res.program.graph.nodes if is_quantize(n)]
    assert quantizes
    assert all(not res.program.tensor(q.args[2]).any() for q in quantizes)
    assert "activations made symmetric for target 'npu'" in json.dumps(res.report)
    npu = res.report["lowering"]["npu"]
    assert npu["npu_ops"] == 2 and npu["byoc"]["agrees_with_fx_classification"], npu["byoc"]
    assert res.report["verification"]["passed"]
    # the same model quantized asymmetrically is refused by the region checks, with why
    from edgecc.targets.npu import byoc
    from edgecc.targets.npu.description import load_description_file
    from edgecc.targets.npu.lower import exported_decisions, relax_partition

    asym = _quantized(Tiny(), (1, 3, 8, 8))
    desc = load_description_file(path)
    exported, _ = exported_decisions(asym, desc)
    parted = relax_partition(exported, desc, False, lambda regions: [])
    reasons = [d.reason for d in parted.declined]
    assert any("quantization.activations.zero_point" in r for r in reasons), reasons
    from edgecc.targets.npu.partition import classify_program

    fx_reasons = [d.reason for d in classify_program(asym, desc) if d.device == "cpu"]
    assert any("quantization.activations.zero_point" in r for r in fx_reasons), fx_reasons
    assert byoc.codegen_name(desc) == "edgecc_npu_c"


def test_whole_model_tflite_for_velas_own_partitioning(u55):
    """bench/npu.py's peer: the BYOC regions (and the CPU ops between them that have an
    int8 TFLite form) as one TFLite graph, which Vela compiles whole (MobileNetV2-style: the
    global mean is already an NPU MEAN; nothing left on the CPU)."""
    from edgecc.targets.npu.lower import exported_decisions, relax_partition
    from edgecc.targets.npu.presets import resolve
    from edgecc.targets.npu.tflite_writer import write_tflite
    from edgecc.targets.npu.vela_compile import compile_region
    from edgecc.targets.npu.whole_model import whole_model_region

    desc = resolve("ethos-u55-128")
    exported, _ = exported_decisions(u55.program, desc)
    parted = relax_partition(exported, desc, True, lambda regions: [])
    region, why = whole_model_region(parted.module["main"], {r.name: r for r in parted.regions})
    assert region is not None, why
    assert "mean" in [op.kind for op in region.ops]
    assert len(region.ops) == sum(len(r.ops) for r in parted.regions)
    result = compile_region(write_tflite(region), desc, require_npu=False)
    assert result.cpu_operators == () and result.performance["npu_cycles"] > 0


class PoolFlatten(nn.Module):
    """conv -> relu -> max pool -> flatten -> linear: the digits CNN's shape, small."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


def test_max_pool_and_flatten_go_to_the_npu_and_into_the_whole_model_tflite(tmp_path):
    """A CNN with a max pool and a flatten before its classifier: on Ethos-U the BYOC region
    holds MAX_POOL_2D, TRANSPOSE (NHWC -> NCHW, PyTorch's flatten order), RESHAPE and
    QUANTIZE between the conv and the FC (one region); the whole-model TFLite (bench peer)
    compiles with nothing left on the CPU and, simulated in integers, gives the artifact's
    output to within one output step. On generic-int8 the same ops are C in the artifact,
    verified against the fake-quant program."""
    from edgecc.targets.npu.lower import exported_decisions, relax_partition
    from edgecc.targets.npu.presets import resolve
    from edgecc.targets.npu.tflite_writer import write_tflite
    from edgecc.targets.npu.vela_compile import compile_region
    from edgecc.targets.npu.whole_model import whole_model_region

    torch.manual_seed(0)
    shape = (1, 2, 6, 6)
    res = edgecc.compile(PoolFlatten().eval(), target="npu:ethos-u55-128",
                         example_inputs=(torch.randn(*shape),), calibration=_calib(shape, 4),
                         pipeline=PIPELINE, output_dir=str(tmp_path / "out"), verify=False)
    (npu_region,) = res.report["lowering"]["npu"]["regions"]
    assert npu_region["ops"] == ["conv2d", "max_pool2d", "transpose", "reshape", "quantize",
                                 "fully_connected"], npu_region["ops"]
    per_op = {d["node"]: d for d in res.report["lowering"]["npu"]["per_op"]}
    assert per_op["max_pool2d_with_indices"]["device"] == "npu"
    assert per_op["view"]["device"] == "npu"
    desc = resolve("ethos-u55-128")
    exported, _ = exported_decisions(res.program, desc)
    parted = relax_partition(exported, desc, True, lambda regions: [])
    region, why = whole_model_region(parted.module["main"], {r.name: r for r in parted.regions})
    assert region is not None, why
    kinds = [op.kind for op in region.ops]
    assert {"max_pool2d", "transpose", "reshape"} <= set(kinds), kinds
    result = compile_region(write_tflite(region), desc, require_npu=False)
    assert result.cpu_operators == () and result.performance["npu_cycles"] > 0
    q_in = region.tensors[region.inputs[0]].quant
    q_out = region.tensors[region.outputs[0]].quant
    for seed in range(3):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
        xq = np.clip(np.round(x.numpy() / q_in.scale[0]) + q_in.zero_point[0], -128, 127)
        (y,) = simulate(region, {region.inputs[0]: xq.transpose(0, 2, 3, 1).astype(np.int8)}
                        ).values()
        got = (y.astype(np.float64) - q_out.zero_point[0]) * q_out.scale[0]
        want = res.run(x)
        want = (want[0] if isinstance(want, (tuple, list)) else want).numpy()
        assert np.abs(got - want).max() <= q_out.scale[0] * 1.001
    generic = edgecc.compile(PoolFlatten().eval(), target="npu:generic-int8",
                             example_inputs=(torch.randn(*shape),), calibration=_calib(shape, 4),
                             pipeline=PIPELINE, output_dir=str(tmp_path / "generic"))
    assert "max_pool2d" in [op for r in generic.report["lowering"]["npu"]["regions"]
                            for op in r["ops"]]
    assert generic.report["verification"]["passed"]
    assert _max_steps(generic, shape) <= 1.001


class Attention(nn.Module):
    """One self-attention head group: q / k / v / o projections around SDPA."""

    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))
        self.o = nn.Linear(dim, dim)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = (p(x).view(b, s, self.heads, -1).transpose(1, 2) for p in self.qkv)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.o(y.transpose(1, 2).reshape(b, s, d))


def test_attention_matmuls_on_ethos_u55_compiled_by_vela(tmp_path):
    """Q.K^T and P.V as int8 BATCH_MATMUL regions that Vela 5.2 compiles for U55 with no
    operator left on the CPU (its report lists BATCH_MATMUL for U55); the softmax between
    them is TFLite's int8 SOFTMAX on the NPU too (simulator == LiteRT, test_simulator.py);
    the artifact (simulator for the regions) is verified against the fake-quant program."""
    torch.manual_seed(0)
    shape = (1, 8, 32)
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(*shape, generator=g),) for _ in range(4)]
    res = edgecc.compile(Attention().eval(), target="npu:ethos-u55-128", example_inputs=calib[0],
                         calibration=calib, pipeline="quantize{scheme=w8a8},fuse,dce",
                         output_dir=str(tmp_path / "out"))
    npu = res.report["lowering"]["npu"]
    assert npu["npu_mac_share"] == 1.0, npu["npu_mac_share"]
    matmuls = [d for d in npu["per_op"] if d["op"] == "matmul"]
    assert len(matmuls) == 2 and all(d["device"] == "npu" for d in matmuls)
    softmax = [d for d in npu["per_op"] if "softmax" in d["op"]]
    assert softmax and all(d["device"] == "npu" for d in softmax), softmax
    vela = res.report["lowering"]["vela"]
    ops = [op for r in vela["regions"] for op in r["ops"]]
    assert ops.count("batch_matmul") == 2 and ops.count("softmax") == 1
    assert all(r["cpu_operators"] == [] for r in vela["regions"]) and vela["npu_cycles"] > 0
    assert res.report["verification"]["passed"]
