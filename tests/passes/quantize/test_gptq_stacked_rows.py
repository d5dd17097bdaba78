"""GPTQ of layers that share a Hessian (a transformer's q / k / v read the same input) runs
once on their weights stacked by rows (``row_splits``): each layer's weights and params are
the bits of its own call, and the quantize pass makes fewer GPTQ calls (compile time)."""

from __future__ import annotations

import pytest
import torch

from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from edgecc.passes.quantize import gptq
from edgecc.passes.quantize import quantize as quantize_pass
from edgecc.passes.quantize.scheme import TensorQuant
from tests.models import token_inputs, transformer


@pytest.mark.parametrize("tq", [TensorQuant("int4", "per-group", True, group_size=32),
                                TensorQuant("int4", "per-group", False, group_size=32),
                                TensorQuant("int8", "per-channel", True)],
                         ids=["int4-sym-g32", "int4-asym-g32", "int8-channel"])
@pytest.mark.parametrize("act_order", [True, False])
def test_stacked_rows_give_each_layers_own_bits(tq, act_order):
    g = torch.Generator().manual_seed(3)
    ws = [torch.randn(n, 96, generator=g) for n in (64, 32, 32)]  # q, and GQA's smaller k, v
    x = torch.randn(256, 96, generator=g)
    h = (x.T @ x).double()
    stacked, p = gptq.gptq_quantize(torch.cat(ws), h, tq, block=32, act_order=act_order,
                                    row_splits=[w.shape[0] for w in ws])
    start = 0
    for w in ws:
        own, p_own = gptq.gptq_quantize(w, h, tq, block=32, act_order=act_order)
        rows = slice(start, start + w.shape[0])
        assert torch.equal(stacked[rows], own)
        assert torch.equal(p.scale[rows], p_own.scale)
        assert torch.equal(p.zero_point[rows], p_own.zero_point)
        start += w.shape[0]


def test_row_splits_must_cover_the_weight():
    w, h = torch.randn(8, 16), torch.eye(16, dtype=torch.float64)
    with pytest.raises(ValueError, match="row_splits sum to 7"):
        gptq.gptq_quantize(w, h, TensorQuant("int8", "per-channel", True), row_splits=[4, 3])


PIPELINE = "quantize{scheme=w4a16,group_size=32,algorithm=gptq}"


def _quantized(monkeypatch, stack: bool):
    import edgecc

    torch.manual_seed(0)
    model = transformer("bert")
    calib = [token_inputs() for _ in range(2)]
    program = edgecc.trace(model, token_inputs())
    calls = []
    real = gptq.gptq_quantize
    with monkeypatch.context() as m:
        m.setattr(gptq, "gptq_quantize", lambda w, *a, **k: calls.append(w.shape[0])
                  or real(w, *a, **k))
        if not stack:
            m.setattr(quantize_pass, "_same_hessian_rows", lambda *a: [])
        out = PassManager(PIPELINE)(program, context=PassContext(calibration=calib)).program
    weights = {n.name: out.tensor(n) for n in out.nodes("get_attr")}
    return weights, calls


def test_the_pass_stacks_q_k_v_and_keeps_every_weight(monkeypatch):
    stacked, calls = _quantized(monkeypatch, stack=True)
    alone, calls_alone = _quantized(monkeypatch, stack=False)
    # BERT, 2 layers of hidden 64: q, k, v, out, fc1, fc2 alone; q+k+v stacked (192 rows)
    assert len(calls_alone) == 12 and len(calls) == 8 and calls.count(192) == 2
    assert stacked.keys() == alone.keys()
    for name, t in alone.items():
        assert torch.equal(stacked[name], t), name
