"""Host-build perplexity (``edgecc.llm_eval.host``): the TVM decoder library built from a
program's own (quantized) weights scores the same windows as the program. Tiny random Llama."""

import math

import pytest
import torch

from edgecc.errors import EdgeccError
from edgecc.llm_eval import host, program_perplexity, windows
from tests.targets.gguf import tiny

CTX = 12


def _wins():
    g = torch.Generator().manual_seed(7)
    return windows(torch.randint(3, tiny.VOCAB, (4 * CTX,), generator=g).tolist(), CTX)


def _rtn_int4(program):
    from edgecc.registry import default_pass_registry

    quantize = default_pass_registry().get("quantize")
    return quantize()(program.copy(), quantize.Options(
        scheme="w4a16", group_size=32, weight_dtype="int4", weight_symmetric=True)).program


def test_host_build_ppl_equals_program_ppl_fp32_and_int4(tmp_path):
    model = tiny.llama_gqa(tied=True)
    float_program = tiny.trace(model)
    wins = _wins()
    for name, program, rel in (("fp32", float_program, 1e-4),
                               ("rtn_q4_0", _rtn_int4(float_program), 1e-4)):
        built = host.host_bundle(program, str(tmp_path / name), ctx=CTX, model=model)
        assert built["transplanted"] >= 2 * 7 + 2  # 7 linears a layer + embedding + lm_head
        ours = program_perplexity(program, wins)
        theirs = host.host_perplexity(built["dir"], wins)
        assert theirs.tokens == ours.tokens == 4 * (CTX - 1)
        assert math.isclose(theirs.perplexity, ours.perplexity, rel_tol=rel), name
        if name == "fp32":
            fp32 = ours.perplexity
    # the int4 build is the int4 model, not the float one: 1.5e-3 apart, 15x the tolerance
    # (host and program agree to ~5e-9 relative, measured)
    assert abs(ours.perplexity - fp32) > 10 * 1e-4 * fp32


def test_a_program_of_another_decoder_is_refused(tmp_path):
    other = tiny.trace(tiny.qwen2())  # q/k/v biases the Llama step has no place for
    with pytest.raises(EdgeccError, match="not this decoder"):
        host.host_bundle(other, str(tmp_path / "x"), ctx=CTX, model=tiny.llama_gqa(tied=True))
