import math

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.passes import DeadCodeElimination, Fuse, FuseOptions
from edgecc.errors import OptionError
from edgecc.pass_base import make_options
from edgecc.testing import assert_close, assert_structural_equal, op_counts

ACTS = {
    "relu": nn.ReLU(), "relu6": nn.ReLU6(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU("tanh"),
    "silu": nn.SiLU(), "hardswish": nn.Hardswish(), "sigmoid": nn.Sigmoid(),
}


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_layer_plus_activation_fuses_into_one_composite(layer, act):
    if layer == "conv":
        m, x = nn.Sequential(nn.Conv2d(3, 4, 3), ACTS[act]), torch.randn(2, 3, 8, 8)
    else:
        m, x = nn.Sequential(nn.Linear(6, 5), ACTS[act]), torch.randn(3, 6)
    program = edgecc.trace(m.eval(), (x,))
    result = Fuse()(program.copy())
    counts = op_counts(result.program)
    assert counts == {f"edgecc.{layer}_act": 1}, counts
    node = next(iter(result.program.nodes("call_function")))
    assert node.args[-1] == act
    assert_close(program, result.program)


def test_composite_keeps_source_provenance():
    program = edgecc.trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), (torch.randn(1, 3, 6, 6),))
    result = Fuse()(program.copy())
    node = result.program.nodes("call_function")[0]
    assert node.meta["edgecc_origin"] == "fuse"
    assert "nn_module_stack" in node.meta


def test_only_selected_activations_fuse_and_bad_names_are_rejected():
    program = edgecc.trace(nn.Sequential(nn.Linear(4, 4), nn.GELU()), (torch.randn(2, 4),))
    result = Fuse()(program.copy(), FuseOptions(activations=("relu",)))
    assert not result.modified
    with pytest.raises(OptionError, match="unknown activation"):
        make_options(Fuse, {"activations": ["relu", "swish"]})


def test_activation_with_two_users_of_the_conv_is_not_fused():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)
            return torch.relu(y) + y

    program = edgecc.trace(Two(), (torch.randn(1, 3, 4, 4),))
    assert not Fuse()(program.copy()).modified


class DecomposedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))
        self.b = nn.Parameter(torch.randn(5))

    def forward(self, x):
        return torch.relu(torch.addmm(self.b, x, self.w.t())), torch.mm(x, self.w.t()) + self.b


def test_addmm_and_mm_plus_bias_become_linear():
    program = edgecc.trace(DecomposedLinear(), (torch.randn(3, 4),))
    result = Fuse()(program.copy())
    DeadCodeElimination()(result.program)
    counts = op_counts(result.program)
    assert result.stats["linear_canonicalized"] == 2
    assert counts["edgecc.linear_act"] == 1 and counts["aten.linear"] == 1
    assert counts["aten.addmm"] == 0 and counts["aten.mm"] == 0
    assert_close(program, result.program)


class HandAttention(nn.Module):
    def __init__(self, masked: bool, scale_style: str):
        super().__init__()
        self.masked = masked
        self.scale_style = scale_style

    def forward(self, q, k, v, mask):
        scores = q @ k.transpose(-2, -1)
        if self.scale_style == "div":
            scores = scores / math.sqrt(q.shape[-1])
        else:
            scores = scores * 0.3
        if self.masked:
            scores = scores + mask
        return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("scale_style", ["div", "mul"])
def test_hand_written_attention_becomes_sdpa(masked, scale_style):
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    mask = torch.randn(2, 1, 6, 6)
    program = edgecc.trace(HandAttention(masked, scale_style), (q, k, v, mask))
    result = Fuse()(program.copy())
    DeadCodeElimination()(result.program)
    counts = op_counts(result.program)
    assert result.stats["attention"] == 1
    assert counts["aten.scaled_dot_product_attention"] == 1
    assert counts["aten._softmax"] == 0
    assert_close(program, result.program, atol=1e-5, rtol=1e-4)


def test_fused_program_is_differentiable_for_qat():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 36, 2), nn.SiLU())
    program = edgecc.trace(m, (torch.randn(2, 3, 8, 8),))
    fused = Fuse()(program.copy()).program
    assert set(fused.op_counts()) >= {"edgecc.conv_act", "edgecc.linear_act"}
    for p in fused.graph_module.parameters():
        p.requires_grad_(True)
    x = torch.randn(2, 3, 8, 8) * 3
    xf = x.clone().requires_grad_()
    fused.graph_module(xf)[0].sum().backward()
    xe = x.clone().requires_grad_()
    m(xe).sum().backward()
    torch.testing.assert_close(xf.grad, xe.grad)
    fused_grads = sorted((tuple(p.shape), p.grad) for p in fused.graph_module.parameters())
    eager_grads = sorted((tuple(p.shape), p.grad) for p in m.parameters())
    for (shape_f, gf), (shape_e, ge) in zip(fused_grads, eager_grads, strict=True):
        assert shape_f == shape_e
        torch.testing.assert_close(gf, ge)


# -- Before / Expected -------------------------------------------------------------------

def test_fuse_conv_relu6_before_expected():
    # Before: hardtanh(conv2d(x, w, b), 0, 6)
    before = edgecc.trace(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6()),
                          (torch.randn(1, 3, 6, 6),))
    after = Fuse()(before.copy()).program
    w, b = torch.empty(4, 3, 3, 3), torch.empty(4)

    def expected(x):
        return torch.ops.edgecc.conv_act(x, w, b, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                         "relu6")

    assert_structural_equal(after, expected)
    assert_close(before, after)
    after.verify()


def test_fuse_decomposed_linear_before_expected():
    # Before: relu(addmm(b, x, wᵀ)), mm(x, wᵀ) + b
    before = edgecc.trace(DecomposedLinear(), (torch.randn(3, 4),))
    after = Fuse()(before.copy()).program
    w, b = torch.empty(5, 4), torch.empty(5)

    def expected(x):
        return (torch.ops.edgecc.linear_act(x, w, b, "relu"),
                torch.nn.functional.linear(x, w, b))

    assert_structural_equal(after, expected)
    assert_close(before, after)
    after.verify()


def test_fuse_attention_before_expected():
    # Before: softmax(q @ kᵀ * 0.3 + mask) @ v
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    before = edgecc.trace(HandAttention(masked=True, scale_style="mul"),
                          (q, k, v, torch.randn(2, 1, 6, 6)))
    after = Fuse()(before.copy()).program

    def expected(q, k, v, mask):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=0.3)

    assert_structural_equal(after, expected)
    assert_close(before, after, atol=1e-5, rtol=1e-4)
    after.verify()


def test_unselected_activation_is_declined_with_its_reason():
    program = edgecc.trace(nn.Sequential(nn.Linear(4, 4), nn.GELU()), (torch.randn(2, 4),))
    result = Fuse()(program.copy(), FuseOptions(activations=("relu",)))
    assert result.stats["rules"]["linear-act"] == {
        "matched": 0, "declined": {"gelu is not among the activations to fuse": 1}}
