import torch
import torch.nn as nn

import edgecc
from edgecc.passes import DecomposeComposites, Fuse
from edgecc.testing import assert_close, assert_structural_equal, op_counts, trace_function


def test_composites_expand_back_to_aten_and_keep_outputs():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Conv2d(4, 4, 1), nn.Hardswish(),
                      nn.Flatten(), nn.Linear(4 * 36, 3), nn.GELU("tanh")).eval()
    program = edgecc.trace(m, (torch.randn(2, 3, 8, 8),))
    fused = Fuse()(program.copy()).program
    assert op_counts(fused)["edgecc.conv_act"] == 2
    result = DecomposeComposites()(fused)
    counts = op_counts(result.program)
    assert result.stats["decomposed"] == 3
    assert not any(k.startswith("edgecc.") for k in counts)
    assert counts["aten.convolution"] == 2 and counts["aten.linear"] == 1
    assert counts["aten.hardtanh"] == 1 and counts["aten.hardswish"] == 1
    assert_close(program, result.program)


def test_decompose_composites_before_expected():
    w, b = torch.randn(4, 3, 1, 1), torch.randn(4)
    fc_w, fc_b = torch.randn(2, 4), torch.randn(2)

    def composites(x):
        y = torch.ops.edgecc.conv_act(x, w, b, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, "relu6")
        return torch.ops.edgecc.linear_act(y.mean((2, 3)), fc_w, fc_b, "gelu_tanh")

    before = trace_function(composites, (torch.randn(2, 3, 5, 5),))
    after = DecomposeComposites()(before.copy()).program

    def expected(x):
        y = torch.nn.functional.hardtanh(torch.conv2d(x, w, b), 0.0, 6.0)
        return torch.nn.functional.gelu(torch.nn.functional.linear(y.mean((2, 3)), fc_w, fc_b),
                                        approximate="tanh")

    assert_structural_equal(after, expected, values=True)
    assert_close(before, after)
    after.verify()
