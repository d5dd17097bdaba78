"""GPTQ's column loop, made faster for compile time (issue 18), gives the same bits as the
textbook loop it replaced: the rank-1 step ``W[:, i:] -= e · Hinv[i, i:]`` was a K=1
matmul per column (a BLAS call; each element the single product e_r·h_c) and is now a
broadcast product of the same values on a transposed block, with the column quantizers'
float32 params converted once. ``reference`` below is the previous code, kept verbatim in
its arithmetic."""

from __future__ import annotations

import pytest
import torch

from edgecc.passes.quantize import gptq
from edgecc.passes.quantize.scheme import TensorQuant
from edgecc.passes.quantize.weights import weight_params
from edgecc.quant import QuantParams


def reference(w, h, tq, *, block=128, damp=0.01, act_order=True, scale_dtype=torch.float32):
    w = w.detach().to(torch.float32).clone()
    h = h.detach().to(torch.float32, copy=True)
    n_cols = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    group = tq.group_size if tq.granularity == "per-group" else 0
    static = group == 0 or act_order
    params = weight_params(w, tq, 0, 1, scale_dtype=scale_dtype)
    qmin, qmax = params.range
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(n_cols)
    w, h = w[:, perm], h[perm[:, None], perm]
    h.diagonal().add_(damp * torch.mean(torch.diag(h)))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q_all = torch.zeros_like(w)
    scales, zeros = params.scale.clone(), params.zero_point.clone()
    for i1 in range(0, n_cols, block):
        i2 = min(i1 + block, n_cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            if not static and col % group == 0:
                cols = torch.cat((w1[:, i:], w[:, i2:]), dim=1)[:, :group]
                gp = weight_params(cols, TensorQuant(tq.dtype, "per-channel", tq.symmetric,
                                                     narrow=tq.narrow), 0, 1,
                                   scale_dtype=scale_dtype)
                scales[:, col // group] = gp.scale
                zeros[:, col // group] = gp.zero_point
                params = QuantParams(params.dtype, scales, zeros, params.axis,
                                     params.block_size, params.qmin, params.qmax)
            s, z = params.scale.to(torch.float32), params.zero_point.to(torch.float32)
            if s.dim() and params.block_size:
                s, z = s[:, col // params.block_size], z[:, col // params.block_size]
            x = w1[:, i]
            q = (torch.clamp(torch.round((x - 0.0) / s) + z, qmin, qmax) - z) * s + 0.0
            q_all[:, i1 + i] = q
            e = (x - q) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q_all[:, torch.argsort(perm)], params


@pytest.mark.parametrize("tq", [TensorQuant("uint4", "per-group", False, group_size=32),
                                TensorQuant("int4", "per-group", True, group_size=32),
                                TensorQuant("int8", "per-channel", True)],
                         ids=["uint4-g32", "int4-sym-g32", "int8-channel"])
@pytest.mark.parametrize("act_order", [True, False])
@pytest.mark.parametrize("numpy_columns", [True, False], ids=["numpy", "torch"])
def test_column_loop_gives_the_textbook_loops_bits(tq, act_order, numpy_columns, monkeypatch):
    # static groups on the CPU run the loop through numpy; the torch loop (a GPU's, and the
    # dynamic groups') gives the same bits
    monkeypatch.setattr(gptq, "NUMPY_COLUMNS", numpy_columns)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(72, 160, generator=g) * 0.05
    x = torch.randn(400, 160, generator=g).double()
    h = 2 * x.T @ x / x.shape[0]
    h[5, :] = 0
    h[:, 5] = 0  # a dead input column
    want, p_want = reference(w, h, tq, block=64, act_order=act_order,
                             scale_dtype=torch.float16)
    got, p_got = gptq.gptq_quantize(w, h, tq, block=64, act_order=act_order,
                                    scale_dtype=torch.float16)
    assert torch.equal(got, want)
    assert torch.equal(p_got.scale, p_want.scale)
    assert torch.equal(p_got.zero_point, p_want.zero_point)
