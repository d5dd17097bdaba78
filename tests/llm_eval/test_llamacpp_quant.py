"""llama.cpp's quantizer (ggml_quantize_chunk from xllamacpp) and its tensor-type rules."""

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

from edgecc.llm_eval.llamacpp_quant import quantize_rows, tensor_type


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1", "Q5_0"])
def test_legacy_types_equal_gguf_reference_quantizers(kind):
    x = np.random.default_rng(0).normal(size=(4, 256)).astype(np.float32)
    np.testing.assert_array_equal(quantize_rows(x, kind),
                                  quantize(x, gguf.GGMLQuantizationType[kind]))


def test_k_quants_decode_close_to_the_input():
    x = np.random.default_rng(1).normal(size=(4, 512)).astype(np.float32)
    for kind, bound in (("Q4_K", 0.08), ("Q6_K", 0.02)):  # relative L2 error
        y = dequantize(quantize_rows(x, kind), gguf.GGMLQuantizationType[kind]).reshape(x.shape)
        assert np.linalg.norm(y - x) / np.linalg.norm(x) < bound


def test_q4_k_m_types_for_smollm2_shapes():
    # 30 layers, rows of 576 (q/k/v/o/gate/up) and 1536 (down), tied embeddings
    assert tensor_type("token_embd.weight", 576, "Q4_K_M", 30, False) == "Q8_0"
    assert tensor_type("blk.5.attn_q.weight", 576, "Q4_K_M", 30, False) == "Q5_0"
    assert tensor_type("blk.0.attn_v.weight", 576, "Q4_K_M", 30, False) == "Q8_0"
    assert tensor_type("blk.0.ffn_down.weight", 1536, "Q4_K_M", 30, False) == "Q6_K"
    assert tensor_type("blk.4.ffn_down.weight", 1536, "Q4_K_M", 30, False) == "Q4_K"
    assert tensor_type("blk.4.ffn_down.weight", 1536, "Q4_0", 30, False) == "Q4_0"
    assert tensor_type("token_embd.weight", 576, "Q8_0", 30, False) == "Q8_0"
