"""The pruning dependency rules (passes/prune/dependency.py), tested directly: for each
pattern, which tensors a group resizes together, along which axis and in which slot, and
which groups are refused with what reason."""

from __future__ import annotations

import torch
import torch.nn as nn

import edgecc
from edgecc.passes.prune import find_groups
from edgecc.passes.prune.dependency import remove_units

X = torch.randn(2, 3, 5, 5)


def analyse(module):
    program = edgecc.trace(module.eval(), (X,))
    groups, skipped, names = find_groups(program)
    return program, {g.seed: g for g in groups}, skipped, names


def coupled(group):
    """``{weight: (axis, offset, inner)}``: where each constant carries the group's units."""
    return {str(n.target): (s.axis, s.offset, s.inner) for n, s in group.constants()}


def layers(pairs, names):
    return [names[layer] for layer, _ in pairs]


def test_conv_bn_conv_couples_filters_bn_statistics_and_next_input_channels():
    class ConvBNConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), \
                nn.Conv2d(8, 4, 3)

        def forward(self, x):
            return self.b(torch.relu(self.bn(self.a(x))))

    program, groups, skipped, names = analyse(ConvBNConv())
    g = groups["a"]
    assert (g.units, g.inner) == (8, 1)
    assert coupled(g) == {
        "a.weight": (0, 0, 1), "a.bias": (0, 0, 1),
        "bn.weight": (0, 0, 1), "bn.bias": (0, 0, 1),
        "bn.running_mean": (0, 0, 1), "bn.running_var": (0, 0, 1),
        "b.weight": (1, 0, 1),  # the next conv's input channels
    }
    assert layers(g.producers, names) == ["a"] and layers(g.sinks, names) == ["b"]
    assert skipped == {"b": "the dimension reaches the model output (convolution_1)"}

    remove_units(program, [(g, [2, 5])])
    program.verify()
    sizes = {str(n.target): tuple(program.tensor(n).shape) for n in program.nodes("get_attr")}
    assert sizes["a.weight"] == (6, 3, 3, 3) and sizes["bn.running_var"] == (6,)
    assert sizes["b.weight"] == (4, 6, 3, 3)
    assert program.run(X)[0].shape == (2, 4, 3, 3)


def test_residual_add_joins_both_branches_into_one_group():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.a = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1)
            self.b, self.head = nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = torch.relu(self.stem(x))
            return self.head(y + self.b(torch.relu(self.a(y))))

    program, groups, skipped, names = analyse(Residual())
    # the add couples the stem's filters with the branch's last conv: one group, two producers
    assert set(groups) == {"stem", "a"}
    g = groups["stem"]
    assert coupled(g) == {
        "stem.weight": (0, 0, 1), "stem.bias": (0, 0, 1),
        "b.weight": (0, 0, 1), "b.bias": (0, 0, 1),
        "a.weight": (1, 0, 1), "head.weight": (1, 0, 1),
    }
    assert layers(g.producers, names) == ["stem", "b"]
    assert sorted(layers(g.sinks, names)) == ["a", "head"]
    # inside the branch, a's filters only reach b's input channels
    assert coupled(groups["a"]) == {"a.weight": (0, 0, 1), "a.bias": (0, 0, 1),
                                    "b.weight": (1, 0, 1)}

    remove_units(program, [(g, [0]), (groups["a"], [1, 2])])
    program.verify()
    sizes = {str(n.target): tuple(program.tensor(n).shape) for n in program.nodes("get_attr")}
    assert sizes["b.weight"] == (7, 4, 3, 3) and sizes["head.weight"] == (4, 7, 1, 1)


def test_residual_add_with_the_model_input_is_refused():
    class InputResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.c(x + self.a(x))

    _, groups, skipped, _ = analyse(InputResidual())
    assert groups == {}
    assert skipped["a"] == "the dimension reaches the model input x"


def test_concat_gives_each_piece_its_own_slot_of_the_consumer():
    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(10, 5, 1)

        def forward(self, x):
            return self.c(torch.cat([self.a(x), self.b(x)], 1))

    program, groups, _, _ = analyse(Concat())
    assert coupled(groups["a"]) == {"a.weight": (0, 0, 1), "a.bias": (0, 0, 1),
                                    "c.weight": (1, 0, 1)}
    assert coupled(groups["b"]) == {"b.weight": (0, 0, 1), "b.bias": (0, 0, 1),
                                    "c.weight": (1, 4, 1)}  # after a's 4 channels

    dense = program.copy()
    remove_units(program, [(groups["b"], [0, 5])])
    program.verify()
    assert tuple(program.tensor(groups["b"].sinks[0][1]).shape) == (5, 8, 1, 1)
    # removed: c's input channels 4 and 9 (b's units 0 and 5), nothing of a's
    c = dict(dense.graph_module.named_parameters())["c.weight"]
    c.data[:, [4, 9]] = 0.0
    torch.testing.assert_close(program.run(X)[0], dense.run(X)[0], atol=1e-5, rtol=1e-5)


def test_grouped_convolution_prunes_whole_groups():
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.g = nn.Conv2d(8, 16, 3, padding=1, groups=4)  # 2 in, 4 out per group
            self.c = nn.Conv2d(16, 2, 1)

        def forward(self, x):
            return self.c(self.g(self.a(x)))

    program, groups, _, names = analyse(Grouped())
    g = groups["a"]
    assert (g.units, g.inner) == (4, 2)  # a unit is a whole group: 2 channels of a
    assert coupled(g) == {
        "a.weight": (0, 0, 2), "a.bias": (0, 0, 2),
        "g.weight": (0, 0, 4), "g.bias": (0, 0, 4),  # and its group's 4 outputs
        "c.weight": (1, 0, 4),
    }
    assert layers(g.producers, names) == ["a", "g"]

    remove_units(program, [(g, [1])])
    program.verify()
    conv = [n for n in program.nodes("call_function")
            if n.target == torch.ops.aten.convolution.default]
    assert [int(n.args[8]) for n in conv] == [1, 3, 1]  # groups rewritten
    assert tuple(program.tensor(conv[1].args[1]).shape) == (12, 2, 3, 3)


def test_depthwise_couples_channel_by_channel_and_split_groups_are_refused():
    class Depthwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.d = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.c = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.c(self.d(self.a(x)))

    _, groups, _, _ = analyse(Depthwise())
    assert (groups["a"].units, groups["a"].inner) == (8, 1)
    assert coupled(groups["a"])["d.weight"] == (0, 0, 1)

    class SplitsAGroup(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 5, 1)
            self.g, self.c = nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.c(self.g(torch.cat([self.a(x), self.b(x)], 1)))

    _, groups, skipped, _ = analyse(SplitsAGroup())
    assert groups == {}  # channels 0-2 | 3-7 cut the second group (channels 2, 3) in two
    assert skipped["b"] == "grouped convolution (groups=4): the pruned channels split a group"
    assert skipped["a"] == "units of 1 channels cannot merge by 2"


def test_linear_chain_and_flatten_into_linear():
    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.l1, self.l2, self.l3 = nn.Linear(36, 16), nn.Linear(16, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = torch.flatten(self.conv(x), 1)
            return self.l3(torch.relu(self.l2(torch.relu(self.l1(h)))))

    program, groups, skipped, _ = analyse(Chain())
    assert set(groups) == {"conv", "l1", "l2"}
    # each conv channel is a block of H*W = 9 columns of the linear after the flatten
    assert coupled(groups["conv"]) == {"conv.weight": (0, 0, 1), "conv.bias": (0, 0, 1),
                                       "l1.weight": (1, 0, 9)}
    assert coupled(groups["l1"]) == {"l1.weight": (0, 0, 1), "l1.bias": (0, 0, 1),
                                     "l2.weight": (1, 0, 1)}
    assert coupled(groups["l2"]) == {"l2.weight": (0, 0, 1), "l2.bias": (0, 0, 1),
                                     "l3.weight": (1, 0, 1)}
    assert skipped == {"l3": "the dimension reaches the model output (linear_2)"}

    remove_units(program, [(groups["conv"], [3]), (groups["l1"], list(range(8)))])
    program.verify()
    sizes = {str(n.target): tuple(program.tensor(n).shape) for n in program.nodes("get_attr")}
    assert sizes["l1.weight"] == (8, 27) and sizes["l2.weight"] == (8, 8)
    assert program.run(X)[0].shape == (2, 3)
