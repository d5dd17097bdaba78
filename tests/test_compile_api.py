import json
import os
import time

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.errors import (
    EdgeccError,
    InputSpecError,
    OutputDirError,
    PipelineSyntaxError,
    UnknownNameError,
    VerificationFailedError,
)
from edgecc.pass_base import Pass, PassResult
from edgecc.registry import Registry


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 36, 3)).eval()


X = (torch.randn(2, 3, 8, 8),)


def test_compile_writes_manifest_with_everything_design_lists(tmp_path):
    out = tmp_path / "build"
    start = time.perf_counter()
    res = edgecc.compile(model(), "host", pipeline="fold-batchnorm,fuse,dce",
                         example_inputs=X, output_dir=str(out))
    wall = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    seconds = manifest["compile_seconds"]  # every stage timed, within the call's wall time
    stages = {k: v for k, v in seconds.items() if k not in ("total", "parts")}
    assert list(stages) == ["checks", "load", "passes", "lowering", "write", "verify"]
    assert all(v >= 0 for v in stages.values()) and sum(stages.values()) <= seconds["total"]
    assert seconds["total"] <= wall and stages["lowering"] > 0 and stages["verify"] > 0
    tvm_parts = seconds["parts"]["lowering"]
    assert set(tvm_parts) == {"tvm import", "tvm relax passes", "tvm codegen", "tvm link"}
    assert all(v >= 0 for v in tvm_parts.values())
    assert sum(tvm_parts.values()) <= stages["lowering"]
    assert set(seconds["parts"]["passes"]) == {p["pass"] for p in
                                                manifest["pipeline"]["passes"]}
    assert sum(seconds["parts"]["passes"].values()) <= stages["passes"] + 1e-3
    assert manifest == json.loads(json.dumps(res.report))
    assert manifest["schema_version"] == 1
    assert manifest["edgecc_version"] == edgecc.__version__
    assert manifest["target"]["name"] == "host"
    assert manifest["inputs"] == [{"name": "input", "shape": [2, 3, 8, 8], "dtype": "float32"}]
    assert manifest["outputs"][0]["shape"] == [2, 3]
    passes = manifest["pipeline"]["passes"]
    assert [p["pass"] for p in passes] == ["fold-batchnorm", "fuse", "dce",
                                           "attention-mask-to-additive", "apply-masks"]
    assert passes[0]["stats"]["folded"] == 1 and passes[0]["seconds"] >= 0
    assert passes[0]["stats"]["rules"] == {"conv-bn": {"matched": 1, "declined": {}}}
    before, after = manifest["model"]["before"], manifest["model"]["after"]
    assert after["parameters"] < before["parameters"] and after["macs"] == before["macs"]
    art, readme = manifest["artifacts"]
    assert art["path"] == "model.so" and art["bytes"] == os.path.getsize(out / "model.so")
    assert readme["path"] == "README.txt" and readme["kind"] == "docs"
    assert len(art["sha256"]) == 64
    v = manifest["verification"]
    assert v["performed"] and v["passed"] and v["samples"] == 3 and v["max_abs"] < 1e-5
    assert sorted(os.listdir(out)) == ["README.txt", "manifest.json", "model.so"]
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(res.run(x), model()(x), atol=1e-5, rtol=1e-5)


def test_compile_accepts_program_path_and_recipe(tmp_path):
    program = edgecc.trace(model(), X)
    path = str(tmp_path / "m.pt2")
    program.save(path)
    res = edgecc.compile(path, recipe="optimize", output_dir=str(tmp_path / "a"))
    assert res.report["pipeline"]["text"].startswith("fold-batchnorm,constant-fold,fuse")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("pipeline: fuse\ntarget: host\nverify: {atol: 1.0e-5, samples: 2}\n")
    res = edgecc.compile(program, recipe=str(recipe), output_dir=str(tmp_path / "b"))
    assert res.report["verification"]["samples"] == 2
    assert res.report["verification"]["atol"] == 1e-5


def test_compile_without_output_dir_uses_a_temporary_one():
    res = edgecc.compile(model(), "host", example_inputs=X)
    assert os.path.isfile(os.path.join(res.output_dir, "manifest.json"))


def test_non_empty_output_dir_needs_force_and_is_replaced_atomically(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(OutputDirError, match="not empty.*--force"):
        edgecc.compile(model(), "host", example_inputs=X, output_dir=str(out))
    assert (out / "keep.txt").read_text() == "user data"
    edgecc.compile(model(), "host", example_inputs=X, output_dir=str(out), force=True)
    assert sorted(os.listdir(out)) == ["README.txt", "manifest.json", "model.so"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging leftovers


def test_output_dir_holding_the_model_is_refused(tmp_path):
    path = tmp_path / "m.pt2"
    edgecc.trace(model(), X).save(str(path))
    with pytest.raises(OutputDirError, match="contains the input model"):
        edgecc.compile(str(path), "host", output_dir=str(tmp_path), force=True)
    assert path.exists()


class Corrupt(Pass):
    """Scales the output (a pass that breaks the model)."""

    name = "corrupt"

    def run(self, program, options, context):
        out = program.graph.output_node()
        with program.graph.inserting_before(out):
            bad = program.graph.call_function(torch.ops.aten.mul.Tensor, (out.args[0][0], 1.5))
        out.args = ((bad,),)
        return PassResult(program, True)


def test_failed_verification_leaves_nothing_behind(tmp_path, monkeypatch):
    import edgecc.registry

    registry = Registry("pass")
    for _, cls in edgecc.registry.default_pass_registry().items():
        registry.register(cls)
    monkeypatch.setattr(edgecc.registry, "_default_passes", registry)
    edgecc.register_pass(Corrupt)
    out = tmp_path / "out"
    with pytest.raises(VerificationFailedError, match="does not match the original model"):
        edgecc.compile(model(), "host", pipeline="corrupt", example_inputs=X,
                       output_dir=str(out))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(target="hots"), UnknownNameError, "did you mean 'host'"),
    (dict(pipeline="fold-batchnorm{x=1}"), PipelineSyntaxError, "unknown option"),
    (dict(pipeline="fuse", recipe="optimize"), EdgeccError, "either a pipeline or a recipe"),
    (dict(recipe="optimise"), UnknownNameError, "did you mean 'optimize'"),
    (dict(target_options={"num_threads": -1}), EdgeccError, "num_threads must be >= 0"),
    (dict(target_options={"threads": 2}), UnknownNameError, "did you mean 'num_threads'"),
])
def test_bad_arguments_fail_before_any_work(kwargs, error, words, tmp_path):
    kwargs.setdefault("target", "host")
    with pytest.raises(error, match=words):
        edgecc.compile(model(), example_inputs=X, output_dir=str(tmp_path / "o"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_wrong_inputs_to_run_are_rejected(tmp_path):
    res = edgecc.compile(model(), "host", example_inputs=X, output_dir=str(tmp_path / "o"))
    with pytest.raises(InputSpecError, match="shape"):
        res.run(torch.randn(2, 3, 9, 9))
    with pytest.raises(InputSpecError, match="dtype"):
        res.run(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(InputSpecError, match="takes 1 input"):
        res.run(*X, *X)


def test_module_without_example_inputs_is_a_clear_error():
    with pytest.raises(InputSpecError, match="needs example_inputs"):
        edgecc.compile(model(), "host")


def test_check_each_pass_and_dump_ir(tmp_path):
    res = edgecc.compile(model(), "host", example_inputs=X, output_dir=str(tmp_path / "o"),
                         check_each_pass=True, dump_ir=str(tmp_path / "ir"))
    assert all("numeric_check" in p for p in res.report["pipeline"]["passes"])
    assert "00-input.txt" in os.listdir(tmp_path / "ir")


def test_program_quantized_before_compile_is_verified_as_quantized(tmp_path):
    """A Program quantized by edgecc's Quantize pass and then given to compile is verified as
    a quantized one (cosine / SQNR), as if the pass had run inside compile: the host build may
    run its prefill on bfloat16 activations (x86 weight-only kernel on AVX512_BF16 CPUs:
    max-abs ~2e-3 here, past float32 allclose). A float program stays at float tolerance."""
    from edgecc.pass_base import PassContext
    from edgecc.pass_manager import PassManager
    from edgecc.quant import quantized_by_edgecc

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(),
                                torch.nn.Linear(512, 256)).eval()
    calib = [(torch.randn(64, 256),) for _ in range(2)]
    quantized = PassManager("quantize{scheme=w4a16,group_size=32}")(
        edgecc.trace(model, calib[0]), context=PassContext(calibration=calib)).program
    prog = edgecc.trace(model, calib[0])
    assert quantized_by_edgecc(quantized) and not quantized_by_edgecc(prog)
    res = edgecc.compile(quantized, "host", output_dir=str(tmp_path / "q"), progress=False)
    v = res.report["verification"]
    assert v["passed"] and v["reference"].startswith("compressed program"), v
    assert v["cosine"] >= 0.9999, v
    res = edgecc.compile(prog, "host", output_dir=str(tmp_path / "f"), progress=False)
    v = res.report["verification"]
    assert v["passed"] and v["reference"] == "original model, PyTorch eager", v
