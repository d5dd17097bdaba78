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


def test_weight_grid_q4_0_rounds_like_llamacpps_q4_0(tmp_path):
    """quantize{weight_grid=q4_0} (ggml's scale: signed max / -8) written by -t gguf is
    llama.cpp's own Q4_0 of the same weights but for rare ties / fp16 scale roundings
    (ggml quantizes with the fp32 scale, edgecc with the stored fp16 one)."""
    import os

    from edgecc.llm_eval.llamacpp_quant import quantize_gguf
    from edgecc.passes import Quantize
    from edgecc.targets.gguf import GgufOptions, GgufTarget
    from tests.targets.gguf import tiny

    program = tiny.trace(tiny.llama_gqa(tied=True))
    GgufTarget().lower(program, str(tmp_path), GgufOptions(check=False))
    quantize_gguf(str(tmp_path / "model.gguf"), str(tmp_path / "ref.gguf"), "Q4_0")
    q = Quantize()(program.copy(), Quantize.Options(
        scheme="w4a16", group_size=32, weight_dtype="int4", weight_symmetric=True,
        weight_grid="q4_0", exclude=("model.embed_tokens", "lm_head"))).program
    out = tmp_path / "edgecc"
    os.makedirs(out)
    GgufTarget().lower(q, str(out), GgufOptions(check=False))
    ref = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "ref.gguf")).tensors}
    ours = {t.name: (t.tensor_type.name, np.asarray(t.data))
            for t in gguf.GGUFReader(str(out / "model.gguf")).tensors}
    compared = 0
    for name, (kind, data) in ours.items():
        if kind == "Q4_0":
            assert np.mean(data != ref[name]) < 0.005, name
            compared += 1
    assert compared == 14
