"""Sensitivity analysis and quantize{scheme=auto}: the budget holds with the fewest layers
kept at high precision."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from edgecc.passes.quantize.quantize import QuantizeOptions
from edgecc.passes.quantize.sensitivity import layer_sensitivity
from edgecc.quant import is_dequantize


def model_with_a_fragile_layer():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                      nn.Linear(64, 8)).eval()
    with torch.no_grad():
        m[2].weight[:, 0] *= 200  # one outlier column: per-channel int4 wrecks this layer
    return m


def setup():
    m = model_with_a_fragile_layer()
    cal = [(torch.randn(16, 32, generator=torch.Generator().manual_seed(i)),)
           for i in range(4)]
    return edgecc.trace(m, cal[0]), cal


def output_sqnr(prog, quantized, cal):
    from edgecc.quant import sqnr_db

    return sqnr_db(torch.cat([prog.run(*b)[0] for b in cal]),
                   torch.cat([quantized.run(*b)[0] for b in cal]))


def test_sensitivity_ranking_predicts_what_to_keep():
    prog, cal = setup()
    opts = "scheme=w8a16,weight_dtype=int4,weight_granularity=per-channel"
    report = layer_sensitivity(prog, cal, QuantizeOptions(
        scheme="w8a16", weight_dtype="int4", weight_granularity="per-channel"))
    sqnrs = [e["sqnr_db"] for e in report]
    assert sqnrs == sorted(sqnrs) and len(report) == 3
    keep_first = PassManager(f"quantize{{{opts},exclude={report[0]['layer']}}}")(prog.copy())
    keep_last = PassManager(f"quantize{{{opts},exclude={report[-1]['layer']}}}")(prog.copy())
    assert output_sqnr(prog, keep_first.program, cal) > output_sqnr(prog, keep_last.program,
                                                                     cal)


def test_sensitivity_with_a_user_metric():
    prog, cal = setup()
    x = cal[0][0]
    ref = prog.run(x)[0]

    def neg_error(p):  # higher is better
        return -float((p.run(x)[0] - ref).abs().max())

    report = layer_sensitivity(prog, cal, QuantizeOptions(scheme="w8a16"), metric=neg_error)
    assert report[0]["metric"] <= report[-1]["metric"]


@pytest.mark.parametrize("max_drop", [1e-2, 1e-4])
def test_auto_keeps_the_fewest_sensitive_layers_that_meet_the_budget(max_drop):
    prog, cal = setup()
    res = PassManager(
        f"quantize{{scheme=auto,auto_from=w4a16,group_size=16,max_drop={max_drop}}}")(
        prog.copy(), context=PassContext(calibration=cal))
    stats = res.stats["passes"][-1]["stats"]
    assert stats["budget_met"] and stats["drop"] <= max_drop
    kept = stats["kept_high_precision"]
    assert kept == [e["layer"] for e in stats["sensitivity"]][: len(kept)]
    quantized = sum(is_dequantize(n) for n in res.program.nodes("call_function"))
    assert quantized == 3 - len(kept)
    # nothing fewer would do: quantizing the last kept layer too breaks the budget
    if kept:
        worse = PassManager(
            "quantize{scheme=w4a16,group_size=16,exclude=[" + ",".join(kept[:-1]) + "]}"
            if len(kept) > 1 else "quantize{scheme=w4a16,group_size=16}")(prog.copy())
        x = cal[0][0]
        cos = torch.nn.functional.cosine_similarity(
            worse.program.run(x)[0].flatten(), prog.run(x)[0].flatten(), 0)
        assert 1 - cos > max_drop * 0.5  # measured on a subset of the batches


def test_auto_with_a_fallback_scheme():
    prog, cal = setup()
    res = PassManager("quantize{scheme=auto,auto_from=w4a16,auto_fallback=w8a16,"
                      "group_size=16,max_drop=0.0001}")(
        prog.copy(), context=PassContext(calibration=cal))
    stats = res.stats["passes"][-1]["stats"]
    stored = [str(res.program.tensor(n.args[0]).dtype) for n in
              res.program.nodes("call_function") if is_dequantize(n)]
    kept = stats["kept_high_precision"]
    assert kept and stats["auto_fallback"] == "w8a16"
    assert stored.count("torch.int8") == len(kept)  # kept layers: int8, not float
    assert stored.count("torch.uint8") == 3 - len(kept)


def test_quant_sensitivity_pass_reports_without_changing_the_program():
    prog, cal = setup()
    res = PassManager("quant-sensitivity{scheme=w4a16,group_size=16}")(
        prog.copy(), context=PassContext(calibration=cal))
    rec = res.stats["passes"][0]
    assert not rec["modified"] and rec["stats"]["layers"] == 3
    sqnrs = [e["sqnr_db"] for e in rec["stats"]["report"]]
    assert sqnrs == sorted(sqnrs)
    assert res.program.op_counts() == prog.op_counts()
