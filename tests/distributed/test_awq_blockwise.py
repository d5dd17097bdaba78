"""Block-by-block AWQ (passes/quantize/awq_blockwise.py) on a tiny transformers Llama.

With ``propagate="float"`` every block sees the activations the whole-model pass records in
its one calibration run and the same random rows (``RowSampler`` replays the pass's
generator), so on the CPU the codes, scales and folded norm weights equal those of
``quantize{scheme=w4a16,algorithm=awq,awq_fold=true}`` on the traced program exactly, and
the model's logits equal the quantized program's (to float rounding of the graph).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import edgecc
from edgecc.pass_base import PassContext
from edgecc.passes.quantize.awq_blockwise import AwqBlockwiseOptions, awq_decoder_blockwise
from edgecc.passes.quantize.quantize import Quantize, QuantizeOptions
from tests.distributed.blockwise_models import (
    GROUP, Logits, assert_bounded_peaks, assert_codes_are_the_programs,
    assert_same_program_weights, batches, codes_dequantized, llama, same_fraction,
)

transformers = pytest.importorskip("transformers")

OPTIONS = AwqBlockwiseOptions(group_size=GROUP, tokens=16)


@pytest.fixture(scope="module")
def traced_and_whole():
    """The traced tiny Llama, and the whole-model AWQ pass on a copy of it."""
    calib = batches()
    program = edgecc.trace(Logits(llama(uneven_norms=True)), calib[0])
    out = Quantize()(program.copy(), QuantizeOptions(
        scheme="w4a16", algorithm="awq", awq_fold=True, awq_tokens=16, group_size=GROUP,
        include=("m.model.layers.*",)), context=PassContext(calibration=calib,
                                                            progress=False))
    return program, out


@pytest.fixture(scope="module")
def blockwise_cpu():
    """Block-by-block AWQ of the same tiny Llama on the CPU: (the model, in place; result)."""
    model = llama(uneven_norms=True)
    return model, awq_decoder_blockwise(model, batches(), OPTIONS)


def test_blockwise_awq_equals_whole_model_awq_pass(blockwise_cpu, traced_and_whole):
    model, res = blockwise_cpu
    _, out = traced_and_whole
    whole = out.program
    assert_codes_are_the_programs(res.codes, model, whole)
    s, w = res.stats, out.stats["awq"]
    # the same search: groups, scaled (folded) groups, the same mean alpha
    assert (s["groups"], s["scaled"], s["mean_alpha"]) == (w["groups"], w["scaled"],
                                                           w["mean_alpha"])
    assert s["scaled"] > 0 and set(s["not_folded"]) == {"0.self_attn.o_proj",
                                                        "1.self_attn.o_proj"}
    # folded norm weights: the whole model computes what the quantized program computes
    with torch.no_grad():
        for (ids,) in batches():
            torch.testing.assert_close(model(input_ids=ids, use_cache=False).logits,
                                       whole.run(ids)[0], rtol=1e-5, atol=1e-5)
    assert len(s["seconds_per_block"]) == 2 and s["peak_device_bytes"] is None
    assert s["rows_not_replayed"] == 0


def test_quantize_blockwise_pass_equals_whole_model_awq(traced_and_whole):
    """The pipeline pass (block spans of the traced graph) gives the whole-model pass's
    program: the same dequantized weights, folded norms, outputs. (``awq_fold=false``, the
    scale as a multiply in the graph, runs in test_distributed's quantize-blockwise check.)"""
    from edgecc.pass_manager import PassManager

    program, out = traced_and_whole
    calib = batches()
    res = PassManager(f"quantize-blockwise{{algorithm=awq,awq_fold=true,awq_tokens=16,"
                      f"group_size={GROUP}}}")(
        program.copy(), context=PassContext(calibration=calib, progress=False))
    assert_same_program_weights(res.program, out.program)
    stats = res.stats["passes"][-1]["stats"]
    assert stats["blocks"] == 2 and stats["layers"] == 14 and stats["awq"]["scaled"] > 0
    assert stats["awq"]["mean_alpha"] == out.stats["awq"]["mean_alpha"]
    for (ids,) in calib:
        torch.testing.assert_close(res.program.run(ids), out.program.run(ids), rtol=0,
                                   atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_blockwise_awq_on_cuda_matches_cpu(blockwise_cpu):
    _, cpu = blockwise_cpu
    model = llama(uneven_norms=True)
    gpu = awq_decoder_blockwise(model, batches(), dataclasses.replace(OPTIONS, device="cuda"))
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert same_fraction(codes_dequantized(cpu.codes), codes_dequantized(gpu.codes)) >= 0.99
    assert_bounded_peaks(gpu.stats)
