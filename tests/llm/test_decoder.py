"""Decoder programs with a static KV cache (``edgecc.llm``): the step program against
transformers, its structure (RoPE, GQA, tied embeddings), passes on it, host builds
generating token for token what ``transformers``' ``generate`` does, sampling, bad input.

Tiny random-weight models (2 layers, hidden 64, 4 query / 2 KV heads): a Llama with GQA
and a Qwen2 with q/k/v biases and tied embeddings (``tests/targets/gguf/tiny.py``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import edgecc
import edgecc.llm as llm
from edgecc.errors import EdgeccError, InputSpecError, ModelLoadError, OutputDirError
from tests.llm.conftest import MAX_SEQ, PREFILL, hf_greedy, prompt
from tests.targets.gguf import tiny

pytest.importorskip("transformers")
pytest.importorskip("tvm")


def test_step_program_matches_the_transformers_forward(built):
    model, dec, _ = built
    ids = prompt(11, 0)
    logits, k, v = dec.program.run(*dec.step_inputs(ids[0]))
    with torch.no_grad():
        ref = model(ids, use_cache=True)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=0)
    # the new entries are what transformers' own cache holds, positions 0..10
    assert tuple(k.shape) == (2, 2, 11, 16) and tuple(v.shape) == (2, 2, 11, 16)
    torch.testing.assert_close(k[1], ref.past_key_values.layers[1].keys[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(v[0], ref.past_key_values.layers[0].values[0], atol=1e-5,
                               rtol=0)


def test_host_build_generates_what_transformers_generate_does(built):
    model, _, build = built
    gen = build.generator()
    for length, seed in ((12, 0), (3, 1), (PREFILL, 2), (21, 3)):  # chunked / padded / exact
        ids = prompt(length, seed)
        ours = list(gen.generate(ids[0].tolist(), 16, stop_at_eos=False))
        assert ours == hf_greedy(model, ids, 16), length
    assert gen.stats.generated_tokens == 16 and gen.stats.prompt_tokens == 21
    assert gen.stats.prefill_tokens_per_s > 0 and gen.stats.decode_tokens_per_s > 0
    report = build.report
    assert report["config"]["max_seq_len"] == MAX_SEQ and report["prefill_len"] == PREFILL
    # one library, both phases as its functions (the weights once), each verified
    assert report["library"]["functions"] == ["decode", "prefill"]
    assert os.path.exists(os.path.join(build.output_dir, "model.so"))
    for phase in ("prefill", "decode"):
        assert report["phases"][phase]["function"] == phase
        assert report["phases"][phase]["verification"]["passed"]
        assert not os.path.exists(os.path.join(build.output_dir, phase))


def test_decode_after_prefill_equals_one_long_prefill(built):
    """The two static phases of the same program agree with the dynamic one."""
    _, dec, build = built
    ids = prompt(9, 4)[0]
    full = dec.program.run(*dec.step_inputs(ids))[0][0]
    pre, dcd = build.programs["prefill"], build.programs["decode"]
    k, v = dec.config.empty_cache()
    # stale values beyond the prompt (a padded chunk's) are never attended to
    k[:, :, 8:], v[:, :, 8:] = 7.0, -7.0
    logits, k_new, v_new = pre.run(ids[None, :8], torch.tensor([0]), k, v)
    llm.decoder.write_cache(k, k_new, 0)
    llm.decoder.write_cache(v, v_new, 0)
    last, _, _ = dcd.run(ids[None, 8:], torch.tensor([8]), k, v)
    torch.testing.assert_close(logits[0], full[:8], atol=1e-5, rtol=0)
    torch.testing.assert_close(last[0, 0], full[8], atol=1e-5, rtol=0)
    assert pre.input_specs[0].shape == (1, 8) and dcd.input_specs[0].shape == (1, 1)


def _users(node, name):
    return [u for u in node.users if name in str(u.target)]


def test_rope_gqa_and_tied_embeddings_are_recognisable(llm_root):
    from tests.llm.conftest import host_build

    _, dec, build = host_build("qwen2", llm_root)  # tied, 4 query heads over 2 KV heads
    program = build.programs["decode"]
    counts = program.op_counts()
    assert counts["aten._softmax"] == 2 and counts["aten.matmul"] == 4  # attention a layer
    assert counts["aten.cos"] >= 1 and counts["aten.sin"] >= 1  # RoPE from inv_freq
    # the cache is read, never rewritten whole: no index_put, no GQA expand
    assert counts.get("aten.index_put", 0) == 0 and counts.get("aten.expand", 0) <= 1
    for mm in program.nodes("call_function"):
        if "matmul" in str(mm.target) and "_softmax" not in str(mm.args[0].target):
            q, k = mm.args[0].meta["val"], mm.args[1].meta["val"]
            # GQA: the 2 query heads of each of the 2 KV heads, against the KV head's keys
            assert tuple(q.shape[:3]) == (1, 2, 2) and tuple(k.shape[:3]) == (1, 2, 1)
            assert tuple(k.shape[3:]) == (16, MAX_SEQ + 1)  # every cache slot + the new one
    assert [tuple(s.shape) for s in program.output_specs[1:]] == [(2, 2, 1, 16)] * 2
    assert dec.config.tied_embeddings and dec.config.n_kv_head == 2
    # tied: one weight read by the embedding and by the output projection
    shared = [n for n in program.nodes("get_attr")
              if {"aten.embedding.default", "aten.linear.default"}
              <= {str(u.target) for u in n.users}]
    assert len(shared) == 1 and tuple(program.tensor(shared[0]).shape) == (tiny.VOCAB, 64)
    params = {str(n.target) for n in program.nodes("get_attr")}
    assert "model.layers.1.self_attn.q_proj.bias" in params
    assert dec.config.to_json()["family"] == "Qwen2ForCausalLM"


@pytest.mark.parametrize("algorithm", ["gptq", "awq"])
def test_passes_run_on_the_step_program_and_both_phases_keep_them(algorithm):
    """int4 (g32) GPTQ / AWQ calibrating on token sequences, then constant-fold and dce:
    the quantized step keeps the float model's next-token choices on a held-out prompt
    (bounds: logit cosine >= 0.98, top-1 agreement >= 0.75; random weights, measured GPTQ
    0.987 / 0.83), and prefill / decode carry the
    same quantized weights."""
    model = tiny.llama_gqa()
    dec = llm.export_decoder(model, max_seq_len=MAX_SEQ)
    calibration = dec.calibration([prompt(16, s)[0] for s in range(4)])
    q = dec.apply(f"quantize{{scheme=w4a16,algorithm={algorithm},group_size=32}},"
                  "constant-fold,dce", calibration=calibration)
    assert _all_linears_quantized(q.program)  # 7 per layer and the lm_head
    assert dec.program.op_counts()["edgecc.dequantize"] == 0  # apply returns a new object
    ids = prompt(12, 9)[0]
    ref = dec.program.run(*dec.step_inputs(ids))[0][0]
    got = q.program.run(*dec.step_inputs(ids))[0][0]
    cosine = torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0)
    agree = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
    assert cosine >= 0.98 and agree >= 0.75, (float(cosine), agree)
    if algorithm == "gptq":
        n = q.program.op_counts()["edgecc.dequantize"]
        for phase in (q.prefill(4), q.decode()):
            assert phase.op_counts()["edgecc.dequantize"] == n and _all_linears_quantized(phase)
        assert _all_linears_quantized(dec.apply("quantize{scheme=w8a16}").program)


def _all_linears_quantized(program) -> bool:
    from edgecc.quant import is_dequantize

    linears = [n for n in program.nodes("call_function") if "linear" in str(n.target)]
    return len(linears) == 15 and all(is_dequantize(n.args[1]) for n in linears)


def test_sampler_is_reproducible_and_respects_top_k_and_top_p():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    draws = lambda s: [s.pick(logits, rng) for rng in [s.rng()] for _ in range(400)]  # noqa: E731
    a = draws(llm.Sampler(temperature=1.0, seed=3))
    assert a == draws(llm.Sampler(temperature=1.0, seed=3))  # same seed, same tokens
    assert set(a) == {0, 1, 2, 3}
    assert set(draws(llm.Sampler(temperature=1.0, top_k=2, seed=3))) == {0, 1}
    assert set(draws(llm.Sampler(temperature=1.0, top_p=0.75, seed=3))) == {0, 1}
    assert set(draws(llm.Sampler(temperature=1.0, top_p=0.2, seed=3))) == {0}
    assert draws(llm.Sampler(temperature=0.0)) == [0] * 400
    freq = np.bincount(a, minlength=4) / 400  # the distribution itself (binomial 4 sigma)
    assert np.all(np.abs(freq - np.exp(logits)) < 4 * np.sqrt(0.25 / 400))
    for bad in (dict(temperature=-1), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(llm.GenerationError):
            llm.Sampler(**bad)


def test_sampling_on_the_built_decoder(built):
    _, _, build = built
    gen = build.generator()
    ids = prompt(5, 6)[0].tolist()
    s = llm.Sampler(temperature=0.9, top_k=20, top_p=0.95, seed=11)
    first = list(gen.generate(ids, 12, s, stop_at_eos=False))
    assert first == list(gen.generate(ids, 12, s, stop_at_eos=False))
    assert list(gen.generate(ids, 12, llm.Sampler(temperature=1.0, top_k=1, seed=5),
                             stop_at_eos=False)) == list(gen.generate(ids, 12,
                                                                      stop_at_eos=False))


# -- bad input -----------------------------------------------------------------------------

def test_a_prompt_longer_than_the_cache_is_one_line(built):
    _, dec, build = built
    gen = build.generator()
    with pytest.raises(llm.GenerationError) as info:
        list(gen.generate(list(range(3, 3 + MAX_SEQ - 4)), 8))
    assert "\n" not in str(info.value) and "KV cache of 40" in str(info.value)
    with pytest.raises(llm.GenerationError, match="empty"):
        list(gen.generate([], 4))
    with pytest.raises(llm.PromptTooLongError, match="does not fit the KV cache"):
        dec.step_inputs(list(range(MAX_SEQ + 1)))


def test_bad_models_targets_and_output_dirs_are_one_line(built, tmp_path):
    _, dec, build = built
    with pytest.raises(ModelLoadError, match="supports LlamaForCausalLM"):
        llm.export_decoder(torch.nn.Linear(2, 2))
    with pytest.raises(ModelLoadError, match="reads .gguf"):
        llm.export_decoder(str(tmp_path / "model.onnx"))
    program = edgecc.trace(torch.nn.Linear(2, 2), (torch.randn(1, 2),))
    with pytest.raises(ModelLoadError, match="Program"):
        llm.export_decoder(program)
    with pytest.raises(InputSpecError, match="at least 2"):
        llm.export_decoder(tiny.llama_gqa(), max_seq_len=1)
    with pytest.raises(EdgeccError, match="-t gguf"):
        llm.build_decoder(dec, "gguf", str(tmp_path / "x"))
    with pytest.raises(EdgeccError, match="prefill_len"):
        llm.build_decoder(dec, "host", str(tmp_path / "x"), prefill_len=MAX_SEQ + 1)
    assert not (tmp_path / "x").exists()
    with pytest.raises(OutputDirError, match="not empty"):
        llm.build_decoder(dec, "host", build.output_dir)
    with pytest.raises(llm.GenerationError, match="not a decoder bundle"):
        llm.Generator(str(tmp_path))
