"""edgecc.simulate.ConstantDequantized: a quantized program's runs with its constant weights
dequantized once (verification's reference runs), the same outputs as Program.run."""

from __future__ import annotations

import torch

import edgecc
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from edgecc.simulate import ConstantDequantized


def _quantized(text):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 16)).eval()
    prog = edgecc.trace(model, (torch.randn(4, 32),))
    calib = [(torch.randn(4, 32),) for _ in range(2)]
    return PassManager(text)(prog, context=PassContext(calibration=calib)).program


def test_cached_dequantize_gives_program_runs_bits_and_dequantizes_once(monkeypatch):
    from edgecc import quant

    prog = _quantized("quantize{scheme=w4a16,group_size=16}")
    sim = ConstantDequantized(prog)
    calls = []
    real = quant._dequantize_values
    monkeypatch.setattr(quant, "_dequantize_values",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    per_run = []
    for _ in range(3):
        x = torch.randn(4, 32)
        out = sim.run(x)[0]
        per_run.append(len(calls))
        calls.clear()
        assert torch.equal(out, prog.run(x)[0])
        calls.clear()
    assert per_run == [2, 0, 0]  # two weights, dequantized on the first run only
    assert len(sim.cache) == 2 and sim.cached_bytes == (32 * 64 + 64 * 16) * 4


def test_a_cache_that_cannot_hold_every_weight_holds_none():
    prog = _quantized("quantize{scheme=w4a16,group_size=16}")
    sim = ConstantDequantized(prog, cache_bytes=32 * 64 * 4)  # the first weight only
    x = torch.randn(4, 32)
    assert torch.equal(sim.run(x)[0], prog.run(x)[0])
    assert not sim.cache and sim.cached_bytes == 0
