"""quantize: schemes, granularity, exclusion, calibration checks, target constraints."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.errors import InputSpecError, OptionError
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from edgecc.quant import is_dequantize, is_quantize, sqnr_db
from edgecc.target import QuantSupport, Target


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.conv = nn.Conv1d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 16)

    def forward(self, ids):
        h = self.emb(ids)  # [B, T, 32]
        h = self.conv(h.transpose(1, 2)).transpose(1, 2).relu()
        return self.fc2(torch.relu(self.fc1(h)))


def program():
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 8))
    return edgecc.trace(Net().eval(), (ids,))


def batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 50, (2, 8), generator=g),) for _ in range(n)]


def quantize(prog, text, calibration=None, target=None):
    ctx = PassContext(calibration=calibration, target=target)
    return PassManager(text)(prog.copy(), context=ctx)


def stats(result):
    return result.stats["passes"][-1]["stats"]


def held_out_sqnr(prog, quantized):
    """Output SQNR (dB) of ``quantized`` against ``prog`` on 4 batches calibration never saw."""
    held = batches(4, seed=11)
    ref = torch.cat([prog.run(*b)[0].flatten() for b in held])
    return sqnr_db(ref, torch.cat([quantized.run(*b)[0].flatten() for b in held]))


def stored_dtypes(prog):
    out = {}
    for n in prog.nodes("call_function"):
        if is_dequantize(n) and prog.is_constant(n.args[0]):
            out[n.args[0].target] = prog.tensor(n.args[0]).dtype
    return out


def test_w8a8_quantizes_weights_and_layer_inputs():
    prog = program()
    res = quantize(prog, "quantize{scheme=w8a8}", batches())
    out = res.program
    dtypes = stored_dtypes(out)
    assert len(dtypes) == 4 and set(dtypes.values()) == {torch.int8}  # emb, conv, fc1, fc2
    # the three layers with an activation input get a quantize/dequantize pair each
    assert sum(is_quantize(n) for n in out.nodes("call_function")) == 3
    s = stats(res)
    assert s["layers"] == 4 and s["weight_compression"] > 3.5
    assert s["error"]["on"] == "calibration batches"
    # dB, seeded; measured: 41.2 on the calibration batches, 30.7 held out
    assert s["error"]["sqnr_db"] >= 37.0
    assert held_out_sqnr(prog, out) >= 27.0


def test_w4a16_packs_weights_and_leaves_activations_float():
    prog = program()
    res = quantize(prog, "quantize{scheme=w4a16,group_size=16}")
    out = res.program
    assert not any(is_quantize(n) for n in out.nodes("call_function"))
    fc1 = [n for n in out.nodes("call_function")
           if is_dequantize(n) and "fc1" in str(n.args[0].target)][0]
    assert out.tensor(fc1.args[0]).shape == (64, 16)  # [N, K/2] packed uint4
    assert out.tensor(fc1.args[1]).shape == (64, 2)  # [N, K/16] scales
    assert out.tensor(fc1.args[1]).dtype == torch.float16
    s = stats(res)
    assert "conv" in s["skipped"]  # kernel width 3 cannot be packed along its last dim
    assert s["weight_compression"] > 5
    assert held_out_sqnr(prog, out) >= 19.0  # dB; measured 21.97 (seeded)


# output SQNR floor (dB) per scheme, ~3-6 dB under what was measured held out (seeded):
# dynamic-int8 42.06, w8a16 44.55, fp16 68.74, fp8 25.61; the reported (calibration) SQNR
# was 41.85, 44.09, 68.11, 26.42
SQNR_FLOOR = {"dynamic-int8": 38.0, "w8a16": 40.0, "fp16": 62.0, "fp8": 22.0}


@pytest.mark.parametrize("scheme", sorted(SQNR_FLOOR))
def test_every_scheme_keeps_the_model_close(scheme):
    prog = program()
    res = quantize(prog, f"quantize{{scheme={scheme}}}", batches())
    assert held_out_sqnr(prog, res.program) >= SQNR_FLOOR[scheme]
    assert stats(res)["error"]["sqnr_db"] >= SQNR_FLOOR[scheme]


def test_exclude_keeps_matching_layers_float():
    res = quantize(program(), "quantize{scheme=w8a16,exclude=[fc*,emb]}")
    names = {str(t) for t in stored_dtypes(res.program)}
    assert len(names) == 1 and "conv" in next(iter(names))
    assert sorted(stats(res)["excluded"]) == ["emb", "fc1", "fc2"]


def test_exclude_pattern_matching_nothing_is_an_error():
    with pytest.raises(OptionError, match="'decoder.*' matches no quantizable layer"):
        quantize(program(), "quantize{scheme=w8a16,exclude=decoder.*}")


def test_static_scheme_without_calibration_is_an_error():
    with pytest.raises(InputSpecError, match="needs calibration data"):
        quantize(program(), "quantize{scheme=w8a8}")
    with pytest.raises(InputSpecError, match="calibration set is empty"):
        quantize(program(), "quantize{scheme=w8a8}", [])


def test_calibration_with_wrong_shape_or_dtype_is_an_error_before_any_work():
    prog = program()
    bad_shape = [(torch.randint(0, 50, (2, 9)),)]
    with pytest.raises(InputSpecError, match="calibration batch 0"):
        quantize(prog, "quantize{scheme=w8a8}", bad_shape)
    bad_dtype = [(torch.randn(2, 8),)]
    with pytest.raises(InputSpecError, match="calibration batch 0"):
        quantize(prog, "quantize{scheme=w8a8}", bad_dtype)


class SymmetricInt8Only(Target):
    name = "sym-int8"
    quantization = QuantSupport(weight_dtypes=frozenset({"int8"}),
                                activation_dtypes=frozenset({"int8"}),
                                weight_granularities=frozenset({"per-channel", "per-tensor"}),
                                symmetric_activations_only=True, dynamic_activations=False)


def test_target_constraints_make_the_result_legal():
    res = quantize(program(), "quantize{scheme=w8a8}", batches(), target=SymmetricInt8Only())
    out = res.program
    for n in out.nodes("call_function"):
        if is_quantize(n):
            assert out.tensor(n.args[2]).abs().sum() == 0  # zero point 0: symmetric
    assert "symmetric" in stats(res)["target_constraints"][0]


@pytest.mark.parametrize("scheme,match", [("w4a16", "stores weights as uint4"),
                                          ("dynamic-int8", "cannot execute dynamic"),
                                          ("fp8", "float8_e4m3fn")])
def test_scheme_the_target_cannot_execute_is_refused(scheme, match):
    with pytest.raises(OptionError, match=match):
        quantize(program(), f"quantize{{scheme={scheme}}}", batches(),
                 target=SymmetricInt8Only())


def test_tied_weights_are_quantized_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(40, 16)
            self.head = nn.Linear(16, 40, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids))

    prog = edgecc.trace(Tied().eval(), (torch.randint(0, 40, (2, 5)),))
    res = quantize(prog, "quantize{scheme=w8a16}")
    dq = [n for n in res.program.nodes("call_function") if is_dequantize(n)]
    assert len(dq) == 1 and len(dq[0].users) == 2


def test_compile_with_quantization_verifies_against_the_compressed_program(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    cal = [(torch.randn(4, 16),) for _ in range(4)]
    res = edgecc.compile(model, target="host", pipeline="quantize{scheme=w8a8},fuse,dce",
                         example_inputs=cal[0], calibration=cal,
                         output_dir=str(tmp_path / "out"))
    v = res.report["verification"]
    assert v["passed"] and "compressed program" in v["reference"]
    assert v["fidelity"]["on"] == "calibration batches" and v["fidelity"]["cosine"] > 0.99
    q = [r for r in res.report["pipeline"]["passes"] if r["pass"] == "quantize"][0]
    assert not q["lossless"] and q["stats"]["error"]["sqnr_db"] > 20


def test_bf16_scheme_casts_weights_and_activations():
    prog = program()
    res = quantize(prog, "quantize{scheme=bf16}")
    assert set(stored_dtypes(res.program).values()) == {torch.bfloat16}
    assert held_out_sqnr(prog, res.program) >= 46.0  # dB; measured 51.31 (8-bit mantissa)


def test_dynamic_int8_ranges_are_per_token_for_linear_inputs():
    res = quantize(program(), "quantize{scheme=dynamic-int8}")
    out = res.program
    qs = [n for n in out.nodes("call_function") if is_quantize(n)]
    by_block = {n.args[4] for n in qs}
    # fc1 / fc2 inputs [2, 8, K]: one range per token (block = K); the conv input per tensor
    assert by_block == {0, 32, 64}
    for n in qs:
        if n.args[4]:
            assert tuple(n.args[1].meta["val"].shape) == (2, 8, 1)
    per_tensor = quantize(program(), "quantize{scheme=dynamic-int8,"
                                     "activation_granularity=per-tensor}").program
    assert {n.args[4] for n in per_tensor.nodes("call_function") if is_quantize(n)} == {0}


def test_per_token_needs_a_dynamic_scheme():
    with pytest.raises(OptionError, match="per-token needs a dynamic scheme"):
        quantize(program(), "quantize{scheme=w8a8,activation_granularity=per-token}",
                 batches())


def test_quantize_refuses_masked_weights_and_quantizes_after_apply_masks():
    """prune then quantize used to quantize nothing (masked weights are not constants):
    the pass now names the layers and the fix; with apply-masks between, every layer is
    quantized and no mask is left in the graph."""
    from edgecc.errors import PreconditionError
    from edgecc.testing import op_counts

    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    prog = edgecc.trace(net, (torch.randn(4, 16),))
    with pytest.raises(PreconditionError, match="apply-masks before quantize"):
        PassManager("prune{sparsity=0.5},quantize{scheme=w8a16}")(prog.copy())
    result = PassManager("prune{sparsity=0.5},apply-masks,quantize{scheme=w8a16}")(prog.copy())
    stats = result.stats["passes"][-1]["stats"]
    assert stats["layers"] == 2
    counts = op_counts(result.program)
    assert not any("masked" in k for k in counts)


@pytest.mark.parametrize("text", ["quantize{scheme=w8a8}",
                                  "quantize{scheme=w4a16,group_size=32,algorithm=gptq}"])
def test_output_error_reads_the_float_outputs_of_the_calibration_run(text, monkeypatch):
    from edgecc.passes.quantize.layers import output_error
    from edgecc.passes.quantize.quantize import _RowwiseDequantized
    from edgecc.program import Program

    prog, calib = program(), batches()
    ran = []
    run = Program.run
    monkeypatch.setattr(Program, "run", lambda self, *a: (ran.append(type(self)), run(self, *a))[1])
    res = quantize(prog, text, calib)
    assert Program not in ran  # the float program was not run again for the error
    monkeypatch.undo()
    again = output_error(prog, _RowwiseDequantized(res.program, cache_bytes=0), calib, 4)
    assert stats(res)["error"] == again and again["samples"] == 4
