import torch
import torch.nn as nn

import edgecc
from edgecc.passes import DecomposeComposites, Fuse
from edgecc.testing import assert_close, op_counts


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
