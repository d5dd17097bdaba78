import torch
import torch.nn as nn

import edgecc
from edgecc.passes import ConstantFold, ConstantFoldOptions, DeadCodeElimination
from edgecc.testing import assert_close, assert_structural_equal, op_counts


class WeightMath(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4))
        self.scale = nn.Parameter(torch.rand(8))

    def forward(self, x):
        w = (self.w * self.scale[:, None]).t()  # all constant: folds
        return x @ w + torch.ones(8).cumsum(0)


def test_constant_subgraphs_fold_into_weights():
    program = edgecc.trace(WeightMath(), (torch.randn(3, 4),))
    result = ConstantFold()(program.copy())
    DeadCodeElimination()(result.program)
    counts = op_counts(result.program)
    assert result.stats["folded"] >= 2
    assert counts["aten.mul"] == 0 and counts["aten.cumsum"] == 0
    assert set(counts) <= {"aten.mm", "aten.matmul", "aten.add"}
    assert_close(program, result.program)


class Broadcast(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.randn(1, 64))

    def forward(self, x):
        return x + self.b.expand(256, 64)


def test_folding_never_bloats_the_model():
    program = edgecc.trace(Broadcast(), (torch.randn(256, 64),))
    result = ConstantFold()(program.copy())
    assert op_counts(result.program)["aten.expand"] == 1
    assert result.stats.get("skipped_too_large") == 1
    big = ConstantFold()(program.copy(), ConstantFoldOptions(max_growth=1000.0))
    assert op_counts(big.program)["aten.expand"] == 0
    assert_close(program, big.program)


def test_ops_on_inputs_are_not_folded():
    program = edgecc.trace(nn.Linear(4, 4), (torch.randn(2, 4),))
    assert not ConstantFold()(program.copy()).modified


def test_constant_fold_before_expected():
    # Before: x @ (w * scale[:, None]).t() + ones(8).cumsum(0)
    before = edgecc.trace(WeightMath(), (torch.randn(3, 4),))
    after = ConstantFold()(before.copy()).program
    wt, cumsum = torch.empty(4, 8), torch.empty(8)

    def expected(x):
        return x @ wt + cumsum

    assert_structural_equal(after, expected)
    assert_close(before, after)
    after.verify()
