"""The rewrite-rule driver (edgecc.rewrite): per-rule stats, decline reasons, the trace, the
never-mutate-before-a-match contract, ``ensures`` built on the rules, and
``edgecc passes --explain``."""

import contextlib
import io
import json

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.errors import EdgeccError, PostconditionError
from edgecc.passes import DeadCodeElimination, FoldBatchNorm, Fuse
from edgecc.rewrite import (
    RewriteRule, RewriteRuleError, apply_rules, aten, ensure_no_match, explain, is_op,
)
from edgecc.testing import assert_close, assert_structural_equal


class ReluChain(nn.Module):
    def forward(self, x):
        return torch.relu(torch.relu(x) * 3.0) + torch.relu(x * -1.0)


def relu_chain():
    return edgecc.trace(ReluChain(), (torch.randn(2, 5),))


def relu_to_clamp(program, node):
    """relu(mul(x, s)) with s > 0 -> mul(clamp(x, 0), s); declined for s <= 0."""
    mul = node.args[0]
    if not is_op(mul, aten.mul):
        return None
    return {"x": mul.args[0], "scale": mul.args[1]}


def positive_scale(m):
    return None if m.scale > 0 else f"scale {m.scale:g} is not positive"


def clamp_then_scale(m):
    graph = m.program.graph
    with graph.inserting_before(m.root):
        clamped = graph.call_function(aten.clamp.default, (m.x, 0.0))
        return graph.call_function(aten.mul.Tensor, (clamped, m.scale))


RELU_OF_SCALE = RewriteRule(name="relu-of-scale", anchors=(aten.relu,), match=relu_to_clamp,
                            check=positive_scale, replacement=clamp_then_scale)


def test_rule_rewrites_declines_with_reason_and_reports_per_rule():
    before = relu_chain()
    program = before.copy()
    report = apply_rules(program, [RELU_OF_SCALE], trace=True)
    assert report.to_json() == {
        "relu-of-scale": {"matched": 1, "declined": {"scale -1 is not positive": 1}}}
    assert [(c.rule, c.op, c.reason) for c in report.trace] == [
        ("relu-of-scale", "aten.relu", None),
        ("relu-of-scale", "aten.relu", "scale -1 is not positive")]
    program.verify()

    def expected(x):
        return torch.clamp(torch.relu(x), 0.0) * 3.0 + torch.relu(x * -1.0)

    assert_structural_equal(program, expected)  # the replaced mul was erased with its relu
    assert_close(before, program)


def test_a_rule_whose_match_mutates_the_graph_is_refused():
    def meddling(program, node):
        with program.graph.inserting_before(node):
            program.graph.call_function(aten.neg.default, (node.args[0],))
        return {}

    rule = RewriteRule(name="meddling", anchors=(aten.relu,), match=meddling,
                       replacement=lambda m: None)
    with pytest.raises(RewriteRuleError, match="rule 'meddling' changed the graph"):
        apply_rules(relu_chain(), [rule])


def test_a_check_that_rewires_the_root_is_refused():
    def rewiring(m):
        m.root.args = (m.x,)
        return None

    rule = RewriteRule(name="rewiring", anchors=(aten.relu,), match=relu_to_clamp,
                       check=rewiring, replacement=lambda m: None)
    with pytest.raises(RewriteRuleError, match="match and check must only look"):
        apply_rules(relu_chain(), [rule])


def test_rule_names_must_be_unique():
    with pytest.raises(ValueError, match="rule names must be unique"):
        apply_rules(relu_chain(), [RELU_OF_SCALE, RELU_OF_SCALE])


def test_ensure_no_match_names_the_rule_and_node():
    program = relu_chain()
    with pytest.raises(PostconditionError, match="rule 'relu-of-scale' at node relu"):
        ensure_no_match("demo", program, [RELU_OF_SCALE])
    apply_rules(program, [RELU_OF_SCALE])
    ensure_no_match("demo", program, [RELU_OF_SCALE])  # only the declined candidate is left


def test_fuse_stats_keep_their_keys_and_add_per_rule_counts():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2),
                      nn.GELU())
    result = Fuse()(edgecc.trace(m, (torch.randn(1, 3, 8, 8),)))
    stats = result.stats
    assert {k: stats[k] for k in ("linear_canonicalized", "conv_act", "linear_act",
                                  "attention")} == {"linear_canonicalized": 0, "conv_act": 1,
                                                    "linear_act": 1, "attention": 0}
    assert stats["rules"]["conv-act"] == {"matched": 1, "declined": {}}
    assert set(stats["rules"]) == {"linear", "conv-act", "linear-act", "attention"}


def test_explain_traces_declines_and_refuses_a_pass_without_rules():
    data = explain(FoldBatchNorm(), relu_chain())
    assert data == {"pass": "fold-batchnorm",
                    "rules": {"conv-bn": {"matched": 0, "declined": {}}}, "declined": []}
    with pytest.raises(EdgeccError, match="pass 'dce' is not rule-based"):
        explain(DeadCodeElimination(), relu_chain())


# -- the CLI ------------------------------------------------------------------------------

class SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn2(self.conv2(self.bn(y) + y))


@pytest.fixture(scope="module")
def shared_conv_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("explain") / "shared.pt2")
    torch.export.save(torch.export.export(SharedConv().eval(), (torch.randn(1, 3, 8, 8),)), path)
    return path


def cli(*args):
    from edgecc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_cli_explain_prints_each_rule_and_each_declined_node(shared_conv_file):
    code, out, _ = cli("passes", "--explain", "fold-batchnorm", shared_conv_file)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"fold-batchnorm on {shared_conv_file}"
    assert lines[1] == "conv-bn: 1 matched, 1 declined"
    assert lines[2].endswith("(aten._native_batch_norm_legit_no_training): "
                             "convolution has other users")
    code, out, _ = cli("passes", "--explain", "fold-batchnorm", shared_conv_file, "--json")
    data = json.loads(out)
    assert data["rules"] == {"conv-bn": {"matched": 1,
                                         "declined": {"convolution has other users": 1}}}
    assert [(d["rule"], d["reason"]) for d in data["declined"]] == [
        ("conv-bn", "convolution has other users")]


def test_cli_explain_takes_options(shared_conv_file):
    code, out, _ = cli("passes", "--explain", "fuse{attention=false}", shared_conv_file, "--json")
    assert code == 0 and set(json.loads(out)["rules"]) == {"linear", "conv-act", "linear-act"}


@pytest.mark.parametrize("name, message", [
    ("fold-batchnrm", "unknown pass 'fold-batchnrm': did you mean 'fold-batchnorm'?"),
    ("dce", "pass 'dce' is not rule-based"),
    ("fuse,dce", "--explain takes one pass"),
])
def test_cli_explain_errors_are_one_line_exit_2(shared_conv_file, name, message):
    code, out, err = cli("passes", "--explain", name, shared_conv_file)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err

