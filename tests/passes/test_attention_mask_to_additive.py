import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import edgecc
from edgecc.passes import AttentionMaskToAdditive
from edgecc.testing import assert_close, assert_structural_equal

aten = torch.ops.aten


class Attn(nn.Module):
    def forward(self, q, mask):
        return F.scaled_dot_product_attention(q, q, q, attn_mask=mask)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masks_become_additive_and_fully_masked_rows_stay_zero(kind):
    q = torch.randn(2, 2, 5, 4)
    mask = torch.rand(2, 1, 5, 5) > 0.5
    mask[0, 0, 1] = False  # a fully masked query row
    if kind == "float":
        mask = torch.where(mask, 0.0, float("-inf"))
    program = edgecc.trace(Attn(), (q, mask))
    result = AttentionMaskToAdditive()(program.copy())
    assert result.stats["rewritten"] == 1
    sdpa = next(n for n in result.program.nodes("call_function")
                if "scaled_dot_product" in str(n.target))
    assert sdpa.args[3].meta["val"].dtype == torch.float32
    expected = program(q, mask)[0]
    got = result.program(q, mask)[0]
    torch.testing.assert_close(got, expected)
    assert torch.all(got[0, :, 1] == 0)
    assert not AttentionMaskToAdditive()(result.program).modified  # idempotent


def test_bool_mask_before_expected():
    q = torch.randn(2, 2, 5, 4)
    mask = torch.rand(2, 1, 5, 5) > 0.5
    before = edgecc.trace(Attn(), (q, mask))
    after = AttentionMaskToAdditive()(before.copy()).program

    def expected(q, mask):
        zero = aten.scalar_tensor.default(0.0, dtype=torch.float32)
        ninf = aten.scalar_tensor.default(float("-inf"), dtype=torch.float32)
        additive = aten.where.self(mask, zero, ninf)
        valid = aten.any.dim(mask, -1, True)
        a = F.scaled_dot_product_attention(q, q, q, attn_mask=additive)
        return aten.where.self(valid, a, aten.scalar_tensor.default(0.0, dtype=torch.float32))

    assert_structural_equal(after, expected)
    assert_close(before, after)
    after.verify()
