"""Block-by-block GPTQ (passes/quantize/gptq_blockwise.py) on a tiny transformers Llama.

With ``propagate="float"`` every block sees the activations the whole-model pass sees in its
one calibration run, so on the CPU the codes and scales equal those of
``quantize{scheme=w4a16,algorithm=gptq}`` on the traced program exactly (stated tolerance:
identical dequantized weights). On a GPU the block-by-block run is compared with the CPU run
(float rounding of the activations and of GPTQ's column loop may flip a rounding tie, which
GPTQ's error propagation carries on: >= 99 % identical weights, layer output error within
1 % relative — the bound bench/gpu.py measures at 1B scale).
"""

from __future__ import annotations

import copy

import pytest
import torch

import edgecc
from edgecc.pass_base import PassContext
from edgecc.passes.quantize.gptq_blockwise import BlockwiseOptions, gptq_decoder_blockwise
from edgecc.passes.quantize.quantize import Quantize, QuantizeOptions
from tests.distributed.blockwise_models import (
    GROUP, Logits, assert_bounded_peaks, assert_codes_are_the_programs,
    assert_same_program_weights, batches, codes_dequantized, dequantized, llama, same_fraction,
)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def blockwise_cpu():
    model = llama()
    res = gptq_decoder_blockwise(model, batches(), BlockwiseOptions(group_size=GROUP))
    return model, res


@pytest.fixture(scope="module")
def traced_and_whole():
    """The traced tiny Llama, and the whole-model GPTQ pass on a copy of it."""
    calib = batches()
    program = edgecc.trace(Logits(llama()), calib[0])
    whole = Quantize()(program.copy(), QuantizeOptions(scheme="w4a16", algorithm="gptq",
                                                       group_size=GROUP,
                                                       include=("m.model.layers.*",)),
                       context=PassContext(calibration=calib, progress=False)).program
    return program, whole


def test_blockwise_equals_whole_model_gptq_pass(blockwise_cpu, traced_and_whole):
    model, res = blockwise_cpu
    assert_codes_are_the_programs(res.codes, model, traced_and_whole[1])
    s = res.stats
    assert s["blocks"] == 2 and len(s["seconds_per_block"]) == 2 and s["device"] == "cpu"
    assert s["peak_device_bytes"] is None and s["output_error"] > 0


def test_quantize_blockwise_pass_equals_whole_model_gptq(traced_and_whole):
    """``quantize-blockwise{algorithm=gptq}`` in a pipeline: the whole-model pass's IR."""
    from edgecc.pass_manager import PassManager

    program, whole = traced_and_whole
    calib = batches()
    res = PassManager(f"quantize-blockwise{{group_size={GROUP}}}")(
        program.copy(), context=PassContext(calibration=calib, progress=False))
    assert_same_program_weights(res.program, whole)
    stats = res.stats["passes"][-1]["stats"]
    assert stats["blocks"] == 2 and len(stats["seconds_per_block"]) == 2
    assert stats["error"]["cosine"] > 0.9
    for (ids,) in calib:
        torch.testing.assert_close(res.program.run(ids), whole.run(ids), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("algorithm", ["gptq", "awq"])
def test_quantize_blockwise_pass_on_cuda_matches_cpu(traced_and_whole, algorithm):
    from edgecc.pass_manager import PassManager

    program, _ = traced_and_whole
    text = f"quantize-blockwise{{algorithm={algorithm},group_size={GROUP},awq_tokens=16}}"
    runs = [PassManager(text)(program.copy(), context=PassContext(
        calibration=batches(), progress=False, device=d)) for d in (None, "cuda")]
    cpu, gpu = (dequantized(r.program) for r in runs)
    assert same_fraction(cpu, gpu) >= 0.99
    stats = runs[1].stats["passes"][-1]["stats"]
    assert stats["device"].startswith("cuda") and stats["peak_device_bytes"] > 0
    assert all(t.device.type == "cpu" for t in runs[1].program.graph_module.state_dict()
               .values())


def test_quantize_blockwise_without_blocks_is_one_line():
    from edgecc.pass_manager import PassManager

    x = torch.randn(2, 8)
    program = edgecc.trace(torch.nn.Sequential(torch.nn.Linear(8, 8)), (x,))
    with pytest.raises(edgecc.errors.InputSpecError, match="block_pattern"):
        PassManager("quantize-blockwise")(program, context=PassContext(
            calibration=[(x,)], progress=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_blockwise_on_cuda_matches_cpu_with_bounded_memory(blockwise_cpu):
    _, cpu = blockwise_cpu
    model = llama()
    gpu = gptq_decoder_blockwise(model, batches(),
                                 BlockwiseOptions(group_size=GROUP, device="cuda"))
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert same_fraction(codes_dequantized(cpu.codes), codes_dequantized(gpu.codes)) >= 0.99
    assert gpu.stats["output_error"] == pytest.approx(cpu.stats["output_error"], rel=0.01)
    assert_bounded_peaks(gpu.stats)


def test_blockwise_needs_a_decoder():
    with pytest.raises(edgecc.errors.InputSpecError, match="decoder blocks"):
        gptq_decoder_blockwise(copy.deepcopy(torch.nn.Linear(4, 4)), [torch.zeros(1, 4)])
