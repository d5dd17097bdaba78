import os
import subprocess
import sys
import json
import warnings

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.errors import (
    DuplicateNameError,
    InputSpecError,
    NumericCheckError,
    PassFailedError,
    PipelineSyntaxError,
    PostconditionError,
    PreconditionError,
    ProgramVerificationError,
    UnknownNameError,
)
from edgecc.instruments import IRDumpInstrument, NumericCheckInstrument, TimingInstrument
from edgecc.pass_base import Pass, PassResult, function_pass
from edgecc.pass_manager import PassManager
from edgecc.pipeline_text import FixpointStep, step
from edgecc.passes import DeadCodeElimination, EliminateIdentity, FoldBatchNorm
from edgecc.registry import Registry, default_pass_registry, register_pass
from edgecc.inputs import fresh_inputs

aten = torch.ops.aten
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def program():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout()).eval()
    return edgecc.trace(m, (torch.randn(2, 3, 8, 8),))


class BreakRelu(Pass):
    """Turns relu into sigmoid: a 'lossless' pass that is not."""

    name = "break-relu"

    def run(self, program, options, context):
        for n in program.nodes("call_function"):
            if n.target == aten.relu.default:
                n.target = aten.sigmoid.default
        return PassResult(program, True)


class NeedsNoBatchNorm(Pass):
    name = "needs-no-bn"

    def requires(self, program, options):
        if program.op_counts()["aten._native_batch_norm_legit_no_training"]:
            raise PreconditionError("run fold-batchnorm first")

    def run(self, program, options, context):
        return PassResult(program, False)


class ClaimsButCopies(Pass):
    name = "claims-in-place"

    def run(self, program, options, context):
        return PassResult(program.copy(), False)


class EnsuresNothingLeft(Pass):
    name = "ensures-empty"

    def run(self, program, options, context):
        return PassResult(program, False)

    def ensures(self, program, options):
        raise PostconditionError("something is left")


class ScaleConvWeight(Pass):
    """Doubles the convolution's weight while claiming to be lossless: a corrupting pass."""

    name = "scale-conv-weight"

    def run(self, program, options, context):
        conv = next(n for n in program.nodes("call_function")
                    if n.target == aten.convolution.default)
        weight = conv.args[1]
        program.set_tensor(weight, program.tensor(weight) * 2)
        return PassResult(program, True)


class DanglingWeight(Pass):
    """Reads a weight that does not exist: the IR verifier rejects the result."""

    name = "dangling-weight"

    def run(self, program, options, context):
        with program.graph.inserting_before(program.graph.output_node()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fx warns that the weight does not exist
            program.graph.get_attr("no_such_weight")
        return PassResult(program, True)


class RequiresCrashes(Pass):
    name = "requires-crashes"

    def requires(self, program, options):
        raise KeyError("conv")

    def run(self, program, options, context):
        return PassResult(program, False)


class EnsuresCrashes(Pass):
    name = "ensures-crashes"

    def run(self, program, options, context):
        return PassResult(program, False)

    def ensures(self, program, options):
        raise ValueError("no conv left")


class NeedsCalibration(Pass):
    name = "needs-calibration"

    def validate(self, program, options, context):
        if context.calibration is None:
            raise InputSpecError("needs-calibration needs calibration data")

    def run(self, program, options, context):
        return PassResult(program, False)


def test_registry_rejects_duplicates_and_suggests_names():
    r = Registry("pass")
    r.register(FoldBatchNorm)
    with pytest.raises(DuplicateNameError, match="registered twice"):
        r.register(FoldBatchNorm)
    with pytest.raises(UnknownNameError, match="did you mean 'fold-batchnorm'"):
        r.get("fold-batchnrom")


def test_register_pass_in_a_private_registry_and_run_from_text():
    r = Registry("pass")
    register_pass(EliminateIdentity, registry=r)
    register_pass(DeadCodeElimination, registry=r)
    p = program()
    result = PassManager("eliminate-identity,dce", registry=r)(p)
    assert result.modified
    assert "aten.clone" not in p.op_counts()


def test_requires_and_ensures_raise_typed_errors_naming_the_pass():
    with pytest.raises(PreconditionError, match="fold-batchnorm first.*needs-no-bn"):
        PassManager([step(EliminateIdentity), step(NeedsNoBatchNorm)])(program())
    PassManager([step(FoldBatchNorm), step(NeedsNoBatchNorm)])(program())
    with pytest.raises(PostconditionError, match="something is left"):
        EnsuresNothingLeft()(program())


def test_requires_and_ensures_failures_of_any_kind_are_typed():
    with pytest.raises(PreconditionError, match="'requires-crashes': precondition check "
                                                "failed: KeyError") as info:
        RequiresCrashes()(program())
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(PostconditionError, match="'ensures-crashes': postcondition check "
                                                 "failed: ValueError: no conv left") as info:
        EnsuresCrashes()(program())
    assert isinstance(info.value.__cause__, ValueError)


def test_validate_runs_on_a_direct_call_and_before_any_pass_of_a_pipeline():
    with pytest.raises(InputSpecError, match="needs calibration data"):
        NeedsCalibration()(program())
    p = program()
    with pytest.raises(InputSpecError, match=r"needs calibration data \(in pass "
                                             r"'needs-calibration', checked before running "
                                             r"any pass\)"):
        PassManager([step(FoldBatchNorm), step(NeedsCalibration)])(p)
    assert p.op_counts()["aten._native_batch_norm_legit_no_training"] == 1  # nothing ran


def test_in_place_claim_is_checked():
    with pytest.raises(PostconditionError, match="in place"):
        ClaimsButCopies()(program())


def test_provenance_records_the_pass_that_made_each_node():
    p = program()
    FoldBatchNorm()(p)
    made = {n.name: n.meta["edgecc_origin"] for n in p.graph.nodes}
    assert any(v == "fold-batchnorm" for v in made.values())
    assert made[p.nodes("placeholder")[0].name] == "frontend"


def test_pass_errors_name_the_pass_and_those_already_run():
    @function_pass("explode")
    def explode(program, options, context):
        raise RuntimeError("boom")

    with pytest.raises(PassFailedError, match=r"pass 'explode' failed: RuntimeError: boom.*"
                                              r"already run: fold-batchnorm"):
        PassManager([step(FoldBatchNorm), step(explode)])(program())


def test_fixpoint_repeats_until_nothing_changes_and_nesting_works():
    p = program()
    inner = PassManager([FixpointStep((step(EliminateIdentity), step(DeadCodeElimination)))])
    result = PassManager([step(FoldBatchNorm), inner])(p)
    names = [r["pass"] for r in result.stats["passes"]]
    assert names[0] == "fold-batchnorm"
    assert "fixpoint[1]/dce" in names  # second round ran and changed nothing
    assert not result.stats["passes"][-1]["modified"]
    assert "fixpoint[2]/dce" not in names


def test_pass_errors_keep_their_type_and_attributes():
    @function_pass("unknown-layer")
    def unknown_layer(program, options, context):
        raise UnknownNameError("layer", "conv1", ["conv0", "fc"])

    @function_pass("bad-text")
    def bad_text(program, options, context):
        raise PipelineSyntaxError("dce,,fuse", 4, "empty pass name")

    with pytest.raises(UnknownNameError) as info:
        PassManager([step(FoldBatchNorm), step(unknown_layer)])(program())
    exc = info.value
    assert exc.suggestion == "conv0" and exc.name == "conv1"
    assert exc.context == ["(in pass 'unknown-layer'; passes already run: fold-batchnorm)"]
    assert str(exc) == ("unknown layer 'conv1': did you mean 'conv0'? "
                        "(in pass 'unknown-layer'; passes already run: fold-batchnorm)")

    inner = PassManager([step(EliminateIdentity), step(bad_text)])
    with pytest.raises(PipelineSyntaxError) as info:
        PassManager([step(FoldBatchNorm), inner])(program())
    exc = info.value
    assert exc.position == 4 and exc.text == "dce,,fuse"
    assert str(exc).count("(in pass") == 1  # context added once, by the run that ran it
    assert str(exc).endswith("(in pass 'bad-text'; passes already run: fold-batchnorm, "
                             "eliminate-identity)")


def test_cli_error_is_one_line_naming_the_pass_and_those_already_run(tmp_path, capsys):
    import numpy as np

    from edgecc.cli import main

    model = tmp_path / "m.pt2"
    program().save(str(model))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.randn(2, 3, 8, 8).astype("float32"))
    code = main(["compile", str(model), "-t", "host", "-o", str(tmp_path / "out"),
                 "-p", "fold-batchnorm,quantize{scheme=w8a8,exclude=decoder.*}",
                 "--calib", str(calib)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("edgecc: error: exclude pattern 'decoder.*' matches no quantizable")
    assert err.rstrip().endswith("(in pass 'quantize'; passes already run: fold-batchnorm)")


def test_nested_manager_runs_with_the_outer_instruments(tmp_path):
    p = program()
    check = NumericCheckInstrument([fresh_inputs(p, seed=1)])
    inner = PassManager([step(EliminateIdentity), step(ScaleConvWeight)])
    outer = PassManager([step(FoldBatchNorm), inner, step(DeadCodeElimination)],
                        instruments=[check])
    with pytest.raises(NumericCheckError,
                       match="pass 'scale-conv-weight' changed the model's outputs"):
        outer(p)

    timing, inner_timing = TimingInstrument(), TimingInstrument()
    dump = IRDumpInstrument(str(tmp_path), after={"eliminate-identity"})
    inner = PassManager([step(EliminateIdentity)], instruments=[inner_timing, timing])
    PassManager([step(FoldBatchNorm), inner, step(DeadCodeElimination)],
                instruments=[timing, dump])(program())
    assert [n for n, _ in timing.timings] == ["fold-batchnorm", "eliminate-identity", "dce"]
    assert [n for n, _ in inner_timing.timings] == ["eliminate-identity"]
    assert sorted(os.listdir(tmp_path)) == ["00-input.txt", "02-eliminate-identity.txt"]


def test_nested_manager_runs_with_the_outer_verification_setting():
    inner = PassManager([step(DanglingWeight)], verify_each=True)
    PassManager([step(FoldBatchNorm), inner], verify_each=False)(program())
    inner = PassManager([step(DanglingWeight)], verify_each=False)
    with pytest.raises(ProgramVerificationError, match="no_such_weight.*in pass "
                                                       "'dangling-weight'"):
        PassManager([step(FoldBatchNorm), inner], verify_each=True)(program())


def test_fixpoint_respects_max_iterations():
    @function_pass("always-modifies")
    def always(program, options, context):
        return PassResult(program, True)

    result = PassManager([FixpointStep((step(always),), max_iterations=3)])(program())
    assert len(result.stats["passes"]) == 3


def test_numeric_check_names_the_pass_that_broke_the_model():
    p = program()
    check = NumericCheckInstrument([fresh_inputs(p, seed=1)])
    pm = PassManager([step(FoldBatchNorm), step(BreakRelu), step(DeadCodeElimination)],
                     instruments=[check])
    with pytest.raises(NumericCheckError, match="pass 'break-relu' changed the model's outputs"):
        pm(p)


def test_timing_and_ir_dump_instruments(tmp_path):
    timing = TimingInstrument()
    dump = IRDumpInstrument(str(tmp_path), after={"fold-batchnorm"})
    PassManager("fold-batchnorm,eliminate-identity,dce", instruments=[timing, dump])(program())
    assert [n for n, _ in timing.timings] == ["fold-batchnorm", "eliminate-identity", "dce"]
    assert "total" in timing.table()
    files = sorted(os.listdir(tmp_path))
    assert files == ["00-input.txt", "01-fold-batchnorm.txt"]
    assert "_native_batch_norm" in (tmp_path / "00-input.txt").read_text()
    assert "_native_batch_norm" not in (tmp_path / "01-fold-batchnorm.txt").read_text()


def test_options_type_is_checked():
    from edgecc.errors import OptionError

    with pytest.raises(OptionError, match="takes NoOptions"):
        FoldBatchNorm()(program(), options=object())


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), os.path.join(FIXTURES, "edgecc_demo_plugin")],
        check=True,
    )
    return str(target)


def _edgecc(args, site, cwd=None):
    env = dict(os.environ, PYTHONPATH=site)
    return subprocess.run([sys.executable, "-m", "edgecc.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True)


def test_plugin_pass_and_target_are_discovered_through_entry_points(plugin_site, tmp_path):
    passes = json.loads(_edgecc(["passes", "--json"], plugin_site).stdout)
    demo = next(p for p in passes if p["name"] == "negate-twice")
    assert demo["origin"] == "plugin edgecc-demo-plugin"
    assert demo["options"] == [{"name": "times", "type": "int", "default": 1}]
    targets = json.loads(_edgecc(["targets", "--json"], plugin_site).stdout)
    assert {t["name"] for t in targets} >= {"host", "eager"}

    model = tmp_path / "m.pt2"
    program().save(str(model))
    out = _edgecc(["compile", str(model), "-t", "eager", "-p", "negate-twice{times=2},dce",
                   "-o", str(tmp_path / "out"), "--json"], plugin_site)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["pipeline"]["passes"][0]["stats"] == {"inserted": 4}
    assert report["verification"]["passed"]


def test_plugins_are_not_visible_without_the_package():
    assert "negate-twice" not in default_pass_registry()
