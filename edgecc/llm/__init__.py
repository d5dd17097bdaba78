"""Decoder LLMs as edgecc programs: prefill / decode steps over a static KV cache, built
for the TVM targets (host, arm64) and run by a token generator.

    import edgecc.llm as llm
    dec = llm.export_decoder(model_or_gguf, max_seq_len=256)   # DecoderPrograms
    dec = dec.apply("quantize{scheme=w8a16}")                   # passes on the one step program
    dec.program        # the step, T dynamic: (input_ids, input_pos, k_cache, v_cache)
    dec.prefill(32), dec.decode()                               # static Programs
    built = llm.build_decoder(dec, "host", "out/", prefill_len=32)
    gen = built.generator()                                     # or llm.Generator("out/")
    for tok in gen.generate(ids, 16, llm.Sampler(temperature=0.8, top_k=40, seed=0)): ...
    gen.stats.prefill_tokens_per_s, gen.stats.decode_tokens_per_s

``decoder`` (the step program and why the cache is explicit), ``build`` (the bundle),
``runtime`` (numpy + TVM runtime generator, also the arm64 bundle's ``generate.py``),
``gguf_mix`` (llama.cpp's per-tensor Q4_K_M types, with its K-quant fallbacks, for
``-t gguf``: ``mixed, report = llm.quantize_gguf_mix(program, calibration=batches)``).
"""

from edgecc.llm.build import DecoderBuild, build_decoder, load_tokenizer
from edgecc.llm.decoder import (
    DecoderConfig, DecoderPrograms, DecoderStep, PromptTooLongError, export_decoder,
)
from edgecc.llm.gguf_mix import plan_types, quantize_gguf_mix
from edgecc.llm.runtime import GenerationError, Generator, Sampler, Stats

__all__ = ["DecoderBuild", "DecoderConfig", "DecoderPrograms", "DecoderStep",
           "GenerationError", "Generator", "PromptTooLongError", "Sampler", "Stats",
           "build_decoder", "export_decoder", "load_tokenizer", "plan_types",
           "quantize_gguf_mix"]
