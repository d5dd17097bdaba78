import torch
import torch.nn as nn

import edgecc
from edgecc.passes import DeadCodeElimination, EliminateIdentity
from edgecc.testing import assert_close, assert_structural_equal, op_counts


def run(module, *inputs):
    program = edgecc.trace(module, inputs)
    result = EliminateIdentity()(program.copy())
    DeadCodeElimination()(result.program)
    assert_close(program, result.program)
    return program, result


class Identities(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        y = self.drop(x)  # eval: clone
        y = y.reshape(2, 3, 4)  # same shape
        y = y.permute(0, 1, 2)
        y = y.to(torch.float32)
        y = y.expand(2, 3, 4)
        y = y * 1
        y = y + 0
        y = y - 0.0
        y = y / 1
        return torch.relu(y)


def test_identity_ops_are_removed():
    program, result = run(Identities().eval(), torch.randn(2, 3, 4))
    counts = op_counts(result.program)
    assert set(counts) == {"aten.relu"}, counts
    assert result.stats["removed"] >= 8


class Chains(nn.Module):
    def forward(self, x):
        a = x.view(2, 12).view(6, 4).view(2, 3, 4)  # back to the input shape
        b = x.transpose(1, 2).transpose(1, 2)  # cancels
        c = x.permute(2, 0, 1).permute(1, 2, 0)  # cancels
        d = x.permute(2, 0, 1).permute(0, 2, 1)  # composes into one permute
        return torch.relu(a) + b + c, d


def test_reshape_and_permute_chains_collapse():
    program, result = run(Chains(), torch.randn(2, 3, 4))
    counts = op_counts(result.program)
    assert counts["aten.view"] == 0
    assert counts["aten.permute"] + counts["aten.transpose"] == 1


class NotIdentities(nn.Module):
    def forward(self, x, i):
        return (x * 2, x + 1, x.reshape(3, 8), (i + 0.0), x.to(torch.float16),
                x * torch.ones(4, 2, 3, 4))


def test_non_identities_are_kept():
    program, result = run(NotIdentities(), torch.randn(2, 3, 4), torch.arange(4))
    counts = op_counts(result.program)
    assert counts["aten.mul"] == 2 and counts["aten.add"] == 2 and counts["aten._to_copy"] == 1


def test_eliminate_identity_before_expected():
    class Before(nn.Module):
        def forward(self, x):
            y = x.view(2, 12).view(2, 3, 4)  # a chain back to the input's shape
            y = y.transpose(1, 2).transpose(1, 2)  # cancels
            return torch.relu(y * 1 + 0)

    before = edgecc.trace(Before(), (torch.randn(2, 3, 4),))
    result = EliminateIdentity()(before.copy())
    after = result.program

    def expected(x):
        return torch.relu(x)

    assert_structural_equal(after, expected)
    assert_close(before, after)
    after.verify()
    assert result.stats["rules"]["reshape-chain"]["matched"] == 1
    assert result.stats["rules"]["permute-chain"]["matched"] == 1
