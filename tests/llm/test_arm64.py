"""An arm64 decoder bundle: the cross-compiled decode library and the board-side generator
``generate.py`` (numpy + TVM runtime), run under qemu-aarch64 by ``edgecc generate`` (one
emulator launch): greedy tokens equal ``transformers``' ``generate``. The generator's
schedule and sampler are checked on the host too, driving the host build's library: the
same tokens as ``edgecc.llm.Generator``, greedy and sampled."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

import edgecc.llm as llm
from edgecc.cli import main
from edgecc.llm.runtime import Generator, Sampler
from edgecc.targets.arm import emulation
from tests.llm.conftest import hf_greedy, prompt
from tests.targets.gguf import tiny

pytest.importorskip("tvm")

BOARD = os.path.join(os.path.dirname(__file__), "..", "..", "targets", "arm", "generate.py")


def _board_module():
    spec = importlib.util.spec_from_file_location("board_generate", BOARD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_arm64_bundle_generates_on_the_board_runner_under_qemu(tmp_path, capsys):
    if not emulation.ready():
        pytest.skip(f"no aarch64 emulation: {emulation.why_not_ready()}")
    model = tiny.llama_gqa()
    dec = llm.export_decoder(model, max_seq_len=16)
    # prefill_len=1: the prompt runs through the decode step (one arm64 build; CI time).
    # verify=False: the library is checked by the tokens below (each verification would be
    # one more emulator launch)
    build = llm.build_decoder(dec, "arm64", str(tmp_path / "arm"), prefill_len=1,
                              verify=False)
    for name in ("generate.py", "decoder.json", "decode/model.so", "decode/run_model.py"):
        assert os.path.exists(os.path.join(build.output_dir, name)), name
    assert not os.path.exists(os.path.join(build.output_dir, "prefill"))
    assert build.report["phases"]["prefill"]["dir"] == "decode"
    assert "python3 generate.py" in open(os.path.join(build.output_dir, "README.txt")).read()
    ids = prompt(6, 0)
    argv = ["generate", build.output_dir, "--prompt-ids", ",".join(map(str, ids[0].tolist())),
            "-n", "5", "--ignore-eos"]
    assert main([*argv, "--json"]) == 0  # one qemu launch of generate.py
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["tokens"] == hf_greedy(model, ids, 5) and out["runtime"] == "arm64"
    assert out["decode_tokens_per_s"] > 0 and "not the chip's" in out["emulated"]


def test_the_board_generator_equals_the_host_generator(llama_built):
    """generate.py's prefill chunks, cache writes and sampler, driving the host build's
    library (prefill 8, prompts shorter / longer than a chunk): the tokens of
    ``edgecc.llm.Generator``, greedy and sampled."""
    board = _board_module()
    _, _, build = llama_built
    host = Generator(build.output_dir)

    def adapt(step):  # the host library's function in the board's numpy signature
        def call(ids, pos, k, v):
            out = step.raw(torch.from_numpy(ids), torch.tensor([pos], dtype=torch.int64),
                           torch.from_numpy(k), torch.from_numpy(v))
            return tuple(t.numpy() for t in out)
        return call

    gen = board.BoardGenerator(host.config, host.prefill_len, adapt(host.prefill_step),
                               adapt(host.decode_step))
    for length, options in ((5, {}), (19, {}),
                            (11, dict(temperature=0.9, top_k=20, top_p=0.9, seed=4)),
                            (6, dict(temperature=1.3, top_p=0.8, seed=7))):
        ids = prompt(length, length)[0].tolist()
        ours = list(gen.generate(ids, 9, board.Sampler(**options), stop_at_eos=False))
        ref = list(host.generate(ids, 9, Sampler(**options), stop_at_eos=False))
        assert ours == ref, (length, options)
    assert gen.speed()["generated_tokens"] == 9 and gen.speed()["decode_tokens_per_s"] > 0
    with pytest.raises(ValueError, match="does not fit the KV cache"):
        list(gen.generate([1] * 30, 20))
    with pytest.raises(ValueError, match="top_p"):
        board.Sampler(temperature=1.0, top_p=0.0)


def test_the_board_sampler_draws_as_the_hosts():
    board = _board_module()
    logits = np.random.default_rng(0).normal(size=(64,)).astype(np.float32) * 3
    for options in (dict(), dict(temperature=0.7, seed=1), dict(temperature=1.0, top_k=5,
                                                                  seed=2),
                    dict(temperature=2.0, top_p=0.5, seed=3)):
        a, b = board.Sampler(**options), Sampler(**options)
        ra, rb = a.rng(), b.rng()
        assert [a.pick(logits, ra) for _ in range(20)] == [b.pick(logits, rb)
                                                         for _ in range(20)]
