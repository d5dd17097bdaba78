"""GPTQ and AWQ lower a layer's output error below round-to-nearest at the same format."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecc.passes.quantize import awq, gptq
from edgecc.passes.quantize.scheme import TensorQuant
from edgecc.passes.quantize.weights import weight_params


def correlated_inputs(seed, n=512, k=64):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5
    scales = torch.rand(k, generator=g) * 4 + 0.1  # uneven channel magnitudes
    return (torch.randn(n, k, generator=g) @ mix) * scales


@settings(max_examples=settings.default.max_examples, deadline=None)
@given(seed=st.integers(0, 10_000), group=st.sampled_from([16, 32]),
       act_order=st.booleans())
def test_gptq_beats_rtn_on_layer_output_error(seed, group, act_order):
    x = correlated_inputs(seed)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(seed + 1))
    tq = TensorQuant("uint4", "per-group", symmetric=False, group_size=group)
    h = gptq.HessianAccumulator()
    for chunk in x.chunk(4):
        h.update(chunk)
    w_gptq, params = gptq.gptq_quantize(w, h.h, tq, act_order=act_order)
    rtn = weight_params(w, tq, 0, 1).fake_quantize(w)
    assert gptq.output_error(w, w_gptq, h.h) < gptq.output_error(w, rtn, h.h)
    # the result is on the stored grid: quantize/dequantize reproduces it
    assert torch.allclose(params.dequantize(params.quantize(w_gptq)), w_gptq, atol=1e-5)


def test_hessian_is_the_mean_outer_product():
    x = torch.randn(100, 8)
    h = gptq.HessianAccumulator()
    h.update(x[:30])
    h.update(x[30:])
    assert torch.allclose(h.h.float(), 2 * x.T @ x / 100, atol=1e-5)
    # each batch's product in float32, the sum in float64: within ~1e-6 of float64 throughout
    x64 = x.double()
    assert h.h.dtype == torch.float64
    assert torch.allclose(h.h, 2 * x64.T @ x64 / 100, rtol=1e-6, atol=1e-6)


def test_awq_scale_search_never_loses_to_rtn_on_its_data():
    x = correlated_inputs(3)
    w = torch.randn(32, 64)
    tq = TensorQuant("uint4", "per-group", symmetric=False, group_size=16)
    s, alpha, gain = awq.search_scale([w], x, tq)
    rtn_err = (x @ weight_params(w, tq, 0, 1).fake_quantize(w).T - x @ w.T).pow(2).mean()
    wq = weight_params(w * s, tq, 0, 1).fake_quantize(w * s) / s
    awq_err = (x @ wq.T - x @ w.T).pow(2).mean()
    assert awq_err <= rtn_err and gain >= 0
    assert alpha > 0  # uneven input channels: scaling helps


def test_awq_clip_ratios_are_per_group_and_in_range():
    x = correlated_inputs(4)
    w = torch.randn(32, 64)
    tq = TensorQuant("uint4", "per-group", symmetric=False, group_size=16)
    clip = awq.search_clip(w, x, tq)
    assert clip.shape == (32, 4) and ((clip >= 0.5) & (clip <= 1.0)).all()
