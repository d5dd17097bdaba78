"""Property test: every lossless pass preserves outputs on randomly generated graphs.

Hypothesis draws a program from edgecc's supported op set -- convolutions (grouped,
depthwise), batch norm, linear, the fusable activations, residual adds, identities (eval
dropout, x*1, x+0, reshape/permute round trips), repeated subexpressions and constant
subgraphs -- traces it, runs each pass (and the whole default pipeline) and compares
outputs on fresh random inputs.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import edgecc
from edgecc.recipe import load_recipe
from edgecc.pass_manager import PassManager
from edgecc.inputs import fresh_inputs
from edgecc.pass_base import PassContext
from edgecc.passes import BUILTIN_PASSES

LOSSLESS_PASSES = [p for p in BUILTIN_PASSES if p.lossless]
from edgecc.testing import assert_close

OPS = ["conv", "conv_bn", "dwconv_bn", "act", "residual", "identity", "repeat", "const",
       "reshape_chain", "permute_chain", "expand_reshape"]
ACTS = [F.relu, F.relu6, F.gelu, F.silu, F.hardswish, torch.sigmoid,
        lambda x: F.gelu(x, approximate="tanh")]


class Generated(nn.Module):
    def __init__(self, channels, spec, head_bn):
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleDict()
        for i, (op, arg) in enumerate(spec):
            c = channels
            if op == "conv":
                self.layers[str(i)] = nn.Conv2d(c, c, 3, padding=1, bias=arg % 2 == 0)
            elif op in ("conv_bn", "dwconv_bn"):
                groups = c if op == "dwconv_bn" else 1
                bn = nn.BatchNorm2d(c)
                with torch.no_grad():
                    bn.running_mean.uniform_(-1, 1)
                    bn.running_var.uniform_(0.5, 2)
                    bn.weight.uniform_(0.5, 1.5)
                    bn.bias.uniform_(-0.5, 0.5)
                self.layers[str(i)] = nn.Sequential(
                    nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False), bn)
            elif op == "const":
                self.layers[str(i)] = nn.Linear(c, c)  # its weight feeds constant math
        self.head = nn.Linear(channels, 5)
        self.head_bn = nn.BatchNorm1d(5) if head_bn else nn.Identity()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        pool = [x]
        for i, (op, arg) in enumerate(self.spec):
            y = pool[-1]
            if op in ("conv", "conv_bn", "dwconv_bn"):
                y = self.layers[str(i)](y)
            elif op == "act":
                y = ACTS[arg % len(ACTS)](y)
            elif op == "residual":
                y = y + pool[arg % len(pool)]
            elif op == "identity":
                y = [lambda t: self.drop(t), lambda t: t * 1, lambda t: t + 0,
                     lambda t: t.clone(), lambda t: t.contiguous()][arg % 5](y)
            elif op == "repeat":
                y = torch.tanh(y) + torch.tanh(y)
            elif op == "const":
                w = self.layers[str(i)].weight
                s = (w * 0.5 + 1.0).abs().sum(1)  # constant subgraph -> one vector
                y = y * s.view(1, -1, 1, 1)
            elif op == "reshape_chain":
                b, c, h, w = y.shape
                y = y.reshape(b, c * h, w).reshape(b, c, h * w).reshape(b, c, h, w)
            elif op == "expand_reshape":  # grouped-query attention's repeat_kv
                b, c, h, w = y.shape
                y = y[:, :, None].expand(b, c, 2, h, w).reshape(b, c * 2, h, w)
                y = y.reshape(b, c, 2, h, w).mean(2)
            elif op == "permute_chain":
                y = y.permute(0, 2, 3, 1).permute(0, 3, 1, 2)
            pool.append(y)
        return self.head_bn(self.head(pool[-1].mean((2, 3))))


programs = st.builds(
    lambda channels, spec, head_bn, batch, size, seed: (channels, spec, head_bn, batch, size, seed),
    st.sampled_from([2, 4, 6]),
    st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 20)), min_size=1, max_size=8),
    st.booleans(),
    st.integers(2, 3),
    st.sampled_from([4, 6]),
    st.integers(0, 2**16),
)


def build(channels, spec, head_bn, batch, size, seed):
    torch.manual_seed(seed)
    module = Generated(channels, spec, head_bn).eval()
    return edgecc.trace(module, (torch.randn(batch, channels, size, size),))


@settings(max_examples=settings.default.max_examples * 2)
@given(programs)
def test_every_drawn_model_is_valid(case):
    """The generator draws only models torch.export traces and whose outputs are finite
    and moderate, so the property tests below fail only for the passes' sake."""
    program = build(*case)
    for seed in range(2):
        (out,) = program.run(*fresh_inputs(program, seed=seed))
        assert out.shape == (case[3], 5)
        assert torch.isfinite(out).all() and out.abs().max() < 1e4


@given(programs)
def test_every_lossless_pass_preserves_outputs(case):
    program = build(*case)
    # calibration for the passes that read data (smooth-quant)
    context = PassContext(calibration=[fresh_inputs(program, seed=i) for i in range(2)])
    for pass_cls in LOSSLESS_PASSES:
        result = pass_cls()(program.copy(), context=context)
        assert_close(program, result.program, samples=2, atol=1e-4, rtol=1e-4)


@given(programs, st.sampled_from(["w8a8", "w8a16", "dynamic-int8", "fp8"]))
def test_qat_prepare_and_convert_are_exact_on_quantized_programs(case, scheme):
    program = build(*case)
    context = PassContext(calibration=[fresh_inputs(program, seed=i) for i in range(2)])
    quantized = PassManager(f"fold-batchnorm,quantize{{scheme={scheme}}}")(
        program.copy(), context=context).program
    prepared = PassManager("prepare-qat")(quantized.copy()).program
    assert_close(quantized, prepared, samples=2, atol=1e-6, rtol=1e-6)
    converted = PassManager("convert-qat")(prepared.copy()).program
    assert converted.op_counts() == quantized.op_counts()
    assert_close(quantized, converted, samples=2, atol=1e-6, rtol=1e-6)


@given(programs)
def test_default_pipeline_preserves_outputs_and_never_grows_the_graph(case):
    program = build(*case)
    optimized = program.copy()
    PassManager(load_recipe("optimize").pipeline)(optimized)
    assert sum(optimized.op_counts().values()) <= sum(program.op_counts().values())
    assert optimized.op_counts()["aten._native_batch_norm_legit_no_training"] == 0
    assert_close(program, optimized, samples=2, atol=1e-4, rtol=1e-4)


def _layouts(program):
    def layout(v):
        if isinstance(v, torch.Tensor):
            return str(tuple(v.shape)), v.dtype, str(v.stride())
        if isinstance(v, (list, tuple)):
            return tuple(layout(x) for x in v)
        return repr(v)
    return {n.name: layout(n.meta.get("val")) for n in program.graph.nodes}


@given(programs, st.sampled_from(["optimize", "w8a8", "w4a16"]))
def test_incremental_shape_propagation_equals_a_full_one(case, pipeline):
    """After each pass's verify (incremental: ``Program.refresh_metadata`` keeps the ``val``
    of nodes nothing moved under), every node's metadata is what propagating the whole
    graph again gives."""
    program = build(*case)
    text = {"optimize": load_recipe("optimize").pipeline,
            "w8a8": "fold-batchnorm,fuse,quantize{scheme=w8a8}",
            "w4a16": "fold-batchnorm,quantize{scheme=w4a16}"}[pipeline]
    context = PassContext(calibration=[fresh_inputs(program, seed=i) for i in range(2)])
    out = PassManager(text)(program.copy(), context=context).program
    full = out.copy()
    full._propagated = {}  # no record: every node propagated again
    full.refresh_metadata()
    assert _layouts(out) == _layouts(full)
