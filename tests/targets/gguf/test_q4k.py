"""Q4_K: edgecc's packer against gguf's (llama.cpp's) dequantizer, and int4 weights on the
Q4_K grid (quantize{weight_grid=q4_k}) written by -t gguf bit-exactly and run by llama.cpp."""

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize

from edgecc.gguf_import.layout import unpermute_rope
from edgecc.pass_base import PassContext
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


@pytest.fixture(scope="module")
def llama_256():
    """Rows of 256 (Q4_K) and 320 (down_proj: no Q4_K layout), traced once for the file."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return tiny.trace(LlamaForCausalLM(LlamaConfig(
        vocab_size=tiny.VOCAB, hidden_size=256, intermediate_size=320, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5)).eval())


def test_q4k_grid_weights_are_written_as_q4_k_bit_exactly_and_run_by_llamacpp(tmp_path,
                                                                               llama_256):
    program = llama_256
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


# -- Q4_K's real (asymmetric) grid: 6-bit scales and mins, edgecc.dequantize_offset --------

def test_asymmetric_fit_is_on_the_grid_bounded_and_as_good_as_ggml():
    from edgecc.llm_eval.llamacpp_quant import quantize_rows
    from edgecc.passes.quantize.q4k_grid import fit_q4k

    torch.manual_seed(0)
    w = torch.randn(32, 512) * (1 + torch.rand(32, 1))
    w[:, 7] += 3  # an outlier column: sub-blocks with a large min
    w[0, :256] = 0  # an all-zero super-block
    tq = TensorQuant("int4", "per-group", symmetric=False, group_size=32)
    p = snap_q4k(weight_params(w, tq, 0, 1, scale_dtype=torch.float16), 512, w)
    assert p.offset is not None and torch.all(p.offset <= 0) and torch.all(p.scale > 0)
    scale, offset = fit_q4k(w)
    assert torch.equal(p.scale, scale) and torch.equal(p.offset, offset)
    q = p.quantize(w)
    w_hat = p.dequantize(q)
    # the stated bound: inside [offset, offset + 15 * scale] at most half a step
    s = p.scale.repeat_interleave(32, 1)
    o = p.offset.repeat_interleave(32, 1)
    inside = (w >= o) & (w <= o + 15 * s)
    assert torch.all(((w - w_hat).abs() <= s / 2 * (1 + 1e-6))[inside])
    assert torch.equal(w_hat[0, :256], torch.zeros(256))
    # the scales and mins are fp16 d / dmin times 6-bit codes: Q4_K bytes, decoded by
    # gguf (llama.cpp's reference dequantizer) to the program's values bit for bit
    from edgecc.quant import unpack_int4

    codes = unpack_int4(q, signed=True).numpy() + 8
    raw = q4k.encode_offset(codes, p.scale.numpy(), p.offset.numpy())
    assert raw is not None
    got = dequantize(raw, gguf.GGMLQuantizationType.Q4_K).reshape(32, 512)
    np.testing.assert_array_equal(got, w_hat.numpy())
    # as good as ggml's own Q4_K (make_qkx2_quants) on the same weights (measured 0.0720
    # vs 0.0717 relative error)
    ref = dequantize(quantize_rows(w.numpy(), "Q4_K"), gguf.GGMLQuantizationType.Q4_K)

    def rel(a):
        return float(np.linalg.norm(a.reshape(32, 512) - w.numpy()) / np.linalg.norm(w))

    assert rel(w_hat.numpy()) <= 1.02 * rel(ref)
    assert q4k.encode_offset(codes, p.scale.numpy(), p.offset.numpy() * 1.001) is None


def test_asymmetric_q4k_gptq_is_written_as_q4_k_bit_exactly_and_run_by_llamacpp(tmp_path,
                                                                                 llama_256):
    from edgecc.quant import node_params
    from edgecc.targets.gguf.partition import recognise

    program = llama_256
    calib = [(tiny.token_ids(seed=s),) for s in range(2)]
    q = Quantize()(program.copy(), Quantize.Options(
        scheme="w4a16", group_size=32, weight_dtype="int4", weight_symmetric=False,
        weight_grid="q4_k", algorithm="gptq", exclude=("lm_head", "model.embed_tokens")),
        context=PassContext(calibration=calib))
    assert q.program.op_counts().get("edgecc.dequantize_offset") == 6
    # down_proj reads rows of 320: asymmetric int4 with fp16 scales -> Q4_1, said so
    assert set(q.stats["weight_grid"]["fallback_q4_0"]) == {"model.layers.0.mlp.down_proj"}
    lowered = GgufTarget().lower(q.program, str(tmp_path), GgufOptions())
    assert lowered.report["tensor_types"] == {"F32": 5, "Q4_K": 6, "Q4_1": 1}
    check = lowered.report["llamacpp_check"]
    assert check["kl"] < 1e-3 and check["top1_agreement"] >= 0.9
    expected = {t.name: node_params(t.node, q.program.tensor).dequantize(
        q.program.tensor(t.node.args[0])).numpy() for t in recognise(q.program).tensors
        if not q.program.is_constant(t.node)}
    seen = 0
    for t in gguf.GGUFReader(str(tmp_path / "model.gguf")).tensors:
        if t.tensor_type.name != "Q4_K":
            continue
        shape = tuple(int(s) for s in reversed(t.shape))
        got = dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
        heads = {"attn_q": 4, "attn_k": 2}.get(t.name.split(".")[-2], 0)
        np.testing.assert_array_equal(unpermute_rope(got, heads) if heads else got,
                                      expected[t.name])
        seen += 1
    assert seen == 6
