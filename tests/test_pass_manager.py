import os
import subprocess
import sys
import json

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.errors import (
    DuplicateNameError,
    NumericCheckError,
    PassFailedError,
    PostconditionError,
    PreconditionError,
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
