"""llama.cpp's Q4_K_M type mix on an edgecc program (edgecc.llm.gguf_mix): K-quant rows
that are not a multiple of 256 fall back as llama.cpp does (Q4_K -> Q5_0, Q6_K -> Q8_0),
Q6_K is ggml's own quantization,
-t gguf writes every tensor bit-exactly as planned (Q5_0 blocks decoded by gguf's
dequantizer and run by llama.cpp), says which tensors fell back and why, and the file's
Q5_0 / Q8_0 tensors import back as the same int8 codes."""

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize, quantize

from edgecc.errors import OptionError
from edgecc.gguf_import import read_gguf
from edgecc.gguf_import.layout import hf_name, unpermute_rope
from edgecc.llm.gguf_mix import plan_types, quantize_gguf_mix
from edgecc.llm_eval.llamacpp_quant import quantize_rows
from edgecc.quant import node_params
from edgecc.targets.gguf import GgufOptions, GgufTarget
from edgecc.targets.gguf.partition import recognise
from tests.targets.gguf import tiny



def test_q4_k_m_mix_falls_back_like_llamacpp_and_is_written_bit_exactly(tmp_path):
    model = tiny.llama_256(layers=2)
    program = tiny.trace(model)
    mixed, report = quantize_gguf_mix(program, algorithm="rtn")  # GPTQ: bench/llm_quality.py
    types = {n: p["chosen"] for n, p in report["types"].items()}
    # layer 1 is one use_more_bits picks (Q6_K); ffn_down reads rows of 320
    assert types["blk.0.ffn_down.weight"] == "Q5_0"  # Q4_K -> Q5_0 (320 % 256)
    assert types["blk.1.ffn_down.weight"] == "Q8_0"  # Q6_K -> Q8_0 (320 % 256)
    assert types["blk.0.attn_v.weight"] == "Q4_K" and types["blk.1.attn_v.weight"] == "Q6_K"
    assert types["blk.0.attn_q.weight"] == "Q4_K" and types["output.weight"] == "Q6_K"
    assert report["counts"] == {"Q4_K": 11, "Q5_0": 2, "Q8_0": 1, "Q6_K": 2}
    fewer = plan_types(program, q6_k="Q5_0")  # a Q6_K that K-quant rows allow: the option
    assert fewer["blk.1.attn_v.weight"]["chosen"] == "Q5_0"
    assert fewer["blk.1.ffn_down.weight"]["chosen"] == "Q8_0"  # llama.cpp's own fallback

    lowered = GgufTarget().lower(mixed, str(tmp_path), GgufOptions())
    assert lowered.report["tensor_types"] == {"F32": 5, "Q4_K": 11, "Q5_0": 2, "Q8_0": 1,
                                              "Q6_K": 2}
    fb = lowered.report["fallback"]
    assert fb["blk.0.ffn_down.weight"]["written"] == "Q5_0"
    assert "not a multiple of 256" in fb["blk.0.ffn_down.weight"]["reason"]
    assert fb["blk.1.ffn_down.weight"]["wanted"] == "Q6_K"
    assert set(fb) == {"blk.0.ffn_down.weight", "blk.1.ffn_down.weight", "token_embd.weight"}
    assert "linear layers only" in fb["token_embd.weight"]["reason"]  # untied, Q4_K wanted
    check = lowered.report["llamacpp_check"]  # llama.cpp ran the file (Q8 activations)
    assert check["kl"] < 1e-3 and check["top1_agreement"] >= 0.9

    # every quantized tensor in the file decodes (gguf, llama.cpp's reader) to the
    # program's weight; the Q5_0 / Q8_0 ones are ggml's own quantization of the float
    expected = {t.name: (node_params(t.node, mixed.tensor).dequantize(
        mixed.tensor(t.node.args[0])).numpy(), t.rope_heads) for t in recognise(mixed).tensors
        if not mixed.is_constant(t.node)}
    floats = {t.name: program.tensor(t.node).detach().numpy() for t in recognise(program).tensors}
    seen = set()
    for t in gguf.GGUFReader(str(tmp_path / "model.gguf")).tensors:
        if t.tensor_type.name in ("Q5_0", "Q8_0", "Q4_K", "Q6_K"):
            shape = tuple(int(s) for s in reversed(t.shape))
            raw = np.asarray(t.data).reshape(shape[0], -1)
            want, heads = expected[t.name]
            got = dequantize(raw, t.tensor_type).reshape(shape)
            np.testing.assert_array_equal(unpermute_rope(got, heads) if heads else got, want)
            if t.tensor_type.name != "Q4_K":
                ref = floats[t.name]
                ggml = (quantize_rows(ref, "Q6_K") if t.tensor_type.name == "Q6_K"
                        else quantize(ref, t.tensor_type).reshape(shape[0], -1))
                np.testing.assert_array_equal(unpermute_rope(raw, heads) if heads else raw,
                                              ggml)
            seen.add(t.tensor_type.name)
    assert seen == {"Q4_K", "Q5_0", "Q8_0", "Q6_K"}

    # Q5_0 / Q8_0 / Q6_K come back as edgecc int8 codes (exact); Q4_K is imported as float
    back = read_gguf(str(tmp_path / "model.gguf"))
    for name in ("blk.0.ffn_down.weight", "blk.1.ffn_down.weight", "output.weight"):
        w = back.weights[hf_name(name.removesuffix(".weight")) + ".weight"]
        assert w.kind == types[name] and w.codes.dtype == np.int8
        np.testing.assert_array_equal(
            w.codes * w.scales.repeat(w.block, 1).astype(np.float32), expected[name][0])
    assert back.meta["dequantized"] == {n: "Q4_K" for n in back.meta["dequantized"]}


def test_plan_options_are_checked_and_tied_embeddings_are_token_embd():
    program = tiny.trace(tiny.llama_gqa(tied=True))
    plan = plan_types(program, q6_k="Q5_0")
    assert "output.weight" not in plan
    embd = plan["token_embd.weight"]  # the tied output matrix: Q6_K, rows of 64 -> Q8_0
    assert (embd["wanted"], embd["chosen"]) == ("Q6_K", "Q8_0")
    assert plan["blk.1.attn_v.weight"]["chosen"] == "Q8_0"  # Q6_K, rows of 64: Q8_0
    with pytest.raises(OptionError, match="Q4_K_M"):
        plan_types(program, "Q3_K_S")
    with pytest.raises(OptionError, match="Q6_K, Q8_0 or Q5_0"):
        plan_types(program, q6_k="Q4_0")


@pytest.fixture(scope="module")
def llama_64():
    """SmolLM2's case: hidden rows of 64 (Q4_K -> Q5_0), ffn_down's rows of 256 (layer 0:
    Q4_K, layer 1: Q6_K)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return tiny.trace(LlamaForCausalLM(LlamaConfig(
        vocab_size=tiny.VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2)).eval())


def test_weights_a_pass_replaced_are_still_quantized(llama_64):
    # AWQ for ffn_down folds its input scale into ffn_up's rows, a new constant that the
    # Q5_0 step must still find
    program = llama_64
    calib = [(tiny.token_ids(seed=s),) for s in range(2)]
    awq, report = quantize_gguf_mix(program, algorithm="awq", calibration=calib,
                                    options={"awq_fold": True, "awq_grid": 4})
    assert report["types"]["blk.0.ffn_down.weight"]["chosen"] == "Q4_K"
    assert report["types"]["blk.0.ffn_up.weight"]["chosen"] == "Q5_0"
    folded = [str(n.target) for n in awq.nodes("get_attr") if "up_proj_weight_awq" in str(n.target)]
    assert folded  # ffn_up was replaced by AWQ's fold, then quantized
    counts = awq.op_counts()  # Q4_K (asymmetric grid): dequantize_offset; the rest dequantize
    assert counts.get("edgecc.dequantize_offset", 0) == report["counts"]["Q4_K"] > 0
    assert (counts.get("edgecc.dequantize", 0) + counts["edgecc.dequantize_offset"]
            == len(report["types"]) == 16)


def test_q5_0_tensors_by_gptq_are_q5_0_bit_exactly_and_beat_ggml_rounding(tmp_path, llama_64):
    # rows of 64 (SmolLM2's case: hidden 576): llama.cpp's Q4_K falls back to Q5_0; with
    # algorithm=gptq those get GPTQ on ggml's Q5_0 grid (d = signed max / -16 per 32)
    from edgecc.passes.quantize.gptq import HessianAccumulator, output_error
    from edgecc.passes.quantize.layers import find_layers, record_values

    program = llama_64
    calib = [(tiny.token_ids(seed=s),) for s in range(3)]
    mixed, report = quantize_gguf_mix(program, calibration=calib)  # q5_0=auto: GPTQ
    assert report["quantize"]["q5_0_gptq"]["layers"] == 11  # 12 Q5_0, token_embd by ggml
    lowered = GgufTarget().lower(mixed, str(tmp_path), GgufOptions(check=False))
    assert lowered.report["tensor_types"]["Q5_0"] == 12
    expected = {t.name: (node_params(t.node, mixed.tensor).dequantize(
        mixed.tensor(t.node.args[0])).numpy(), t.rope_heads) for t in recognise(mixed).tensors
        if not mixed.is_constant(t.node)}
    for t in gguf.GGUFReader(str(tmp_path / "model.gguf")).tensors:
        if t.tensor_type.name == "Q5_0":
            shape = tuple(int(s) for s in reversed(t.shape))
            got = dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
            want, heads = expected[t.name]
            np.testing.assert_array_equal(unpermute_rope(got, heads) if heads else got, want)
    # GPTQ's objective, the layers' output error on the calibration inputs, is lower than
    # with ggml's round-to-nearest on the same grid
    layers = [la for la in find_layers(program, embeddings=False)
              if "mlp.down_proj" not in la.name and "lm_head" not in la.name]
    hess = {la.input: HessianAccumulator() for la in layers}
    record_values(program, calib, set(hess), lambda n, v: hess[n].update(v))

    nodes = {n.name: n for n in mixed.nodes("call_function")}  # copies keep node names
    gptq = ggml = 0.0
    for la in layers:
        w = program.tensor(la.weight).detach().float()
        dq = nodes[la.node.name].args[1]
        w_gptq = node_params(dq, mixed.tensor).dequantize(mixed.tensor(dq.args[0]))
        w_ggml = torch.from_numpy(dequantize(quantize(w.numpy(), gguf.GGMLQuantizationType.Q5_0),
                                             gguf.GGMLQuantizationType.Q5_0).reshape(w.shape))
        gptq += output_error(w, w_gptq, hess[la.input].h)
        ggml += output_error(w, w_ggml, hess[la.input].h)
    assert gptq < 0.9 * ggml
