"""Q4_K: edgecc's packer against gguf's (llama.cpp's) dequantizer, and int4 weights on the
Q4_K grid (quantize{weight_grid=q4_k}) written by -t gguf bit-exactly and run by llama.cpp."""

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize

from edgecc.gguf_import.layout import unpermute_rope
from edgecc.passes import Quantize
from edgecc.passes.quantize.q4k_grid import snap_q4k
from edgecc.passes.quantize.weights import weight_params
from edgecc.passes.quantize.scheme import TensorQuant
from edgecc.targets.gguf import GgufOptions, GgufTarget
from edgecc.targets.gguf import q4k
from tests.targets.gguf import tiny


def test_pack_unpack_and_ggml_dequantize_are_bit_exact():
    rng = np.random.default_rng(0)
    rows, cols = 3, 512
    q = rng.integers(0, 16, (rows, cols))
    d = rng.normal(0, 1e-3, (rows, 2)).astype(np.float16)
    dmin = np.abs(rng.normal(0, 1e-3, (rows, 2))).astype(np.float16)
    sc, m = rng.integers(0, 64, (rows, 2, 8)), rng.integers(0, 64, (rows, 2, 8))
    raw = q4k.pack_q4_k(q, d, dmin, sc, m)
    assert raw.shape == (rows, 2 * 144)
    back = q4k.unpack_q4_k(raw)
    for a, b in zip(back, (q, d, dmin, sc, m)):
        np.testing.assert_array_equal(a, b)
    ours = q4k.dequantize_q4_k(raw)
    theirs = dequantize(raw, gguf.GGMLQuantizationType.Q4_K).reshape(rows, cols)
    np.testing.assert_array_equal(ours, theirs)


def test_snapped_scales_are_found_on_the_grid_and_moved_by_at_most_half_a_step():
    w = torch.randn(8, 512)
    tq = TensorQuant("int4", "per-group", symmetric=True, group_size=32)
    p = weight_params(w, tq, 0, 1, scale_dtype=torch.float16)
    snapped = snap_q4k(p, 512)
    s0, s1 = p.scale.float().reshape(8, 2, 8), snapped.scale.reshape(8, 2, 8)
    assert torch.all((s1 - s0).abs() <= s0.amax(-1, keepdim=True) / 126 * 1.01)
    d, sc = q4k.grid_of(snapped.scale.numpy())
    np.testing.assert_array_equal(d[..., None] * sc, s1.numpy())
    assert q4k.grid_of(p.scale.float().numpy() * 1.0001) is None  # off the grid
    assert snap_q4k(p, 480) is None  # not a multiple of 256


def _llama_256():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=tiny.VOCAB, hidden_size=256, intermediate_size=320, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5)).eval()


def test_q4k_grid_weights_are_written_as_q4_k_bit_exactly_and_run_by_llamacpp(tmp_path):
    program = tiny.trace(_llama_256())
    q = Quantize()(program.copy(), Quantize.Options(
        scheme="w4a16", group_size=32, weight_dtype="int4", weight_symmetric=True,
        weight_grid="q4_k", exclude=("lm_head", "model.embed_tokens")))
    # down_proj reads rows of 320: no Q4_K layout, kept at Q4_0 and said so
    assert set(q.stats["weight_grid"]["fallback_q4_0"]) == {"model.layers.0.mlp.down_proj"}
    lowered = GgufTarget().lower(q.program, str(tmp_path), GgufOptions())
    assert lowered.report["tensor_types"] == {"F32": 5, "Q4_K": 6, "Q4_0": 1}
    check = lowered.report["llamacpp_check"]
    assert check["kl"] < 1e-3 and check["top1_agreement"] >= 0.9
    reader = gguf.GGUFReader(str(tmp_path / "model.gguf"))
    from edgecc.quant import node_params
    from edgecc.targets.gguf.partition import recognise

    expected = {t.name: node_params(t.node, q.program.tensor).dequantize(
        q.program.tensor(t.node.args[0])).numpy() for t in recognise(q.program).tensors
        if not q.program.is_constant(t.node)}
    for t in reader.tensors:
        if t.tensor_type.name != "Q4_K":
            continue
        shape = tuple(int(s) for s in reversed(t.shape))
        got = dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
        heads = {"attn_q": 4, "attn_k": 2}.get(t.name.split(".")[-2], 0)
        if heads:
            got = unpermute_rope(got, heads)
        np.testing.assert_array_equal(got, expected[t.name])
