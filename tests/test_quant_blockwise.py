"""``edgecc.quant._dequantize_values`` a block of rows at a time (bounded memory, issue 20):
the same bits as the whole-tensor expression for every parameter layout, and temporaries
no larger than a block."""

from __future__ import annotations

import pytest
import torch

from edgecc import quant as Q

# (shape, axis, block_size, scale shape, zero-point shape): per-tensor, per-axis on either
# dimension, per-block along rows (groups cut by the row blocks) and along columns, a conv
LAYOUTS = [
    ((37, 20), 0, 0, (), ()),
    ((37, 20), 0, 0, (37,), (37,)),
    ((37, 20), 1, 0, (20,), ()),
    ((37, 20), 0, 8, (5, 20), (5, 20)),
    ((37, 20), 1, 8, (37, 3), (37, 3)),
    ((37, 6, 3, 3), 0, 0, (37,), (37,)),
    ((37, 6, 3, 3), 1, 4, (37, 2, 3, 3), (37, 2, 3, 3)),
    # groups that tile their axis exactly: computed on a [.., blocks, block, ..] view with
    # the params broadcast (not expanded by broadcast_param): the same bits
    ((37, 32), 1, 8, (37, 4), (37, 4)),
    ((40, 20), 0, 8, (5, 20), (5, 20)),
    ((37, 8, 3, 3), 1, 4, (37, 2, 3, 3), (37, 2, 3, 3)),
]


def _whole(q, scale, zero_point, axis, block_size, fmt):
    s = Q.broadcast_param(scale.to(torch.float32), q.shape, axis, block_size)
    if fmt.is_float:
        return q.to(torch.float32) * s
    z = Q.broadcast_param(zero_point.to(torch.float32), q.shape, axis, block_size)
    return (q.to(torch.float32) - z) * s


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int4", "float8_e4m3fn"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda v: f"{v[0]}-axis{v[1]}-b{v[2]}")
def test_blockwise_equals_whole(monkeypatch, dtype, layout):
    shape, axis, block_size, s_shape, z_shape = layout
    fmt = Q.qformat(dtype)
    g = torch.Generator().manual_seed(hash((dtype, str(layout))) % 2**31)
    x = torch.randn(shape, generator=g) * 3
    scale = torch.rand(s_shape, generator=g) * 0.05 + 0.01
    lo, hi = (-8, 7) if dtype == "int4" else (0, 255) if dtype == "uint8" else (-128, 127)
    zero_point = torch.randint(lo, hi + 1, z_shape, generator=g).to(torch.float32)
    q = Q._quantize_values(x, scale, zero_point, axis, block_size, lo, hi, fmt)
    s_full = Q.broadcast_param(scale, shape, axis, block_size)  # the reference expression
    if fmt.is_float:
        want = (x / s_full).clamp(-fmt.float_max, fmt.float_max).to(fmt.storage)
    else:
        want = torch.clamp(torch.round(x / s_full) + Q.broadcast_param(
            zero_point, shape, axis, block_size), lo, hi)
    assert torch.equal(q.float(), want.float())
    if not fmt.is_float:
        q = q.to(torch.int8 if lo < 0 else torch.uint8)
    expected = _whole(q, scale, zero_point, axis, block_size, fmt)

    row_bytes = 4 * (q.numel() // shape[0])
    seen = []
    broadcast = Q.broadcast_param
    monkeypatch.setattr(Q, "broadcast_param",
                        lambda p, sh, *a: seen.append(torch.Size(sh).numel()) or broadcast(
                            p, sh, *a))
    monkeypatch.setattr(Q, "_DEQUANTIZE_BLOCK_BYTES", 9 * row_bytes)  # 9 rows a block
    got = Q._dequantize_values(q, scale, zero_point, axis, block_size, fmt)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.equal(got, expected)  # bit for bit
    rows = 9 if not (block_size and axis == 0) else 8  # whole groups of 8 along rows
    assert len(seen) == (1 if fmt.is_float else 2) * -(-shape[0] // rows)  # block by block
    assert max(seen) <= rows * (q.numel() // shape[0])  # temporaries: a block's

    # through the operators (int4 packed, the dequantize op's own path; a 4-bit tensor with
    # no even dimension to pack along is refused by quantize, tested in test_quant.py)
    if not fmt.is_float and not (fmt.packed and Q.packed_dim(shape, axis, block_size) is None):
        stored = Q._store(q.to(torch.float32), fmt, axis, block_size)
        unpacked = []
        unpack = Q.unpack_int4
        monkeypatch.setattr(Q, "unpack_int4", lambda t, *a: unpacked.append(t.numel()) or
                            unpack(t, *a))
        op = Q.dequantize(stored, scale, zero_point, axis, block_size, dtype, torch.float32)
        assert torch.equal(op, expected)
        if fmt.packed and Q._packed_rows_dim(stored, fmt, scale, axis, block_size) is not None:
            # 4-bit codes unpacked a block of rows at a time too, not the whole tensor
            assert len(unpacked) == -(-shape[0] // rows)
            assert max(unpacked) <= rows * (stored.numel() // shape[0])
