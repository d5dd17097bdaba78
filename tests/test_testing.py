"""edgecc.testing.assert_structural_equal: passes on the same dataflow whatever the names and
order, and fails -- with a diff naming the difference -- when it should."""

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.testing import assert_structural_equal, structural_listing, trace_function


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, y):
        return torch.relu(self.fc(x)) + y.sum(-1, keepdim=True)


def block():
    torch.manual_seed(0)
    return edgecc.trace(Block(), (torch.randn(2, 4), torch.randn(2, 3)))


W, B = torch.empty(3, 4), torch.empty(3)


def test_same_structure_passes_and_ignores_names_and_order():
    program = block()

    def expected(x, y):
        return torch.relu(torch.nn.functional.linear(x, W, B)) + y.sum(-1, keepdim=True)

    assert_structural_equal(program, expected)
    # rename every node and move the y.sum before the linear: still the same structure
    shuffled = program.copy()
    for i, node in enumerate(shuffled.nodes("call_function")):
        node.name = f"renamed_{i}"
    total = next(n for n in shuffled.nodes("call_function") if "sum" in str(n.target))
    first = shuffled.nodes("call_function")[0]
    first.prepend(total)
    shuffled.graph.lint()
    assert_structural_equal(shuffled, expected)
    assert_structural_equal(shuffled, program)  # a Program works as expected too


def test_a_different_operator_fails_with_a_diff():
    def expected(x, y):
        return torch.sigmoid(torch.nn.functional.linear(x, W, B)) + y.sum(-1, keepdim=True)

    with pytest.raises(AssertionError) as info:
        assert_structural_equal(block(), expected)
    message = str(info.value)
    assert "- expected, + actual" in message
    assert "-%3 = aten.sigmoid.default(%2) -> float32" in message
    assert "+%3 = aten.relu.default(%2) -> float32" in message


def test_swapped_operands_fail():
    def expected(x, y):
        return y.sum(-1, keepdim=True) + torch.relu(torch.nn.functional.linear(x, W, B))

    with pytest.raises(AssertionError, match="differ in structure"):
        assert_structural_equal(block(), expected)


def test_weights_compare_by_shape_and_optionally_by_value():
    short_bias = torch.empty(1)

    def wrong_shape(x, y):
        return torch.relu(torch.nn.functional.linear(x, W, short_bias)) + y.sum(-1, keepdim=True)

    with pytest.raises(AssertionError, match=r"constant float32\[1\]"):
        assert_structural_equal(block(), wrong_shape)
    program = block()
    weight, bias = (program.graph_module.get_parameter(n).detach().clone()
                    for n in ("fc.weight", "fc.bias"))
    shifted = weight + 1  # closed-over tensors are computed outside the traced function

    def same_values(x, y):
        return torch.relu(torch.nn.functional.linear(x, weight, bias)) + y.sum(-1, keepdim=True)

    def other_values(x, y):
        return torch.relu(torch.nn.functional.linear(x, shifted, bias)) + y.sum(-1, keepdim=True)

    assert_structural_equal(program, same_values, values=True)
    assert_structural_equal(program, other_values)  # by shape and dtype only
    with pytest.raises(AssertionError, match="constant #1 differs"):
        assert_structural_equal(program, other_values, values=True)


def test_computing_twice_is_not_computing_once():
    def once(x):
        a = torch.relu(x)
        return a + a

    def twice(x):
        return torch.relu(x) + torch.relu(x)

    program = trace_function(twice, (torch.randn(3),))
    with pytest.raises(AssertionError, match=r"\+%1 = aten.relu.default\(%in0\)"):
        assert_structural_equal(program, once)


def test_a_dead_node_is_a_difference():
    program = block()
    x = program.nodes("placeholder")[0]
    with program.graph.inserting_after(x):
        program.graph.call_function(torch.ops.aten.neg.default, (x,))
    program.refresh_metadata()

    def expected(x, y):
        return torch.relu(torch.nn.functional.linear(x, W, B)) + y.sum(-1, keepdim=True)

    with pytest.raises(AssertionError, match=r"(?s)\+# not read by any output:.*aten.neg"):
        assert_structural_equal(program, expected)


def test_default_arguments_list_the_same_as_written_out():
    q = torch.randn(1, 2, 3, 4)
    short = trace_function(
        lambda q: torch.ops.aten.scaled_dot_product_attention.default(q, q, q), (q,))
    full = trace_function(
        lambda q: torch.ops.aten.scaled_dot_product_attention.default(q, q, q, None, 0.0, False),
        (q,))
    assert structural_listing(short)[0] == structural_listing(full)[0]
