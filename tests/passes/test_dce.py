import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.errors import PostconditionError
from edgecc.pass_base import NoOptions
from edgecc.passes import DeadCodeElimination
from edgecc.testing import assert_close, assert_structural_equal


class Dead(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        _ = self.unused(x) * 3  # dead
        return self.used(x)


def test_dce_removes_dead_ops_and_unused_parameters():
    program = edgecc.trace(Dead(), (torch.randn(2, 4),))
    before = program.copy()
    # torch.export already drops dead ops; make some: a dead mul and an orphan weight
    graph = program.graph
    x = program.nodes("placeholder")[0]
    with graph.inserting_after(x):
        graph.call_function(torch.ops.aten.mul.Tensor, (x, 2.0))
    program.graph_module.register_parameter("orphan", nn.Parameter(torch.randn(100)))
    program.graph_module.recompile()
    result = DeadCodeElimination()(program)
    assert result.stats["removed_nodes"] >= 1
    assert result.stats["removed_bytes"] >= 400
    names = {n for n, _ in result.program.graph_module.named_parameters()}
    assert "orphan" not in names and not any("unused" in n for n in names)
    assert "mul" not in str(result.program)
    assert_close(before, result.program)


def test_dce_keeps_side_effects():
    program = edgecc.trace(nn.Linear(3, 3), (torch.randn(2, 3),))
    graph = program.graph
    x = program.nodes("placeholder")[0]
    with graph.inserting_after(x):
        graph.call_function(torch.ops.aten._assert_scalar.default, (True, "kept"))
    graph.lint()
    result = DeadCodeElimination()(program)
    assert "_assert_scalar" in str(result.program)


def test_dce_before_expected():
    # Before: linear(x, w, b) plus a dead mul(x, 2.0) and a weight nothing reads
    before = edgecc.trace(nn.Linear(4, 3), (torch.randn(2, 4),))
    program = before.copy()
    x = program.nodes("placeholder")[0]
    with program.graph.inserting_after(x):
        program.graph.call_function(torch.ops.aten.mul.Tensor, (x, 2.0))
    program.graph_module.register_parameter("orphan", nn.Parameter(torch.randn(10)))
    program.graph_module.recompile()
    after = DeadCodeElimination()(program).program
    w, b = torch.empty(3, 4), torch.empty(3)

    def expected(x):
        return torch.nn.functional.linear(x, w, b)

    assert_structural_equal(after, expected)
    assert sorted(n for n, _ in after.graph_module.named_parameters()) == ["bias", "weight"]
    assert_close(before, after)
    after.verify()


def test_dce_ensures_rejects_a_dead_node_left_behind():
    program = edgecc.trace(nn.Linear(4, 3), (torch.randn(2, 4),))
    x = program.nodes("placeholder")[0]
    with program.graph.inserting_after(x):
        program.graph.call_function(torch.ops.aten.relu.default, (x,))
    with pytest.raises(PostconditionError, match="left node relu"):
        DeadCodeElimination().ensures(program, NoOptions())
