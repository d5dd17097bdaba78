"""Structured pruning: the dependency analysis removes exactly what a dense model with the
pruned units' sink columns zeroed would ignore; parameters and MACs really drop; programs stay
valid and run on the host target; heads of BERT and grouped-query Llama are removed whole."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings

import edgecc
from edgecc.errors import InputSpecError, OptionError, PipelineSyntaxError
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from edgecc.passes.prune import find_groups
from edgecc.passes.prune.dependency import Unsupported, remove_units
from edgecc.passes.prune.importance import group_scores
from edgecc.passes.prune.structured import plan_removal
from edgecc.program import concrete_shape
from tests import cnn_zoo
from tests.models import mobilenet_v2, resnet20, token_inputs, transformer


def prune_and_zero(program, ratio=0.5, importance="l2"):
    """(pruned program, dense copy with the removed units' sink columns zeroed, groups)."""
    dense = program.copy()
    groups, skipped, _ = find_groups(program)
    scores, _ = group_scores(program, groups, importance, None)
    plan = plan_removal(groups, scores, ratio, "layer", 1)
    tensors = dict(dense.graph_module.named_parameters()) | dict(
        dense.graph_module.named_buffers())
    for g, units in zip(groups, plan):
        assert g.exact
        for target, axis, idx in g.sink_slices(units):
            tensors[target].data.index_fill_(axis, torch.tensor(idx, dtype=torch.long), 0.0)
    remove_units(program, list(zip(groups, plan)))
    program.verify()
    return program, dense, groups, skipped


def assert_same(a, b, inputs, atol=1e-5):
    for x, y in zip(a.run(*inputs), b.run(*inputs)):
        torch.testing.assert_close(x, y, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", *cnn_zoo.ZOO])
def test_pruned_equals_dense_with_sink_columns_zeroed(name):
    model = {"resnet20": resnet20, "mobilenet_v2": mobilenet_v2}.get(name) or (
        lambda: cnn_zoo.make(name))
    x = torch.randn(2, 3, 32, 32)
    prog = edgecc.trace(model().eval(), (x,))
    original = prog.copy()
    pruned, dense, groups, skipped = prune_and_zero(prog)
    assert groups, skipped
    fresh = (torch.randn(2, 3, 32, 32),)
    assert_same(pruned, dense, fresh)
    # and pruning really changed the function (the test can fail)
    assert not torch.allclose(pruned.run(*fresh)[0], original.run(*fresh)[0], atol=1e-5)


# -- generated graphs ------------------------------------------------------------------------
class Generated(nn.Module):
    """A random CNN drawn from residual / concat / split / depthwise / grouped / SE blocks,
    flattened into a linear."""

    def __init__(self, blocks: list[str], width: int):
        super().__init__()
        self.blocks = blocks
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.mods = nn.ModuleList()
        c = width
        for b in blocks:
            if b == "residual":
                self.mods.append(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c),
                                               nn.ReLU(), nn.Conv2d(c, c, 3, padding=1)))
            elif b == "concat":
                self.mods.append(nn.ModuleList([nn.Conv2d(c, c, 1), nn.Conv2d(c, c // 2, 3,
                                                                              padding=1)]))
                c = c + c // 2
            elif b == "split":  # chunk(2) of an odd count: the first chunk is the larger
                self.mods.append(nn.Conv2d((c + 1) // 2, (c + 1) // 2, 1))
            elif b == "depthwise":
                self.mods.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.BatchNorm2d(2 * c),
                                               nn.ReLU6(), nn.Conv2d(2 * c, 2 * c, 3, padding=1,
                                                                     groups=2 * c),
                                               nn.ReLU(), nn.Conv2d(2 * c, c, 1)))
            elif b == "grouped":
                g = 2 if c % 2 == 0 else 1
                self.mods.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.ReLU(),
                                               nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=g),
                                               nn.ReLU(), nn.Conv2d(2 * c, c, 1)))
            elif b == "se":
                self.mods.append(nn.Sequential(nn.Conv2d(c, 4, 1), nn.ReLU(), nn.Conv2d(4, c, 1),
                                               nn.Sigmoid()))
        self.fc1 = nn.Linear(c * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for b, m in zip(self.blocks, self.mods):
            if b == "residual":
                x = F.relu(x + m(x))
            elif b == "concat":
                x = torch.cat([m[0](x), m[1](x)], 1)
            elif b == "split":
                a, r = x.chunk(2, 1)
                x = torch.cat([m(a), r], 1)
            elif b in ("depthwise", "grouped"):
                x = x + m(x)
            elif b == "se":
                x = x * m(F.adaptive_avg_pool2d(x, 1))
        x = F.adaptive_avg_pool2d(x, 4)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


BLOCKS = ["residual", "concat", "split", "depthwise", "se", "grouped"]
WIDTHS = [4, 8]
block_lists = st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4)


def test_every_block_list_builds_a_valid_model():
    """The generator's whole space runs. A block's shapes depend only on the channel count
    it receives, and ``Generated([block], c)`` is that block at ``c`` channels, so checking
    every block at every channel count reachable in up to three blocks covers every list
    of up to four (shapes checked on the meta device). A draw that cannot run is a
    generator bug that fails the property test at random (a 9-channel split once fed 5
    channels to a 4-channel conv)."""
    reachable, frontier = set(WIDTHS), set(WIDTHS)
    for depth in range(4):
        after = set()
        for c in frontier:
            for block in BLOCKS:
                with torch.device("meta"):
                    model = Generated([block], c)
                    assert model(torch.empty(2, 3, 8, 8)).shape == (2, 5), (block, c)
                after.add(model.fc1.in_features // 16)  # channels out of the block
        frontier = after - reachable if depth < 3 else set()
        reachable |= after


@settings(max_examples=settings.default.max_examples * 3)
@given(blocks=block_lists, width=st.sampled_from(WIDTHS))
def test_drawn_models_trace_with_torch_export(blocks, width):
    torch.export.export(Generated(blocks, width).eval(), (torch.randn(2, 3, 8, 8),))


@given(blocks=block_lists, width=st.sampled_from(WIDTHS),
       ratio=st.sampled_from([0.25, 0.5, 0.75]), seed=st.integers(0, 1000))
def test_generated_graphs_prune_exactly(blocks, width, ratio, seed):
    torch.manual_seed(seed)
    model = Generated(blocks, width).eval()
    x = torch.randn(2, 3, 8, 8)
    prog = edgecc.trace(model, (x,))
    pruned, dense, groups, skipped = prune_and_zero(prog, ratio)
    assert groups  # at least the stem and fc1 neurons
    assert_same(pruned, dense, (torch.randn(2, 3, 8, 8),))


# -- acceptance: 50% channels, >= 45% fewer parameters and MACs, runs on the host -----------
@pytest.mark.parametrize("make", [resnet20, mobilenet_v2], ids=["resnet20", "mobilenet_v2"])
def test_half_channels_on_host(make, tmp_path):
    x = torch.randn(2, 3, 32, 32)
    calib = [(torch.randn(2, 3, 32, 32),) for _ in range(2)]
    res = edgecc.compile(make(), example_inputs=(x,), target="host", calibration=calib,
                         pipeline="prune-structured{ratio=0.5,importance=taylor},"
                                  "fold-batchnorm,dce", output_dir=str(tmp_path / "out"))
    stats = res.report["pipeline"]["passes"][0]["stats"]
    print(f"{make.__name__}: parameters {stats['parameters']} "
          f"(-{stats['parameter_reduction']:.1%}), MACs {stats['macs']} "
          f"(-{stats['mac_reduction']:.1%})")
    assert stats["parameter_reduction"] >= 0.45 and stats["mac_reduction"] >= 0.45
    assert res.report["verification"]["passed"]  # the host artifact equals the pruned program
    res.program.verify()
    assert list(stats["skipped"].values()) == ["the dimension reaches the model output "
                                               "(linear)"]
    torch.testing.assert_close(res.run(x), res.program.run(x)[0], atol=1e-4, rtol=1e-4)


def test_round_to_and_global_scope():
    prog = edgecc.trace(resnet20(), (torch.randn(1, 3, 32, 32),))
    res = PassManager("prune-structured{ratio=0.4,round_to=8,scope=global}")(prog)
    groups = res.stats["passes"][0]["stats"]["groups"]
    assert all(g["kept"] % 8 == 0 for g in groups)
    assert len({g["kept"] / g["units"] for g in groups}) > 1  # global: ratios differ per group


# -- attention heads -------------------------------------------------------------------------
@pytest.mark.parametrize("name,heads,kv_heads", [("bert", 4, 4), ("llama", 4, 2)])
def test_half_the_heads(name, heads, kv_heads):
    prog = edgecc.trace(transformer(name), token_inputs())
    original = prog.copy()
    res = PassManager("prune-heads{ratio=0.5}")(prog)
    stats = res.stats["passes"][0]["stats"]
    assert [g["kind"] for g in stats["groups"]] == ["heads", "heads"]
    weights = dict(res.program.graph_module.named_parameters())
    head_dim = 16
    for node in res.program.nodes("call_function"):
        if node.target is torch.ops.aten.scaled_dot_product_attention.default:
            q, k, v = (concrete_shape(a.meta["val"].shape) for a in node.args[:3])
            assert q[1] == k[1] == v[1] == heads // 2  # (keys / values repeated for GQA)
    for layer in range(2):
        rows = {p.rsplit(".", 2)[-2]: w.shape for p, w in weights.items()
                if f"layers.{layer}." in p or f"layer.{layer}." in p}
        q_proj, k_proj, o_proj = (("query", "key", "dense") if name == "bert"
                                  else ("q_proj", "k_proj", "o_proj"))
        assert rows[q_proj][0] == heads // 2 * head_dim
        assert rows[k_proj][0] == kv_heads // 2 * head_dim  # whole KV groups removed
        if name == "llama":
            assert rows[o_proj][1] == heads // 2 * head_dim
    res.program.verify()
    ids, mask = token_inputs()
    out = res.program.run(ids, mask)[0]
    assert out.shape == original.run(ids, mask)[0].shape  # hidden size untouched
    # equal to the dense model with the removed heads' output-projection columns zeroed
    pruned, dense, groups, _ = prune_and_zero(original.copy(), 0.5)
    heads_only = [g for g in groups if g.kind == "heads"]
    assert len(heads_only) == 2
    assert_same(pruned, dense, (ids, mask), atol=1e-4)


def test_grouped_convolution_loses_whole_groups():
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.g = nn.Conv2d(8, 12, 3, padding=1, groups=4)
            self.b = nn.Conv2d(12, 4, 1)

        def forward(self, x):
            return self.b(F.relu(self.g(F.relu(self.a(x))))).mean((2, 3))

    x = torch.randn(2, 3, 8, 8)
    prog = edgecc.trace(Grouped(), (x,))
    groups, skipped, _ = find_groups(prog)
    assert [(g.units, g.inner) for g in groups] == [(4, 2)]  # 4 groups of 2 input channels
    pruned, dense, _, _ = prune_and_zero(prog, 0.5)
    conv = next(n for n in pruned.nodes("call_function")
                if n.target is torch.ops.aten.convolution.default and n.args[8] != 1)
    assert conv.args[8] == 2 and pruned.tensor(conv.args[1]).shape == (6, 2, 3, 3)
    assert_same(pruned, dense, (torch.randn(2, 3, 8, 8),))


def test_unfollowable_groups_are_skipped_with_reason():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.t = nn.ConvTranspose2d(8, 8, 2, stride=2)
            self.c = nn.Conv2d(8, 8, 1)
            self.d = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.c(self.t(self.a(x))).softmax(1)
            return self.d(y).mean((2, 3))

    prog = edgecc.trace(Odd(), (torch.randn(1, 3, 8, 8),))
    groups, skipped, _ = find_groups(prog)
    assert skipped["a"] == skipped["t"] == "transposed convolution"
    assert "normalizes over the pruned axis" in skipped["c"]
    assert "model output" in skipped["d"]
    assert not groups


def test_bad_options():
    prog = edgecc.trace(resnet20(), (torch.randn(1, 3, 32, 32),))
    for text in ["prune-structured{ratio=1.0}", "prune-structured{ratio=-0.1}"]:
        with pytest.raises(PipelineSyntaxError, match=r"ratio must be in \[0, 1\)"):
            PassManager(text)
    with pytest.raises(OptionError, match=r"include pattern 'nope\.\*' matches no prunable"):
        PassManager("prune-structured{include=[nope.*]}")(prog.copy())
    with pytest.raises(InputSpecError, match="taylor importance needs calibration data.*"
                                             "checked before running any pass"):
        PassManager("prune-structured{importance=taylor}")(prog.copy(), context=PassContext())


def test_no_group_is_ever_emptied():
    prog = edgecc.trace(resnet20(), (torch.randn(1, 3, 32, 32),))
    groups, _, _ = find_groups(prog)
    scores, _ = group_scores(prog, groups, "l1", None)
    plan = plan_removal(groups, scores, 0.999, "layer", 1)
    assert all(g.units - len(p) >= 1 for g, p in zip(groups, plan))
    with pytest.raises(Unsupported, match="would leave .* empty"):
        remove_units(prog, [(groups[0], list(range(groups[0].units)))])
