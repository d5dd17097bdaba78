"""``edgecc.lift``: a static program lifted to an ``ExportedProgram`` without a trace gives the
TVM Relax module that ``Program.export``'s trace gives, and runs the program's numbers."""

import hypothesis.strategies as st
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings

import edgecc
from edgecc.lift import lift
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from tests.models import resnet20, token_inputs, transformer

FP32 = "fold-batchnorm,fuse,dce"
W8A8 = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"
W4A16 = "fold-batchnorm,quantize{scheme=w4a16,group_size=32,algorithm=gptq},fuse,dce"
MASKS = ",attention-mask-to-additive"  # what the host target runs before lowering


def _structural_equal(a, b) -> bool:
    """The two modules' functions, one by one (an integer build's attached external kernel
    modules have no structural equality: their count is compared)."""
    import tvm_ffi

    names = sorted(gv.name_hint for gv in a.functions)
    if names != sorted(gv.name_hint for gv in b.functions):
        return False
    externals = [len((m.attrs or {}).get("external_mods", [])) for m in (a, b)]
    return externals[0] == externals[1] and all(
        tvm_ffi.structural_equal(a[n], b[n], map_free_vars=True) for n in names)


def _program(model, inputs, pipeline, calib=None):
    program = edgecc.trace(model, inputs)
    return PassManager(pipeline)(program, context=PassContext(calibration=calib)).program


def _relax_both_ways(program, monkeypatch, **options):
    """``to_relax`` from the lifted program, then with lifting off (the trace)."""
    from edgecc.targets.tvm.lowering import to_relax

    lifted = to_relax(program, **options)
    with monkeypatch.context() as m:
        m.setattr("edgecc.lift.lift", lambda p: None)
        traced = to_relax(program, **options)
    return lifted, traced


def _cnn():
    torch.manual_seed(0)
    x = (torch.randn(1, 3, 32, 32),)
    return resnet20().eval(), x, [(torch.randn(1, 3, 32, 32),) for _ in range(2)]


def _bert():
    torch.manual_seed(0)
    return transformer("bert"), token_inputs(), [token_inputs() for _ in range(2)]


@pytest.mark.parametrize("make, pipeline, options", [
    (_cnn, FP32, {}),
    (_cnn, W8A8, {"integer_kernels": True}),
    (_bert, FP32 + MASKS, {}),
    (_bert, W8A8 + MASKS, {"integer_kernels": True}),
    (_bert, W4A16 + MASKS, {}),
], ids=["resnet20-fp32", "resnet20-w8a8-int", "bert-fp32", "bert-w8a8-int", "bert-w4a16"])
def test_lifted_program_imports_to_the_traced_relax_module(make, pipeline, options,
                                                          monkeypatch):
    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.lowering import llvm_target

    model, inputs, calib = make()
    program = _program(model, inputs, pipeline, calib)
    assert lift(program) is not None
    if options.get("integer_kernels"):  # the host target's ISA choice (targets/host/lower)
        isa = x86_int8.ISA if x86_int8.supported(llvm_target(None, None)) else "generic"
        options = {**options, "isa": isa}
    lifted, traced = _relax_both_ways(program, monkeypatch, **options)
    assert _structural_equal(lifted, traced)


class _Stack(nn.Module):
    def __init__(self, widths, act, buffer):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.act = act
        self.register_buffer("shift", torch.randn(widths[-1]), persistent=buffer)
        self.scale = torch.randn(widths[-1])  # a plain tensor attribute: a constant

    def forward(self, x):
        for layer in self.layers:
            x = self.act(layer(x))
        return x * self.scale + self.shift, x.sum(-1)


@settings(max_examples=15, deadline=None)
@given(widths=st.lists(st.integers(1, 9), min_size=2, max_size=4),
       act=st.sampled_from([torch.relu, torch.tanh, nn.functional.gelu]),
       buffer=st.booleans(), rows=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_lifted_program_runs_the_programs_numbers(widths, act, buffer, rows, seed):
    torch.manual_seed(seed)
    model = _Stack(widths, act, buffer).eval()
    program = edgecc.trace(model, (torch.randn(rows, widths[0]),))
    ep = lift(program)
    assert ep is not None
    def kinds(e):
        return {s.target: (s.kind.name, s.persistent, s.target in e.state_dict)
                for s in e.graph_signature.input_specs if s.target}

    # parameters, buffers (persistent or not) and constants as torch.export gives them
    assert kinds(ep) == kinds(program.export())
    for _ in range(3):  # fresh inputs
        x = torch.randn(rows, widths[0])
        for got, want in zip(ep.module()(x), program.run(x)):
            assert torch.equal(got, want)


def test_a_program_with_symbolic_dimensions_is_traced_instead():
    batch = torch.export.Dim("batch", min=1, max=8)
    program = edgecc.trace(nn.Linear(4, 3).eval(), (torch.randn(2, 4),),
                           dynamic_shapes=({0: batch},))
    assert lift(program) is None
    ep = program.exported()
    assert ep.range_constraints  # the trace's
    x = torch.randn(5, 4)
    assert torch.equal(ep.module()(x)[0], program.run(x)[0])
