"""-t gguf: files llama.cpp runs, matching the edgecc program they were written from.

Bounds: F32 files agree with the program's logits within 1e-4 (llama.cpp gives
log-probabilities: logits up to a constant per position; measured ~5e-7 here, 2.6e-5 on
SmolLM2-135M);
quantized files are bit-exact in their weights (decoded with gguf.quants) and, run by
llama.cpp, which also quantizes activations to 8 bits, have a mean KL below 1e-3 nats
(measured ~1e-6 on these tiny models) and change the top-1 token only between near-ties
(program's top-2 gap < 0.05; random tiny models have flat distributions).
"""

import dataclasses

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize

from edgecc.errors import LoweringError
from edgecc.gguf_import.layout import unpermute_rope
from edgecc.passes import Quantize
from edgecc.quant import node_params
from edgecc.targets.gguf import GgufOptions, GgufTarget
from edgecc.targets.gguf.partition import recognise
from edgecc.targets.gguf.runner import LlamaCppRunner, compare
from tests.targets.gguf import tiny

INT4_SYM_G32 = dict(scheme="w4a16", group_size=32, weight_dtype="int4", weight_symmetric=True)
INT4_ASYM_G32 = dict(scheme="w4a16", group_size=32)
INT8_G32 = dict(scheme="w8a16", group_size=32, weight_granularity="per-group",
                scale_dtype="float16")


def lower(program, tmp_path, **options):
    lowered = GgufTarget().lower(program, str(tmp_path), GgufOptions(**options))
    return lowered, str(tmp_path / "model.gguf")


def quantized(program, **options):
    return Quantize()(program.copy(), Quantize.Options(**options)).program


def fields(path):
    reader = gguf.GGUFReader(path)
    return reader, {k: f.contents() for k, f in reader.fields.items()
                    if not k.startswith("tokenizer.ggml.")}


def test_llama_gqa_f32_matches_llamacpp(tmp_path):
    program = tiny.trace(tiny.llama_gqa())
    lowered, path = lower(program, tmp_path)
    check = lowered.report["llamacpp_check"]
    assert check["performed"] and check["max_abs_logit"] < 1e-4
    assert check["max_abs_logprob"] < 1e-4  # a 96-token vocabulary normalises exactly
    assert check["top1_agreement"] == 1.0
    reader, kv = fields(path)
    assert kv["general.architecture"] == "llama"
    assert (kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]) == (4, 2)
    assert kv["llama.rope.freq_base"] == 500000.0 and kv["llama.block_count"] == 2
    assert kv["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    names = {t.name for t in reader.tensors}
    assert "output.weight" in names and len(names) == 3 + 2 * 9
    assert {t.tensor_type.name for t in reader.tensors} == {"F32"}
    # fresh tokens, not the ones the program was traced with
    again = compare(program, path, tiny.token_ids(seed=7)[0])
    assert again["max_abs_logit"] < 1e-4


def test_qwen2_with_biases_and_tied_embeddings_f32_matches_llamacpp(tmp_path):
    program = tiny.trace(tiny.qwen2())
    lowered, path = lower(program, tmp_path)
    assert lowered.report["tied_embeddings"]
    assert lowered.report["llamacpp_check"]["max_abs_logit"] < 1e-4
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert "output.weight" not in names and "blk.1.attn_k.bias" in names


def _edgecc_weight(program, module_path):
    """The float weight the program computes with for a module (dequantized codes)."""
    for node in program.nodes("call_function"):
        if node.meta.get("nn_module_stack") and \
                list(node.meta["nn_module_stack"].values())[-1][0] == module_path \
                and str(node.target) == "aten.linear.default":
            dq = node.args[1]
            return node_params(dq, program.tensor).dequantize(program.tensor(dq.args[0]))
    raise AssertionError(module_path)


@pytest.mark.parametrize("options, kind", [(INT4_SYM_G32, "Q4_0"), (INT8_G32, "Q8_0")],
                         ids=["int4-sym-g32", "int8-g32"])
def test_quantized_weights_are_carried_bit_exactly(tmp_path, options, kind):
    program = quantized(tiny.trace(tiny.llama_gqa()), **options)
    lowered, path = lower(program, tmp_path)
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert {v for k, v in types.items() if not k.endswith("norm.weight")} == {kind}
    checked = 0
    for t in reader.tensors:
        if not t.name.startswith("blk.0.attn") and not t.name.startswith("blk.1.ffn"):
            continue
        if t.name.endswith("norm.weight"):
            continue
        values = dequantize(np.asarray(t.data), t.tensor_type)
        heads = {"attn_q": 4, "attn_k": 2}.get(t.name.split(".")[2], 0)
        if heads:
            values = unpermute_rope(values, heads)
        module = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                  "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                  "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                  "ffn_down": "mlp.down_proj"}[t.name.split(".")[2]]
        ours = _edgecc_weight(program, f"model.layers.{t.name.split('.')[1]}.{module}")
        assert np.array_equal(values, ours.numpy()), t.name
        checked += 1
    assert checked == 7
    assert_close_distribution(lowered.report["llamacpp_check"])


def assert_close_distribution(check):
    assert check["kl"] < 1e-3 and check["top1_flip_margin"] < 0.05, check
    assert check["top1_agreement"] >= 0.75, check


def test_asymmetric_int4_becomes_q4_1_within_the_fp16_rounding_of_the_min(tmp_path):
    program = quantized(tiny.trace(tiny.llama_gqa()), **INT4_ASYM_G32)
    lowered, path = lower(program, tmp_path)
    rounding = lowered.report["max_q4_1_min_rounding"]
    assert 0 < rounding < 1e-3
    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    assert t.tensor_type.name == "Q4_1"
    ours = _edgecc_weight(program, "model.layers.0.mlp.up_proj").numpy()
    err = np.abs(dequantize(np.asarray(t.data), t.tensor_type) - ours).max()
    assert err <= rounding * (1 + 1e-6)
    assert_close_distribution(lowered.report["llamacpp_check"])


def test_carry_quantization_false_writes_the_dequantized_weights_as_f32(tmp_path):
    program = quantized(tiny.trace(tiny.llama_gqa()), **INT4_ASYM_G32)
    lowered, _ = lower(program, tmp_path, carry_quantization=False)
    assert set(lowered.report["tensor_types"]) == {"F32"}
    assert lowered.report["llamacpp_check"]["max_abs_logit"] < 1e-4


def test_hparams_are_read_from_the_graph():
    hp = recognise(tiny.trace(tiny.llama_gqa(theta=123456.0))).hparams
    assert dataclasses.astuple(hp) == (2, 64, 96, 4, 2, 16, tiny.VOCAB, 1e-5, 123456.0, 2048)


@pytest.mark.parametrize("options, message", [
    (dict(scheme="w8a16"), "float32 scales.*scale_dtype=float16"),
    (dict(scheme="w4a16", group_size=16), "groups of 16.*multiple of 32"),
    (dict(scheme="w8a16", weight_dtype="float8_e4m3fn"), "float8_e4m3fn.*Q4_0"),
    (dict(scheme="fp16"), "quantizes an activation.*layer 'model.*weight-only"),
], ids=["fp32-scales", "group-16", "float8-weights", "activations"])
def test_quantization_without_a_gguf_type_is_one_line_naming_the_layer(tmp_path, options,
                                                                         message):
    program = quantized(tiny.trace(tiny.llama_gqa()), **options)
    with pytest.raises(LoweringError, match=message) as info:
        lower(program, tmp_path, check=False)
    assert "layer 'model." in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "model.gguf").exists()


def test_a_model_that_is_not_a_llama_decoder_is_refused(tmp_path):
    import edgecc

    mlp = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8))
    program = edgecc.trace(mlp, (torch.tensor([[1, 2]]),))
    with pytest.raises(LoweringError, match="Llama decoder") as info:
        lower(program, tmp_path)
    assert "\n" not in str(info.value)


def test_runner_returns_log_probabilities(tmp_path):
    program = tiny.trace(tiny.llama_gqa())
    _, path = lower(program, tmp_path, check=False)
    (out,) = LlamaCppRunner(path).run(tiny.token_ids())
    assert out.shape == (1, tiny.SEQ, tiny.VOCAB)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(1, tiny.SEQ), atol=1e-4, rtol=0)


def test_compile_writes_the_file_and_the_llamacpp_check_into_the_manifest(tmp_path):
    import edgecc

    program = tiny.trace(tiny.llama_gqa(tied=True))
    res = edgecc.compile(program, target="gguf",
                         pipeline="quantize{scheme=w4a16,group_size=32,weight_dtype=int4,"
                                  "weight_symmetric=true}",
                         output_dir=str(tmp_path / "o"))
    lowering = res.report["lowering"]
    assert lowering["tensor_types"] == {"Q4_0": 15, "F32": 5}
    assert_close_distribution(lowering["llamacpp_check"])
    assert {a["path"] for a in res.report["artifacts"]} == {"model.gguf", "README.txt"}
    assert "log-probabilities" in res.report["not_verified"][0]
    assert "llama-cli -m model.gguf" in (tmp_path / "o" / "README.txt").read_text()
