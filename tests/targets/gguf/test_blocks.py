"""ggml's block layouts and the RoPE row permutation, against llama.cpp's own gguf package."""

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

from edgecc.gguf_import import blocks
from edgecc.gguf_import.layout import gguf_name, hf_name, permute_rope, unpermute_rope

T = gguf.GGMLQuantizationType


@pytest.mark.parametrize("kind", ["Q8_0", "Q5_0", "Q4_0", "Q4_1"])
def test_unpack_then_pack_is_bit_exact_and_decodes_like_ggml(kind):
    x = np.random.default_rng(0).standard_normal((8, 96)).astype(np.float32)
    raw = quantize(x, T[kind])
    if kind == "Q8_0":
        q, d = blocks.unpack_q8_0(raw)
        back, values = blocks.pack_q8_0(q, d), q * np.repeat(d.astype(np.float32), 32, 1)
    elif kind == "Q5_0":
        q, d = blocks.unpack_q5_0(raw)
        assert q.max() > 15 and q.min() < 16  # the fifth bit is used both ways
        back = blocks.pack_q5_0(q, d)
        values = (q.astype(np.float32) - 16) * np.repeat(d.astype(np.float32), 32, 1)
    elif kind == "Q4_0":
        nib, d = blocks.unpack_q4_0(raw)
        back = blocks.pack_q4_0(nib, d)
        values = (nib.astype(np.float32) - 8) * np.repeat(d.astype(np.float32), 32, 1)
    else:
        nib, d, m = blocks.unpack_q4_1(raw)
        back = blocks.pack_q4_1(nib, d, m)
        values = nib * np.repeat(d.astype(np.float32), 32, 1) + np.repeat(
            m.astype(np.float32), 32, 1)
    assert np.array_equal(back, raw)
    assert np.array_equal(values, dequantize(raw, T[kind]))


def test_rows_that_are_not_whole_blocks_are_refused():
    with pytest.raises(ValueError, match="32-blocks"):
        blocks.pack_q8_0(np.zeros((2, 48), np.int8), np.zeros((2, 2), np.float16))


def test_rope_permutation_pairs_the_halves_and_inverts():
    w = np.arange(2 * 8 * 3).reshape(16, 3)  # 2 heads of size 8, 3 columns
    p = permute_rope(w, 2)
    # head 0: rows 0..3 pair with rows 4..7 -> 0,4,1,5,2,6,3,7
    assert p[:8, 0].tolist() == [0, 12, 3, 15, 6, 18, 9, 21]
    assert np.array_equal(unpermute_rope(p, 2), w)
    bias = np.arange(16.0)
    assert np.array_equal(unpermute_rope(permute_rope(bias, 4), 4), bias)


def test_names_map_both_ways():
    assert gguf_name("model.layers.7.self_attn.k_proj") == "blk.7.attn_k"
    assert gguf_name("model.embed_tokens") == "token_embd"
    assert gguf_name("model.layers.0.mlp.act_fn") is None
    assert hf_name("blk.3.ffn_down") == "model.layers.3.mlp.down_proj"
    assert hf_name("output") == "lm_head"
    assert hf_name("blk.0.attn_qkv") is None


def test_q6_k_pack_unpack_grid_and_ggml_dequantize_are_bit_exact():
    rng = np.random.default_rng(1)
    rows, cols = 3, 512
    q = rng.integers(0, 64, (rows, cols))
    d = rng.normal(0, 1e-3, (rows, 2)).astype(np.float16)
    sc = rng.integers(-128, 128, (rows, 2, 16)).astype(np.int8)
    sc[..., 0] = -128  # as ggml's quantizer leaves the largest sub-scale
    raw = blocks.pack_q6_k(q, d, sc)
    assert raw.shape == (rows, 2 * 210)
    for a, b in zip(blocks.unpack_q6_k(raw), (q, d, sc)):
        np.testing.assert_array_equal(a, b)
    scales = d.astype(np.float32)[..., None] * sc.astype(np.float32)  # per 16, exact
    values = (q - 32).reshape(rows, 2, 16, 16) * scales[..., None]
    np.testing.assert_array_equal(values.reshape(rows, cols),
                                  dequantize(raw, T.Q6_K).reshape(rows, cols))
    gd, gsc = blocks.q6_k_grid(scales.reshape(rows, -1))
    np.testing.assert_array_equal(gd.astype(np.float32)[..., None] * gsc, scales)
    assert blocks.q6_k_grid(scales.reshape(rows, -1) * 1.0001) is None
