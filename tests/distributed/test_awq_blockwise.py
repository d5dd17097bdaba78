"""Block-by-block AWQ (passes/quantize/awq_blockwise.py) on a tiny transformers Llama.

With ``propagate="float"`` every block sees the activations the whole-model pass records in
its one calibration run and the same random rows (``RowSampler`` replays the pass's
generator), so on the CPU the codes, scales and folded norm weights equal those of
``quantize{scheme=w4a16,algorithm=awq,awq_fold=true}`` on the traced program exactly, and
the model's logits equal the quantized program's (to float rounding of the graph).
"""

from __future__ import annotations

import pytest
import torch

import edgecc
from edgecc.pass_base import PassContext
from edgecc.passes.quantize.awq_blockwise import AwqBlockwiseOptions, awq_decoder_blockwise
from edgecc.passes.quantize.quantize import Quantize, QuantizeOptions
from edgecc.quant import is_dequantize, node_params

transformers = pytest.importorskip("transformers")

GROUP = 16


def _llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # uneven channels, so AWQ has something to find
        for layer in model.model.layers:
            layer.input_layernorm.weight.mul_(torch.rand(32) * 3 + 0.1)
            layer.post_attention_layernorm.weight.mul_(torch.rand(32) * 3 + 0.1)
    return model


class _Logits(torch.nn.Module):
    def __init__(self, m: torch.nn.Module):
        super().__init__()
        self.m = m

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.m(input_ids=ids, use_cache=False).logits


def _batches() -> list[tuple[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 64, (2, 12), generator=g),) for _ in range(3)]


def _dequantized(program) -> dict[str, torch.Tensor]:
    return {str(n.args[0].target): node_params(n, program.tensor).dequantize(
        program.tensor(n.args[0]))
        for n in program.nodes("call_function")
        if is_dequantize(n) and program.is_constant(n.args[0])}


@pytest.fixture(scope="module")
def traced_and_whole():
    """The traced tiny Llama, and the whole-model AWQ pass on a copy of it."""
    batches = _batches()
    program = edgecc.trace(_Logits(_llama()), batches[0])
    out = Quantize()(program.copy(), QuantizeOptions(
        scheme="w4a16", algorithm="awq", awq_fold=True, awq_tokens=16, group_size=GROUP,
        include=("m.model.layers.*",)), context=PassContext(calibration=batches,
                                                            progress=False))
    return program, out


def test_blockwise_awq_equals_whole_model_awq_pass(traced_and_whole):
    batches = _batches()
    model = _llama()
    res = awq_decoder_blockwise(model, batches, AwqBlockwiseOptions(group_size=GROUP,
                                                                    tokens=16))
    _, out = traced_and_whole
    whole = out.program
    deq = _dequantized(whole)
    assert len(res.codes) == 14 and len(deq) == 14
    for name, (q, params) in res.codes.items():
        key = "m_model_layers_" + name.replace(".", "_") + "_qweight"
        got = params.dequantize(q)
        assert torch.equal(got, deq[key]), name
        blk, *path = name.split(".")
        linear = model.model.layers[int(blk)].get_submodule(".".join(path))
        assert torch.equal(linear.weight.detach(), got), name
    s, w = res.stats, out.stats["awq"]
    # the same search: groups, scaled (folded) groups, the same mean alpha
    assert (s["groups"], s["scaled"], s["mean_alpha"]) == (w["groups"], w["scaled"],
                                                           w["mean_alpha"])
    assert s["scaled"] > 0 and set(s["not_folded"]) == {"0.self_attn.o_proj",
                                                        "1.self_attn.o_proj"}
    # folded norm weights: the whole model computes what the quantized program computes
    with torch.no_grad():
        for (ids,) in batches:
            torch.testing.assert_close(model(input_ids=ids, use_cache=False).logits,
                                       whole.graph_module(ids)[0] if isinstance(
                                           whole.graph_module(ids), (tuple, list))
                                       else whole.graph_module(ids), rtol=1e-5, atol=1e-5)
    assert len(s["seconds_per_block"]) == 2 and s["peak_device_bytes"] is None
    assert s["rows_not_replayed"] == 0


def test_quantize_blockwise_pass_equals_whole_model_awq(traced_and_whole):
    """The pipeline pass (block spans of the traced graph) gives the whole-model pass's
    program: the same dequantized weights, folded norms, outputs. (``awq_fold=false``, the
    scale as a multiply in the graph, runs in test_distributed's quantize-blockwise check.)"""
    from edgecc.pass_manager import PassManager

    program, out = traced_and_whole
    batches = _batches()
    res = PassManager(f"quantize-blockwise{{algorithm=awq,awq_fold=true,awq_tokens=16,"
                      f"group_size={GROUP}}}")(
        program.copy(), context=PassContext(calibration=batches, progress=False))
    got, want = _dequantized(res.program), _dequantized(out.program)
    assert len(got) == 14 and got.keys() == want.keys()
    for k in got:
        assert torch.equal(got[k], want[k]), k
    stats = res.stats["passes"][-1]["stats"]
    assert stats["blocks"] == 2 and stats["layers"] == 14 and stats["awq"]["scaled"] > 0
    assert stats["awq"]["mean_alpha"] == out.stats["awq"]["mean_alpha"]
    for (ids,) in batches:
        torch.testing.assert_close(res.program.run(ids), out.program.run(ids), rtol=0,
                                   atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_blockwise_awq_on_cuda_matches_cpu():
    batches = _batches()
    opts = AwqBlockwiseOptions(group_size=GROUP, tokens=16)
    cpu = awq_decoder_blockwise(_llama(), batches, opts)
    model = _llama()
    gpu = awq_decoder_blockwise(model, batches, AwqBlockwiseOptions(group_size=GROUP,
                                                                    tokens=16, device="cuda"))
    assert all(p.device.type == "cpu" for p in model.parameters())
    same = total = 0
    for name, (q, params) in cpu.codes.items():
        a, b = params.dequantize(q), gpu.codes[name][1].dequantize(gpu.codes[name][0])
        same += int(torch.isclose(a, b, rtol=1e-3, atol=1e-6).sum())
        total += a.numel()
    assert same / total >= 0.99
    peaks = gpu.stats["peak_device_bytes_per_block"]
    assert peaks[0] > 0 and max(peaks) <= 1.1 * min(peaks) + 2**20
